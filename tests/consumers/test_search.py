"""The search coordinator as a real faust worker subprocess on the session's tansu broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from consumers import search_state as S
from infra.app.stack.triton import settings_env
from infra.kafka import EventProducer
from infra.kafka import topics as T
from infra.storage.factory import store_from_settings
from producers.datasets import push_dataset
from schemas.events import child_header

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SPACE = {"params": {"lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
                    "hidden_sizes": [[8], [16, 8]]},
         "parallelism": 3}


@pytest.fixture
def search_settings(train_settings, tmp_path):
    """Training settings plus a private data dir (the faust app keeps its files there)."""
    return train_settings.with_overrides(stack={"data_dir": str(tmp_path / "data")})


@pytest.fixture
def coordinator(search_settings):
    """``start()`` launches ``python -m consumers.search``; every process is stopped at the end."""
    procs = []
    env = {**os.environ, **settings_env(search_settings), "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}

    def start():
        p = subprocess.Popen([sys.executable, "-m", "consumers.search", "--log-level", "warning"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _dataset(settings, frame):
    """The dataset is in the store but never announced, so only the search trains on it."""
    return push_dataset(frame, {"name": "churn", "label": "churned"}, store=store_from_settings(settings),
                        publisher=None, topic="unused")


def test_search_fans_out_trials_and_registers_only_the_best(search_settings, coordinator, training_consumer, tail,
                                                           churn_data, tmp_path, monkeypatch, capsys, read_topic):
    """Through ``modelbus train --search --trials --wait``, as a user would run it."""
    from infra.app.cli.errors import run_cli
    from infra.app.cli.main import app

    s = search_settings
    requests, runs = tail(s, T.TRAINING_REQUESTED), tail(s, T.TRAINING_RUNS)
    models = tail(s, T.MODELS_REGISTERED)
    _dataset(s, churn_data())
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    for key, value in {**settings_env(s), "COLUMNS": "200"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["modelbus", "train", "churn", "--epochs", "2", "--seed", "7", "--search",
                                      str(tmp_path / "space.json"), "--trials", "3", "--wait", "--timeout", "240"])
    coordinator()
    with training_consumer(s):
        code = run_cli(app)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("finished val_loss=") == 3 and "best trial #" in out and "registered churn v1" in out
    # The topic has several partitions: the user's request may be fetched after the trials it fanned out to.
    requests.wait(lambda ev: any(r["n_trials"] == 3 for r in ev), what="the user's search request")
    user_request = next(r for r in requests.events if r["n_trials"] == 3)
    sid = S.search_id_for(user_request["request_id"])
    models.wait(lambda ev: len(ev) == 1, what="the search's one ModelRegistered")
    runs.wait(lambda ev: any(e["request_id"] == S.final_request_id(sid) and e["status"] == "finished"
                             for e in ev), what="the final run's finished update")
    models.poll(1.0)

    requests.wait(lambda ev: sum(r["reason"] in ("search-trial", "search-best") for r in ev) == 4, what="4 requests")
    trials = [r for r in requests.events if r["reason"] == "search-trial"]
    assert sorted(r["trial_number"] for r in trials) == [0, 1, 2] and {r["search_id"] for r in trials} == {sid}
    specs = [json.loads(r["spec_json"]) for r in trials]
    assert all(sp["register_model"] is False and sp["epochs"] == 2 and sp["seed"] == 7 for sp in specs)
    assert len({(sp["lr"], tuple(sp["hidden_sizes"])) for sp in specs}) == 3
    assert all(r["header"]["correlation_id"] == user_request["header"]["correlation_id"] for r in trials)
    trial_runs = {e["trial_number"]: e for e in runs.events if e["status"] == "finished" and e["search_id"] == sid
                  and e["trial_number"] is not None and e["header"]["producer"] == "consumers.training"}
    assert sorted(trial_runs) == [0, 1, 2]

    summary = next(e for e in runs.events if e["run_id"] == f"search-{sid}")
    assert summary["status"] == "finished" and summary["metrics"]["n_complete"] == 3
    best = min(trial_runs.values(), key=lambda e: e["metrics"]["best_val_loss"])
    assert summary["trial_number"] == best["trial_number"]
    assert summary["metrics"]["best_best_val_loss"] == best["metrics"]["best_val_loss"]
    best_params = json.loads(summary["params_json"])["best_params"]
    final = next(r for r in requests.events if r["reason"] == "search-best")
    assert {k: json.loads(final["spec_json"])[k] for k in best_params} == best_params
    assert "register_model" not in json.loads(final["spec_json"])

    (registered,) = models.events   # trials never register; only the final run does
    final_run = next(e for e in runs.events if e["request_id"] == final["request_id"] and e["status"] == "finished")
    assert registered["run_id"] == final_run["run_id"] != best["run_id"]
    assert {k: json.loads(registered["params_json"])[k] for k in best_params} == best_params
    # the final run repeats the best trial (same data, params and seed): same validation result
    assert final_run["metrics"]["best_val_loss"] == best["metrics"]["best_val_loss"]

    # the coordinator's re-keyed copies on its inbox are CloudEvents like everything else ModelBus writes
    from infra.kafka.topics import SEARCH_INBOX
    from schemas import AvroCodec

    inbox = read_topic(s, s.topic(SEARCH_INBOX), 4)
    assert len(inbox) >= 4
    for m in inbox:
        h, d = dict(m.headers()), AvroCodec().decode(m.value())
        assert h["ce_id"] == str(d.value["header"]["event_id"]).encode()
        assert h["ce_type"] == f"modelbus.events.{d.event_type}".encode() and h["ce_specversion"] == b"1.0"


def _result(request: dict, status: str, value: float | None = None) -> dict:
    """What a training consumer publishes for a trial (the test plays the trainers here, to decide the outcome
    of each trial and when the coordinator restarts; the real consumers are exercised in the test above)."""
    return {"header": child_header("consumers.training", request), "run_id": f"run-{request['trial_number']}",
            "attempt": 1, "status": status, "dataset_name": "churn", "dataset_version": request["dataset_version"],
            "model_name": "churn", "epoch": None,
            "metrics": {"best_val_loss": value} if value is not None else {}, "params_json": "{}", "seed": 0,
            "code_version": "", "environment": {}, "duration_s": 1.0, "artifact_uris": {},
            "failure_reason": "too few rows per class" if status == "failed" else None,
            "search_id": request["search_id"], "trial_number": request["trial_number"],
            "request_id": request["request_id"]}


def test_failed_trial_does_not_fail_the_search_and_state_survives_a_restart(search_settings, sdk, coordinator,
                                                                              tail, churn_data):
    s = search_settings
    requests, runs = tail(s, T.TRAINING_REQUESTED), tail(s, T.TRAINING_RUNS)
    producer = EventProducer(s, name="tests")
    publish = lambda v: producer.publish(s.topic(T.TRAINING_RUNS), "TrainingRunUpdated", v, key=v["run_id"])  # noqa
    _dataset(s, churn_data())
    bad_id = sdk.request_training("churn", search_space={"bogus": [1, 2]}, n_trials=2)
    request_id = sdk.request_training("churn", spec={"epochs": 2}, search_space={**SPACE, "parallelism": 1},
                                      n_trials=3)
    sid = S.search_id_for(request_id)
    trial = lambda n: lambda ev: any(e["search_id"] == sid and e["trial_number"] == n for e in ev)  # noqa: E731

    first = coordinator()
    requests.wait(trial(0), timeout=90, what="trial 0")
    assert sum(e["reason"] == "search-trial" for e in requests.events) == 1     # parallelism 1: one at a time
    publish(_result(requests.events[-1], "failed"))
    requests.wait(trial(1), what="trial 1 after trial 0 failed")
    first.send_signal(signal.SIGKILL)   # no goodbye: whatever was not yet in the changelog is replayed
    assert first.wait(60) is not None

    second = coordinator()   # a fresh process: the table comes back from its changelog
    publish(_result(requests.events[-1], "finished", 0.7))
    requests.wait(trial(2), timeout=90, what="trial 2 from the restarted coordinator")
    publish(_result(requests.events[-1], "finished", 0.6))
    runs.wait(lambda ev: any(e["run_id"] == f"search-{sid}" for e in ev), what="the search summary")
    requests.wait(lambda ev: any(e["reason"] == "search-best" for e in ev), what="the final request")
    assert second.poll() is None

    summary = next(e for e in runs.events if e["run_id"] == f"search-{sid}")
    assert summary["status"] == "finished" and summary["trial_number"] == 2
    assert (summary["metrics"]["n_complete"], summary["metrics"]["n_failed"]) == (2, 1)
    told = json.loads(summary["params_json"])["trials"]
    assert told["0"]["state"] == "fail" and "too few rows" in told["0"]["reason"]
    trials = [e for e in requests.events if e["search_id"] == sid and e["reason"] == "search-trial"]
    # a replayed event may re-send a trial request, but always as the same event with the same parameters
    by_number = {}
    for t in trials:
        by_number.setdefault(t["trial_number"], set()).add((str(t["header"]["event_id"]), t["spec_json"]))
    assert sorted(by_number) == [0, 1, 2] and all(len(v) == 1 for v in by_number.values())
    refused = next(e for e in runs.events if e["run_id"] == f"search-{S.search_id_for(bad_id)}")
    assert refused["status"] == "failed" and "cannot search over 'bogus'" in refused["failure_reason"]
