"""The training consumer on a real tansu broker, a local artifact store and the real trainer (tiny data, 2 epochs)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from consumers.training.events import registered_event_id
from infra.kafka import EventProducer
from infra.kafka import topics as T
from infra.storage.base import sha256_file
from infra.storage.factory import store_from_settings
from schemas.events import new_header

pytestmark = pytest.mark.stack

TIMING = {"train_evaluate_s", "epoch_s", "train_s", "samples_per_s"}


def statuses(events, run_id=None):
    return [(e["status"], e["epoch"]) for e in events if run_id is None or e["run_id"] == run_id]


def test_dataset_created_trains_and_registers_with_lineage(train_settings, sdk, training_consumer, tail,
                                                          churn_data):
    runs, models = tail(train_settings, T.TRAINING_RUNS), tail(train_settings, T.MODELS_REGISTERED)
    # the dataset's tag carries its training spec, laid over the consumer's default spec (2 epochs)
    pushed = sdk.push_dataset(churn_data(), name="churn", label="churned", slice_by=["region"],
                              tags={"training_spec": json.dumps({"epochs": 3, "hidden_sizes": [8]})})

    with training_consumer(train_settings):
        registered = models.wait(lambda ev: len(ev) >= 1, what="ModelRegistered")[0]
        updates = runs.wait(lambda ev: any(e["status"] == "finished" for e in ev), what="finished update")

    run_id = registered["run_id"]
    assert statuses(updates, run_id) == [("started", None), ("epoch", 1), ("epoch", 2), ("epoch", 3),
                                         ("finished", None)]
    assert {e["attempt"] for e in updates} == {1}
    finished = updates[-1]
    # lineage: every event of the run points back at the DatasetCreated that caused it
    for ev in [*updates, registered]:
        assert ev["header"]["parent_event_ids"] == [pushed.event_id]
        assert ev["header"]["correlation_id"] == pushed.event_id
        assert ev["header"]["producer"] == "consumers.training"
    assert str(registered["header"]["event_id"]) == registered_event_id(run_id)   # uuid5 of the run id
    assert (registered["model_name"], registered["model_version"]) == ("churn", 1)
    assert (registered["dataset_name"], registered["dataset_version"]) == ("churn", pushed.version)
    assert registered["task"] == "binary" and registered["primary_metric"] == "roc_auc"
    assert registered["labels"] == ["no", "yes"] and set(registered["baseline_metrics"]) >= {"majority"}
    assert {s["column"] for s in registered["slice_metrics"]} == {"region"}
    assert any(s["name"] == "__prediction__" for s in registered["reference_stats"])
    assert json.loads(registered["signature_json"])["model_version"] == 1
    params = json.loads(registered["params_json"])
    assert (params["epochs"], params["hidden_sizes"], params["batch_size"]) == (3, [8], 64)
    # the artifact is in the store, under models/<name>/<version>/, and matches the event's checksum
    store = store_from_settings(train_settings)
    key = store.key_from_uri(registered["artifact_uri"])
    assert key == "models/churn/1"
    assert sha256_file(store.local_path(f"{key}/model.pt")) == registered["checksum"]
    assert store.exists(f"{key}/report/report.md") and registered["report_uri"].endswith("models/churn/1/report")
    # the finished update carries final and baseline metrics, and where everything is
    m = finished["metrics"]
    assert {"test_roc_auc", "baseline_majority_roc_auc", "best_val_loss"} <= set(m)
    assert m["test_roc_auc"] == registered["metrics"]["roc_auc"]
    assert finished["artifact_uris"]["artifact"] == registered["artifact_uri"]
    assert store.exists(store.key_from_uri(finished["artifact_uris"]["checkpoint"]))
    assert finished["environment"]["torch"] and finished["code_version"]
    # the run is DONE with its model, and its lease released
    done = json.loads(store.get_bytes(f"runs/{run_id}/DONE"))
    assert (done["model_name"], done["model_version"]) == ("churn", 1)
    assert json.loads(store.get_bytes(f"runs/{run_id}/lease.json"))["released"] is True


def _republish(settings, logical_topic: str, event_type: str, value: dict, key: str) -> None:
    p = EventProducer(settings, name="tests")
    p.publish(settings.topic(logical_topic), event_type, value, key=key)
    p.close()


def test_redelivered_and_replayed_events_register_exactly_one_model_per_run(train_settings, sdk, training_consumer,
                                                                            tail, churn_data):
    runs, models = tail(train_settings, T.TRAINING_RUNS), tail(train_settings, T.MODELS_REGISTERED)
    created = tail(train_settings, T.DATASETS_CREATED)
    sdk.push_dataset(churn_data(), name="churn", label="churned")
    dataset_event = created.wait(lambda ev: len(ev) == 1, what="DatasetCreated")[0]
    _republish(train_settings, T.DATASETS_CREATED, "DatasetCreated", dataset_event, "churn")   # same event again
    request_id = sdk.request_training("churn", spec={"epochs": 3})                            # another spec
    requests = tail(train_settings, T.TRAINING_REQUESTED)
    request = requests.wait(lambda ev: len(ev) == 1, what="TrainingRequested")[0]
    _republish(train_settings, T.TRAINING_REQUESTED, "TrainingRequested", request, "churn")

    with training_consumer(train_settings) as consumer:
        runs.wait(lambda ev: consumer.runner.handled == 4, what="the consumer to handle all 4 events")
        assert consumer.stats.processed == 2 and consumer.stats.skipped == 2
    with training_consumer(train_settings, group="replay") as replay:   # a new group replays both topics
        runs.wait(lambda ev: replay.runner.handled == 4 and len(ev) == 12, what="the replay to handle all 4 events")
        assert replay.stats.skipped == 4

    registered = models.poll(1.0)
    assert sorted((m["model_name"], m["model_version"]) for m in registered) == [("churn", 1), ("churn", 2)]
    assert len({m["run_id"] for m in registered}) == 2
    by_request = [e for e in runs.events if e["request_id"] == request_id]
    # duplicates and replays of the request are answered with the run's finished update (same event id each
    # time, so consumers of the topic can drop the copies), never with a second run or model
    assert [e["status"] for e in by_request][:5] == ["started", "epoch", "epoch", "epoch", "finished"]
    assert {e["status"] for e in by_request[5:]} == {"finished"} and len(by_request) == 8
    assert len({e["header"]["event_id"] for e in by_request if e["status"] == "finished"}) == 1
    assert sum(e["status"] == "started" for e in runs.events) == 2

    # a consumer that died after sending ModelRegistered but before writing DONE: the next one re-sends the
    # stored outcome (same event ids, same version) instead of training again or registering a new version
    store = store_from_settings(train_settings)
    first = next(m for m in registered if m["model_version"] == 1)
    store.local_path(f"runs/{first['run_id']}/DONE").unlink()
    with training_consumer(train_settings, group="after-crash") as again:
        models.wait(lambda ev: len(ev) == 3, what="the re-sent ModelRegistered")
        assert again.stats.processed == 1
    resent = models.events[2]
    assert resent["header"]["event_id"] == first["header"]["event_id"] and resent["model_version"] == 1
    assert sum(e["status"] == "started" for e in runs.poll()) == 2   # nothing was trained again
    assert store.exists(f"runs/{first['run_id']}/DONE")


def _event(**fields) -> dict:
    value = {"header": new_header("tests"), "request_id": str(uuid.uuid4()), "dataset_name": "churn",
             "dataset_version": None, "model_name": None, "spec_json": "{}", "search_space_json": None,
             "n_trials": 0, "search_id": None, "trial_number": None, "reason": "manual"}
    value.update(fields)
    return value


def test_unusable_data_and_bad_requests_fail_the_run_and_the_consumer_goes_on(train_settings, sdk,
                                                                               training_consumer, tail, churn_data):
    runs, models = tail(train_settings, T.TRAINING_RUNS), tail(train_settings, T.MODELS_REGISTERED)
    rng = np.random.default_rng(1)
    y = rng.choice(["yes", "no"], 200)
    sdk.push_dataset(pd.DataFrame({"noise": rng.normal(size=200), "copy": y, "churned": y}), name="leaky",
                     label="churned")
    sdk.push_dataset(pd.DataFrame({"a": np.ones(200), "b": ["x"] * 200, "churned": y}), name="flat",
                     label="churned")
    sdk.push_dataset(churn_data(), name="churn", label="churned")
    p = EventProducer(train_settings, name="tests")
    topic = train_settings.topic(T.TRAINING_REQUESTED)
    p.send(topic, "TrainingRequested", _event(dataset_name="ghost"), key="ghost")
    p.send(topic, "TrainingRequested", _event(spec_json='{"epochz": 3}'), key="churn")
    p.send(topic, "TrainingRequested", _event(spec_json='{"epochs": 1}', n_trials=3,
                                              search_space_json='{"lr": {"type": "float", "low": 0.001, "high": 0.1}}'),
           key="churn")   # a search: the coordinator's job, not this consumer's
    p.flush()

    with training_consumer(train_settings) as consumer:
        models.wait(lambda ev: len(ev) == 1, what="the good dataset's model")
        runs.wait(lambda ev: sum(e["status"] == "failed" for e in ev) == 4, what="4 failed updates")
        assert consumer.error is None and consumer.stats.dead_lettered == 0 and consumer.stats.skipped == 1

    failed = {e["dataset_name"] + (" spec" if "epochz" in (e["failure_reason"] or "") else ""): e["failure_reason"]
              for e in runs.events if e["status"] == "failed"}
    assert "label leakage" in failed["leaky"] and "'copy'" in failed["leaky"]
    assert "every feature is constant" in failed["flat"]
    assert "no dataset named 'ghost'" in failed["ghost"]
    assert "epochz" in failed["churn spec"]
    assert models.events[0]["dataset_name"] == "churn"
    assert all(e["search_id"] is None for e in runs.events)


def test_same_spec_and_seed_reproduce_metrics_even_from_a_corrupt_checkpoint(train_settings, sdk, training_consumer,
                                                                            tail, tmp_path, churn_data):
    from consumers.training.jobs import resolve_spec
    from producers.datasets import push_dataset
    from trainer.checkpoint import load_checkpoint
    from trainer.spec import DatasetInfo, make_run_id

    runs = tail(train_settings, T.TRAINING_RUNS)
    pushed = sdk.push_dataset(churn_data(seed=3), name="churn", label="churned", slice_by=["region"])
    # a second deployment (own store, own group) holds the same dataset and a garbage checkpoint for this very run
    other = train_settings.with_overrides(artifacts={"root": str(tmp_path / "other-artifacts")},
                                          training={"checkpoint_dir": str(tmp_path / "other-ckpt")})
    store2 = store_from_settings(other)
    push_dataset(churn_data(seed=3), {"name": "churn", "label": "churned", "slice_by": ["region"]}, store=store2,
                 publisher=None, topic="unused")
    meta = sdk.datasets.get(f"churn@{pushed.version}").metadata
    run_id = make_run_id(DatasetInfo.from_event(meta), resolve_spec(train_settings, meta["tags"], None))
    store2.put_bytes(f"runs/{run_id}/checkpoint.pt", b"PK\x03\x04 definitely not a checkpoint")

    # one after the other: a process trains one run at a time (torch's global RNG drives dropout)
    for settings, group, n in ((train_settings, "deployment-a", 1), (other, "deployment-b", 2)):
        with training_consumer(settings, group=group):
            runs.wait(lambda ev, n=n: sum(e["status"] == "finished" and e["run_id"] == run_id for e in ev) == n,
                      what=f"{group} to finish the run")

    finished = [e for e in runs.events if e["status"] == "finished"]
    a, b = ({k: v for k, v in e["metrics"].items() if k not in TIMING} for e in finished)
    assert a == b and a["test_roc_auc"] > 0 and a["resumed_from_epoch"] == 0
    epochs = [e for e in runs.events if e["status"] == "epoch"]
    notes = [json.loads(e["params_json"]).get("checkpoint_error", "") for e in epochs]
    assert notes[:2] == ["", ""]                                        # deployment A: nothing to report
    assert all("unreadable" in n and "restarts from scratch" in n for n in notes[2:]) and len(notes) == 4
    assert "restarts from scratch" in " ".join(json.loads(finished[1]["params_json"])["warnings"])
    assert load_checkpoint(store2.local_path(f"runs/{run_id}/checkpoint.pt"))["epoch"] == 2   # replaced for good


@pytest.mark.slow
def test_consumer_killed_mid_run_is_taken_over_with_attempt_2_from_its_checkpoint(train_settings, sdk,
                                                                                   training_consumer, tail,
                                                                                   churn_data):
    import os
    import signal
    import subprocess
    import sys

    from infra.app.stack.triton import settings_env

    s = train_settings.with_overrides(training={"default_spec": {
        **train_settings.training.default_spec, "epochs": 12, "batch_size": 16, "hidden_sizes": [64, 64],
        "early_stopping_patience": None}})
    runs, models = tail(s, T.TRAINING_RUNS), tail(s, T.MODELS_REGISTERED)
    sdk.push_dataset(churn_data(n=3000, seed=5), name="churn", label="churned")
    env = {**os.environ, **settings_env(s), "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([sys.executable, "-m", "consumers.training"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        runs.wait(lambda ev: any(e["status"] == "epoch" for e in ev), timeout=90, what="the first epoch")
    finally:
        victim.send_signal(signal.SIGKILL)   # no goodbye: lease, checkpoint and uncommitted offset stay behind
        victim.wait(30)
    killed_at = max(e["epoch"] for e in runs.poll() if e["status"] == "epoch")
    assert killed_at < 12, "the first consumer finished before it could be killed; make the run longer"

    with training_consumer(s):
        registered = models.wait(lambda ev: len(ev) >= 1, timeout=90, what="ModelRegistered")
        runs.wait(lambda ev: any(e["status"] == "finished" for e in ev), what="finished update")
        models.poll(2.0)   # anything duplicated would arrive now

    assert len(models.events) == 1 and registered[0]["model_version"] == 1
    finished = [e for e in runs.events if e["status"] == "finished"]
    assert len(finished) == 1 and finished[0]["attempt"] == 2
    resumed = int(finished[0]["metrics"]["resumed_from_epoch"])
    assert 1 <= resumed <= 12
    second = [e["epoch"] for e in runs.events if e["status"] == "epoch" and e["attempt"] == 2]
    assert second == list(range(resumed + 1, 13))   # epochs done before the kill are not trained again
    started = [json.loads(e["params_json"]) for e in runs.events if e["status"] == "started"]
    assert [p["attempt"] for p in started] == [1, 2] and started[1]["previous_owner"]


def test_unexpected_errors_are_reported_retried_and_finally_dead_lettered(train_settings, sdk, training_consumer,
                                                                          tail, tmp_path, churn_data):
    from confluent_kafka import Consumer

    from infra.kafka.config import consumer_config
    from infra.kafka.dlq import H_REASON

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the checkpoint directory should be")   # every attempt fails, unexpectedly
    s = train_settings.with_overrides(training={"checkpoint_dir": str(blocker)})
    runs = tail(s, T.TRAINING_RUNS)
    pushed = sdk.push_dataset(churn_data(), name="churn", label="churned")

    with training_consumer(s) as consumer:
        runs.wait(lambda ev: sum(e["status"] == "failed" for e in ev) == 3, what="3 failed attempts")
        assert consumer.stats.retries == 2

    failed = [e for e in runs.events if e["status"] == "failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert [e["final"] for e in failed] == [False, False, True]   # the schema says which failure is the last
    assert failed[2]["failure_reason"].startswith("gave up after 3 attempt(s)")
    assert all(e["header"]["parent_event_ids"] == [pushed.event_id] for e in runs.events)
    reader = Consumer(consumer_config(s.kafka, f"dlq-{uuid.uuid4().hex[:6]}"))
    reader.subscribe([T.dlq_name(s.topic(T.DATASETS_CREATED))])
    dead = []
    for _ in range(40):
        dead += [m for m in reader.consume(10, 0.5) if m.error() is None]
        if dead:
            break
    reader.close()
    assert len(dead) == 1 and dict(dead[0].headers())[H_REASON] == b"retries-exhausted"


def test_dataset_created_written_by_the_apache_avro_library_is_trained_on(train_settings, training_consumer, tail,
                                                                         churn_data):
    """An upstream app that follows the Avro spec, not ModelBus's code: the event's bytes come from the Apache
    library's binary encoder, framed by hand (C3 01 + its own little-endian fingerprint), sent by a plain
    Kafka producer with no headers. The record's field values come from a real push into the store; a
    capturing publisher stands in for the SDK's so that ModelBus never encodes it."""
    from confluent_kafka import Producer

    from infra.kafka.config import producer_config
    from producers.datasets import push_dataset
    from tests.event_samples import apache_single_object

    class Capture:
        def publish(self, topic, event_type, value, key=None):
            self.value = value

    captured = Capture()
    push_dataset(churn_data(), {"name": "churn", "label": "churned", "slice_by": ["region"]},
                 store=store_from_settings(train_settings), publisher=captured, topic="unused", producer="upstream")
    record = captured.value
    p = Producer(producer_config(train_settings.kafka))
    p.produce(train_settings.topic(T.DATASETS_CREATED), apache_single_object("DatasetCreated", record), b"churn")
    assert p.flush(15) == 0

    models = tail(train_settings, T.MODELS_REGISTERED)
    with training_consumer(train_settings) as consumer:
        registered = models.wait(lambda ev: len(ev) >= 1, what="ModelRegistered")[0]
    assert consumer.runner.stats.dead_lettered == 0
    assert (registered["dataset_name"], registered["dataset_version"]) == ("churn", record["version"])
    assert registered["header"]["parent_event_ids"] == [record["header"]["event_id"]]
