"""Fixtures running every ClickHouse test against BOTH drivers with the same SQL.

* ``chdb``: the engine in this process (``ChdbStore``).
* ``http``: clickhouse-connect over real HTTP to ``infra.clickhouse.server`` started as a
  subprocess with its own chdb directory (``clickhouse_owner`` in tests/conftest.py). It is
  our stand-in for a real ClickHouse server, which cannot be installed on this machine.

Each test gets a fresh database with the migrations applied, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from infra.clickhouse import ChdbStore, HttpStore
from infra.clickhouse.engine import ChdbEngine
from infra.clickhouse.migrate import migrate
from schemas.events import new_header
from tests.clickhouse_db import telemetry_container

# Recent on purpose: rows older than the telemetry TTL are dropped by ClickHouse at insert.
BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


@pytest.fixture(scope="module")
def chdb_engine(tmp_path_factory):
    """One in-process engine per module: chdb allows one data directory per process at a time."""
    engine = ChdbEngine(tmp_path_factory.mktemp("chdb"))
    yield engine
    engine.close()


def _open(kind: str, request, database: str):
    if kind == "chdb":
        return ChdbStore(None, database, engine=request.getfixturevalue("chdb_engine"))
    return HttpStore(request.getfixturevalue("clickhouse_owner").url, database=database)


@pytest.fixture(params=["chdb", pytest.param("http", marks=pytest.mark.stack)])
def driver(request) -> str:
    return request.param


@pytest.fixture
def ch_settings(base_settings):
    return base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})


@pytest.fixture
def bare_store(driver, request, ch_settings):
    """A store on an empty, test-private database."""
    store = _open(driver, request, ch_settings.clickhouse.database)
    yield store
    store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
    store.close()


@pytest.fixture
def store(bare_store, ch_settings):
    """A store whose database has every migration applied."""
    migrate(bare_store, ch_settings.clickhouse)
    return bare_store


def _telemetry(model="churn", version=1, *, at=BASE, latency_us=1000, status="ok", prediction="yes",
              confidence=0.9, event_id=None, batch_size=1) -> dict:
    """One InferenceTelemetry value as the served model emits it (timestamps as epoch micros)."""
    us = int(at.timestamp() * 1_000_000)
    header = new_header("serving.triton", event_id=event_id)
    header["event_time"] = us
    return {"header": header, "request_id": f"r-{uuid.uuid4().hex[:8]}", "model_name": model,
            "model_version": version, "received_at": us - latency_us, "completed_at": us, "latency_us": latency_us,
            "stage_latency_us": {"preprocess": latency_us // 4, "model": latency_us // 2}, "batch_size": batch_size,
            "numeric_names": ["age", "income"], "numeric_means": [41.5, 5200.0], "categorical_names": ["region"],
            "categorical_values": ["EU"], "prediction": prediction, "prediction_value": 1.0 if prediction == "yes"
            else 0.0, "confidence": confidence, "status": status, "error": None if status == "ok" else "boom"}


@pytest.fixture
def avro_container():
    """``avro_container(values, [(topic, partition, offset), ...])``: telemetry bytes as the sink inserts them
    (a request without ``rows`` gets its one row, see ``tests.clickhouse_db.with_rows``)."""
    return telemetry_container


@pytest.fixture
def make_telemetry():
    """Builder of InferenceTelemetry values: ``make_telemetry(model=, version=, at=, latency_us=, status=, ...)``."""
    return _telemetry


@pytest.fixture
def minute():
    """``minute(i)``: a fixed test clock, i minutes after BASE."""
    return lambda i: BASE + timedelta(minutes=i)


def _stats(name, kind="numeric"):
    return {"name": name, "dtype": "double" if kind == "numeric" else "string", "kind": kind, "count": 100,
            "null_count": 2, "mean": 1.5 if kind == "numeric" else None, "std": 0.5 if kind == "numeric" else None,
            "min": 0.0 if kind == "numeric" else None, "max": 3.0 if kind == "numeric" else None,
            "bin_edges": [0.0, 1.0, 3.0] if kind == "numeric" else [],
            "bin_counts": [40, 58] if kind == "numeric" else [],
            "categories": ["EU", "US"] if kind != "numeric" else [],
            "category_counts": [60, 38] if kind != "numeric" else [],
            "distinct_count": 2 if kind != "numeric" else None}


def _check(name, passed, value, threshold):
    return {"name": name, "passed": passed, "value": value, "threshold": threshold, "detail": f"{name} {value}"}


def _lifecycle(at=None):
    """A causal chain DatasetCreated → ... → ModelDeployed (+ a rejection, drift, a scrape), as decoded values.

    Also an earlier decoy push of the same dataset version from another chain, which lineage must not pick.
    Every event goes through the real codec, so values look exactly like what consumers receive.
    """
    from schemas.codec import AvroCodec
    from schemas.events import child_header, new_header

    at = at or BASE
    us = lambda dt: int(dt.timestamp() * 1_000_000)  # noqa: E731
    codec = AvroCodec()
    events: list[tuple[str, dict]] = []

    def emit(event_type, value, when):
        value["header"]["event_time"] = us(when)
        decoded = codec.decode(codec.encode(event_type, value))
        events.append((event_type, decoded.value))
        return decoded.value

    def dataset(header):
        return {"header": header, "name": "churn", "version": "ds-v1", "uri": "file:///a/datasets/churn/ds-v1",
                "metadata_uri": "file:///a/datasets/churn/ds-v1/meta.json", "task": "binary", "label_column": "churned",
                "feature_columns": ["age", "region"], "slice_columns": ["region"], "schema": {"age": "double",
                "region": "string", "churned": "int64"}, "row_count": 1000, "size_bytes": 4096, "checksum": "c0ffee",
                "statistics": [_stats("age"), _stats("region", "categorical")], "tags": {"owner": "o'brien"}}

    emit("DatasetCreated", dataset(new_header("producers.sdk")), at - timedelta(days=2))      # decoy push
    ds = emit("DatasetCreated", dataset(new_header("producers.sdk")), at - timedelta(hours=3))
    req = emit("TrainingRequested", {"header": child_header("consumers.training", ds), "request_id": "req-1",
                                     "dataset_name": "churn", "dataset_version": "ds-v1", "spec_json": '{"epochs": 2}',
                                     "reason": "dataset-created"}, at - timedelta(hours=3))
    run = {"run_id": "run-1", "dataset_name": "churn", "dataset_version": "ds-v1", "model_name": "churn",
           "params_json": '{"epochs": 2, "lr": 0.01}', "seed": 7, "code_version": "abc123 0.1.0",
           "environment": {"torch": "2.13.0", "device": "cpu"}, "request_id": "req-1"}
    started = emit("TrainingRunUpdated", {"header": child_header("consumers.training", req), **run,
                                          "status": "started"}, at - timedelta(hours=2, minutes=50))
    emit("TrainingRunUpdated", {"header": child_header("consumers.training", started), **run, "status": "epoch",
                                "epoch": 1, "metrics": {"train_loss": 0.5, "val_loss": 0.6}},
         at - timedelta(hours=2, minutes=40))
    finished = emit("TrainingRunUpdated", {"header": child_header("consumers.training", started), **run,
                                           "status": "finished", "metrics": {"test_roc_auc": 0.91},
                                           "duration_s": 12.5, "artifact_uris": {"report": "file:///r"}},
                    at - timedelta(hours=2, minutes=30))
    reg = emit("ModelRegistered", {
        "header": child_header("consumers.training", finished), "model_name": "churn", "model_version": 1,
        "run_id": "run-1", "dataset_name": "churn", "dataset_version": "ds-v1",
        "artifact_uri": "file:///a/models/churn/1", "checksum": "beef", "task": "binary", "primary_metric": "roc_auc",
        "metrics": {"roc_auc": 0.91, "accuracy": 0.85}, "baseline_metrics": {"majority": {"roc_auc": 0.5}},
        "slice_metrics": [{"column": "region", "value": "EU", "count": 60, "metrics": {"roc_auc": 0.9}},
                          {"column": "region", "value": "US", "count": 40, "metrics": {"roc_auc": 0.92}}],
        "reference_stats": [_stats("age")], "signature_json": "{}", "labels": ["no", "yes"],
        "params_json": '{"epochs": 2, "lr": 0.01}', "code_version": "abc123 0.1.0"}, at - timedelta(hours=2))
    emit("ModelDeployed", {
        "header": child_header("serving.deployer", reg), "model_name": "churn", "model_version": 1,
        "artifact_uri": "file:///a/models/churn/1", "checksum": "beef", "repository_uri": "file:///repo",
        "primary_metric": "roc_auc", "metric_value": 0.91, "metrics": {"roc_auc": 0.91},
        "checks": [_check("beats_baseline:majority", True, 0.91, 0.5)], "run_id": "run-1",
        "dataset_version": "ds-v1"}, at - timedelta(hours=1, minutes=50))
    emit("DeploymentRejected", {
        "header": new_header("serving.deployer"), "model_name": "churn", "model_version": 2, "stage": "gate",
        "reason": "worse than champion", "champion_version": 1, "primary_metric": "roc_auc", "metric_value": 0.8,
        "champion_metric": 0.91, "checks": [_check("beats_champion", False, 0.8, 0.91),
                                            _check("beats_baseline:majority", True, 0.8, 0.5)]},
         at - timedelta(minutes=30))
    emit("DriftDetected", {
        "header": new_header("monitoring.drift"), "model_name": "churn", "model_version": 1, "feature": "age",
        "window_start": us(at - timedelta(minutes=5)), "window_end": us(at), "psi": 0.4, "test": "ks",
        "statistic": 0.3, "p_value": 0.001, "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 500},
         at - timedelta(minutes=10))
    emit("ServerMetrics", {"header": new_header("serving.metrics"), "server": "http://127.0.0.1:18002/metrics",
                           "samples": [{"name": "nv_inference_request_success", "labels": {"model": "churn"},
                                        "value": 42.0},
                                       {"name": "nv_inference_count", "labels": {}, "value": 43.0}]},
         at - timedelta(minutes=1))
    return events


@pytest.fixture
def lifecycle_events():
    """Builder of a consistent lifecycle chain (see ``_lifecycle``)."""
    return _lifecycle
