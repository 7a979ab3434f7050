"""One seeded platform history for the UI tests: real tables on the embedded ClickHouse, real dead letters on
the session's broker, and the UI server on loopback.

The rows go in through the metadata sink's own writer (``write_events``) and the telemetry sink's Arrow path,
from events encoded and decoded by the codec, so the UI reads exactly what the loop would have written.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from consumers.outcome_rows import outcome_row
from consumers.outcome_sink import OutcomeSink
from infra.app.ui import UIServer
from infra.clickhouse.rows import write_events
from infra.kafka.admin import ensure_topics
from infra.kafka.dead_letters import dead_letters
from infra.kafka.dlq import send_to_dlq
from infra.kafka.producer import EventProducer
from schemas.codec import AvroCodec
from schemas.events import new_header
from tests.clickhouse_db import insert_telemetry, migrated_store, private_settings
from tests.event_samples import samples

NOW = datetime.now(UTC).replace(second=30, microsecond=0)   # mid-minute: no request straddles a minute
ODD = "o'brien <b>x</b>"            # a real model name full of quotes and markup
SERVED = {2: [(m, 3 + m) for m in range(1, 6)]}   # churn v2: minute offset -> requests
REQUEST_ID = "req-42"
DEAD = (("poison", ValueError("label column missing")), ("undecodable", KeyError("bad magic")),
        ("poison", ValueError("n_trials must be between 1 and 64")))


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _header(producer: str, at: datetime) -> dict:
    h = new_header(producer)
    h["event_time"] = _us(at)
    return h


def _decoded(events):
    codec = AvroCodec()
    return [(t, codec.decode(codec.encode(t, v), t).value) for t, v in events]


def _dataset() -> dict:
    ds = samples("DatasetCreated", 1)[0]
    ds.update(header=_header("producers.datasets", NOW - timedelta(hours=2)), name="churn", version="v1",
              uri="file:///data/churn/v1", row_count=240, checksum="sha256:abc")
    return ds


def _run(run_id: str, status: str, at: datetime, **extra) -> tuple[str, dict]:
    return ("TrainingRunUpdated", {"header": _header("consumers.training", at), "run_id": run_id, "status": status,
                                   "dataset_name": "churn", "dataset_version": "v1", "model_name": "churn", **extra})


def _runs() -> list[tuple[str, dict]]:
    t0 = NOW - timedelta(hours=1)
    out = [_run("run-a", "running", t0 + timedelta(seconds=e), epoch=e, metrics={"val_loss": 0.7 - 0.1 * e})
           for e in (1, 2, 3)]
    out += [_run("run-a", "finished", t0 + timedelta(minutes=1), seed=1, duration_s=12.5,
                 params_json='{"lr": 0.01, "hidden_sizes": [64]}', metrics={"best_val_loss": 0.41, "roc_auc": 0.91}),
            _run("run-b", "finished", t0 + timedelta(minutes=5), seed=2, duration_s=14.0,
                 params_json='{"lr": 0.003, "hidden_sizes": [64]}', metrics={"best_val_loss": 0.38, "roc_auc": 0.93}),
            _run("run-c", "failed", t0 + timedelta(minutes=7), failure_reason="CUDA out of memory"),
            _run("run-d", "finished", t0 + timedelta(minutes=9), metrics={"best_val_loss": 0.5, "roc_auc": 0.8})]
    return out


CALIBRATION = {"confidence": [0.5, 1.0], "accuracy": [0.5, 0.9], "positive_score": [], "positive_rate": [],
               "n": 100}
LABELLED = 8       # outcomes reported for the first served rows of churn v2


def _model(version: int, run_id: str, auc: float, at: datetime, name: str = "churn") -> tuple[str, dict]:
    return ("ModelRegistered", {
        "calibration": CALIBRATION if (name, version) == ("churn", 2) else None, "labels": ["no", "yes"],
        "header": _header("consumers.training", at), "model_name": name, "model_version": version, "run_id": run_id,
        "dataset_name": "churn", "dataset_version": "v1", "artifact_uri": f"file:///models/{version}.pt",
        "checksum": f"sum{version}", "task": "classification", "primary_metric": "roc_auc",
        "metrics": {"roc_auc": auc}, "signature_json": "{}",
        "baseline_metrics": {"logistic": {"roc_auc": 0.88}},
        "slice_metrics": [{"column": "region", "value": "north", "count": 40, "metrics": {"roc_auc": auc - 0.02}}]})


def _decisions() -> list[tuple[str, dict]]:
    check = {"name": "beats_champion", "passed": True, "value": 0.93, "threshold": 0.91, "detail": "paired CI"}
    deployed = [("ModelDeployed", {
        "header": _header("serving.deployer", NOW - timedelta(minutes=m)), "model_name": "churn", "model_version": v,
        "previous_version": v - 1 if v > 1 else None, "action": "promote", "artifact_uri": "a", "checksum": "c",
        "backend": "python", "repository_uri": "r", "primary_metric": "roc_auc", "metric_value": auc,
        "champion_metric": None, "metrics": {}, "checks": [check], "run_id": run, "dataset_version": "v1"})
        for v, m, auc, run in ((1, 50, 0.91, "run-a"), (2, 30, 0.93, "run-b"))]
    rejected = ("DeploymentRejected", {
        "header": _header("serving.deployer", NOW - timedelta(minutes=20)), "model_name": "churn", "model_version": 3,
        "stage": "gate", "reason": "worse than the champion", "champion_version": 2, "primary_metric": "roc_auc",
        "metric_value": 0.8, "champion_metric": 0.93,
        "checks": [{**check, "passed": False, "value": 0.8, "detail": "0.80 < 0.93"}]})
    return [*deployed, rejected]


def _telemetry() -> list[dict]:
    rows = []
    for version, minutes in SERVED.items():
        for m, n in minutes:
            for i in range(n):
                at = NOW - timedelta(minutes=m, seconds=i)
                rid = REQUEST_ID if (m, i) == (1, 0) else f"r{m}-{i}"
                rows.append({"header": _header("serving.triton", at), "request_id": rid, "model_name": "churn",
                             "model_version": version, "received_at": _us(at) - 900, "completed_at": _us(at),
                             "latency_us": 900, "batch_size": 1, "prediction": "yes" if i % 2 else "no",
                             "confidence": 0.8, "status": "ok",
                             "rows": [{"index": 0, "prediction": "yes" if i % 2 else "no",
                                       "prediction_value": float(i % 2), "confidence": 0.8,
                                       "scores": [0.2, 0.8] if i % 2 else [0.8, 0.2]}]})
    return rows


def seed(store) -> None:
    t = NOW - timedelta(minutes=55)
    write_events(store, _decoded([("DatasetCreated", _dataset()), *_runs(),
                                  _model(1, "run-a", 0.91, t), _model(2, "run-b", 0.93, t + timedelta(minutes=5)),
                                  _model(3, "run-d", 0.80, t + timedelta(minutes=9)),
                                  _model(1, "run-x", 0.7, t, name=ODD), *_decisions()]))
    insert_telemetry(store, (_telemetry()))
    served = _telemetry()[:LABELLED]          # their outcomes, through the outcome sink's own write path
    OutcomeSink(store)._write([outcome_row(f"o{i}", {"event_time": NOW, "producer": "tests"},
                                           {"model_name": "churn", "prediction_id": f"{t['request_id']}:0",
                                            "label": "yes", "observed_at": NOW}, f"id:{t['request_id']}:0")
                               for i, t in enumerate(served)])


@pytest.fixture(scope="module")
def ui_settings(kafka_settings, clickhouse_owner):
    s = private_settings(kafka_settings, clickhouse_owner.url)
    s = s.with_overrides(kafka={"topic_prefix": f"ui{uuid.uuid4().hex[:8]}"})
    ensure_topics(s)
    producer = EventProducer(s, name="ui-test")
    for i, (reason, error) in enumerate(DEAD):
        send_to_dlq(producer, topic=s.topic("training.requested"), partition=0, offset=i, key=b"k",
                    value=b"\x00" * (10 + i), reason=reason, error=error, group="modelbus-training")
    producer.flush()
    producer.close()
    return s


@pytest.fixture(scope="module")
def ui_store(ui_settings):
    with migrated_store(ui_settings) as store:
        seed(store)
        yield store


@pytest.fixture(scope="module")
def ui_server(ui_store, ui_settings):
    server = UIServer(ui_store, partial(dead_letters, ui_settings), port=0, refresh_s=1).start()
    yield server
    server.stop()
