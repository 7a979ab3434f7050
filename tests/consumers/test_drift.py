"""Drift monitor: statistics computed in ClickHouse, events on the real broker, the retrain policy.

References are built with the trainer's own ``column_stats`` from a seeded
sample and registered as ModelRegistered rows; live telemetry is inserted as the
telemetry sink stores it. The SQL statistics are checked against numpy/scipy on
the same bins, on both drivers (chdb in-process and the HTTP owner).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from consumers import drift
from consumers.drift import MonitorState, check_once, compute
from infra.clickhouse import ChdbStore, HttpStore
from infra.clickhouse.engine import ChdbEngine
from infra.clickhouse.migrate import migrate
from infra.clickhouse.rows import write_events
from infra.kafka import EventProducer
from infra.kafka import topics as T
from schemas.codec import AvroCodec
from schemas.events import new_header
from tests.clickhouse_db import insert_telemetry
from trainer.stats import column_stats

NOW = datetime.now(UTC).replace(microsecond=0)
HOSTILE = "x'); DROP TABLE models; --"   # a feature name that must stay data
REGIONS = ["EU", "US", "APAC"]
_codec = AvroCodec()


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _roundtrip(event_type: str, value: dict, at: datetime) -> dict:
    """Encode and decode with the real codec: rows look exactly like what the metadata sink receives."""
    value["header"]["event_time"] = _us(at)
    return _codec.decode(_codec.encode(event_type, value)).value


def reference(seed: int = 0, n: int = 3000) -> list[dict]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n), HOSTILE: rng.uniform(0, 1, n),
                          "region": rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])})
    pred = pd.Series(rng.choice(["no", "yes"], n, p=[0.7, 0.3]))
    return [column_stats(frame["age"], name="age"), column_stats(frame[HOSTILE], name=HOSTILE),
            column_stats(frame["region"], name="region", kind="categorical"),
            column_stats(pred, name="__prediction__", kind="categorical")]


def register(store, model: str, version: int = 1, *, dataset: str = "churn", deploy: bool = True) -> dict:
    """ModelRegistered (+ ModelDeployed) rows as the metadata sink writes them; returns their event ids."""
    reg = _roundtrip("ModelRegistered", {
        "header": new_header("consumers.training"), "model_name": model, "model_version": version,
        "run_id": f"run-{model}", "dataset_name": dataset, "dataset_version": "v1", "artifact_uri": "file:///m",
        "checksum": "c", "task": "binary", "primary_metric": "roc_auc", "metrics": {"roc_auc": 0.9},
        "reference_stats": reference(), "signature_json": "{}", "labels": ["no", "yes"]}, NOW - timedelta(hours=2))
    events = [("ModelRegistered", reg)]
    ids = {"registered": str(reg["header"]["event_id"])}
    if deploy:
        dep = _roundtrip("ModelDeployed", {
            "header": new_header("serving.deployer", parents=[ids["registered"]]), "model_name": model,
            "model_version": version, "artifact_uri": "file:///m", "checksum": "c", "repository_uri": "file:///r"},
            NOW - timedelta(hours=1))
        events.append(("ModelDeployed", dep))
        ids["deployed"] = str(dep["header"]["event_id"])
    write_events(store, events)
    return ids


def traffic(store, model: str, n: int, *, shifted: bool, seed: int = 1, version: int = 1,
            end: datetime = NOW) -> dict:
    """``n`` requests inside the window; shifted: age +15, regions and predictions reshuffled, a new region."""
    rng = np.random.default_rng(seed)
    age = rng.normal(55 if shifted else 40, 10, n)
    other = rng.uniform(0, 1, n)
    edges = next(s for s in reference() if s["name"] == HOSTILE)["bin_edges"]
    other[:len(edges)] = edges                  # values exactly on the reference edges: bins are [a, b)
    regions = (rng.choice(REGIONS + ["LATAM"], n, p=[0.2, 0.3, 0.2, 0.3]) if shifted
               else rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2]))
    preds = rng.choice(["no", "yes"], n, p=[0.2, 0.8] if shifted else [0.7, 0.3])
    values = []
    for i in range(n):
        at = _us(end - timedelta(seconds=240) + timedelta(milliseconds=100 * i))
        h = new_header("serving.triton")
        h["event_time"] = at
        values.append({"header": h, "request_id": f"r{i}", "model_name": model, "model_version": version,
                       "received_at": at - 500, "completed_at": at, "latency_us": 500, "stage_latency_us": {},
                       "batch_size": 1, "numeric_names": ["age", HOSTILE], "numeric_means": [age[i], other[i]],
                       "categorical_names": ["region"], "categorical_values": [str(regions[i])],
                       "prediction": str(preds[i]), "prediction_value": float(preds[i] == "yes"), "confidence": 0.8,
                       "status": "ok", "error": None})
    # Rows the window must ignore: a failed request, one outside the window, one with mismatched arrays.
    bad = dict(values[0], header=new_header("serving.triton"), status="error", error="boom")
    bad["header"]["event_time"] = values[0]["header"]["event_time"]
    old = dict(values[1], header=new_header("serving.triton"))
    old["header"]["event_time"] = _us(end - timedelta(hours=1))
    torn = dict(values[2], header=new_header("serving.triton"), numeric_means=[1.0], categorical_values=[])
    torn["header"]["event_time"] = values[2]["header"]["event_time"]
    insert_telemetry(store, (values + [bad, old, torn]))
    return {"age": age, HOSTILE: other, "region": regions, "__prediction__": preds}


# -- stores on both drivers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chdb_engine(tmp_path_factory):
    engine = ChdbEngine(tmp_path_factory.mktemp("drift-chdb"))
    yield engine
    engine.close()


@pytest.fixture(params=["chdb", pytest.param("http", marks=pytest.mark.stack)])
def any_store(request, base_settings):
    settings = base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})
    if request.param == "chdb":
        store = ChdbStore(None, settings.clickhouse.database, engine=request.getfixturevalue("chdb_engine"))
    else:
        store = HttpStore(request.getfixturevalue("clickhouse_owner").url, database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    yield store, settings
    store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
    store.close()


def _psi(p_ref, p_live, eps=drift.EPS):
    a, b = np.maximum(p_ref, eps), np.maximum(p_live, eps)
    return float(np.sum((b - a) * np.log(b / a)))


def test_sql_statistics_match_numpy_and_scipy(any_store):
    store, settings = any_store
    register(store, "churn")
    live = traffic(store, "churn", 400, shifted=True)
    ref = {s["name"]: s for s in reference()}

    results = {r.feature: r for r in compute(store, settings, now=NOW)}

    assert set(results) == {"age", HOSTILE, "region", "__prediction__"}
    assert store.query_rows("SELECT count() AS n FROM models") == [{"n": 1}]   # the hostile name stayed data
    for name in ("age", HOSTILE):
        r, edges = results[name], np.array(ref[name]["bin_edges"])
        # Reference bins with open ends: the same as np.histogram on values clipped into the edge range.
        counts, _ = np.histogram(np.clip(live[name], edges[0], edges[-1]), bins=edges)
        assert r.live_counts == counts.tolist() and r.sample_size == 400
        p_ref = np.array(ref[name]["bin_counts"]) / sum(ref[name]["bin_counts"])
        assert r.psi == pytest.approx(_psi(p_ref, counts / 400), rel=1e-9)
        ks = np.max(np.abs(np.cumsum(p_ref) - np.cumsum(counts / 400)))
        assert r.statistic == pytest.approx(ks, rel=1e-9) and r.test == "ks"
    for name in ("region", "__prediction__"):
        r, cats = results[name], ref[name]["categories"]
        live_counts = [int(np.sum(live[name] == c)) for c in cats] + [int(np.sum(~np.isin(live[name], cats)))]
        ref_counts = ref[name]["category_counts"] + [ref[name]["count"] - sum(ref[name]["category_counts"])]
        assert r.buckets == cats + ["__other__"] and r.live_counts == live_counts and r.test == "chi2"
        table = np.array([ref_counts, live_counts])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
        assert r.statistic == pytest.approx(chi2, rel=1e-9) and r.p_value == pytest.approx(p, rel=1e-6, abs=1e-300)
        p_ref = np.array(ref_counts) / sum(ref_counts)
        assert r.psi == pytest.approx(_psi(p_ref, np.array(live_counts) / 400), rel=1e-9)
    # The shift is real where it was made, and absent from the untouched feature.
    assert {f for f, r in results.items() if r.drifted} == {"age", "region", "__prediction__"}
    assert results["age"].psi > settings.monitoring.psi_threshold
    assert results["age"].p_value < settings.monitoring.p_value_threshold
    assert results[HOSTILE].psi < 0.1 and results[HOSTILE].p_value > settings.monitoring.p_value_threshold


def test_unshifted_traffic_and_too_few_samples_never_drift(any_store):
    store, settings = any_store
    register(store, "steady")
    traffic(store, "steady", 400, shifted=False, seed=7)
    register(store, "quiet")
    traffic(store, "quiet", 150, shifted=True)          # a huge shift, but below min_samples (200)

    results = compute(store, settings, now=NOW)

    steady = [r for r in results if r.model_name == "steady"]
    assert len(steady) == 4 and all(r.status == "ok" for r in steady)
    assert all(r.psi < settings.monitoring.psi_threshold for r in steady)
    quiet = [r for r in results if r.model_name == "quiet"]
    assert len(quiet) == 4 and {r.status for r in quiet} == {"insufficient-samples"}
    assert max(r.psi for r in quiet) > 1.0                                     # it would have breached
    lax = settings.with_overrides(monitoring={"min_samples": 100})
    assert {r.feature for r in compute(store, lax, now=NOW) if r.model_name == "quiet" and r.drifted} == \
        {"age", "region", "__prediction__"}


# -- the broker --------------------------------------------------------------------------------------------------

@pytest.fixture
def monitored(sink_settings, ch):
    """Settings on fresh topics and a private database with one drifting and one steady model."""
    ids = register(ch, "churn")
    traffic(ch, "churn", 400, shifted=True)
    register(ch, "steady", dataset="steady")
    traffic(ch, "steady", 400, shifted=False, seed=7)
    return sink_settings, ch, ids


def _decode(messages) -> list:
    return [(m.key().decode(), _codec.decode(m.value())) for m in messages]


@pytest.mark.stack
def test_drift_is_published_once_per_window_with_lineage(monitored, read_topic):
    settings, store, ids = monitored
    producer, state = EventProducer(settings, name="tests"), MonitorState()

    results = check_once(store, settings, producer=producer, state=state, now=NOW)

    drifted = [r for r in results if r.drifted]
    assert {(r.model_name, r.feature) for r in drifted} == {("churn", "age"), ("churn", "region"),
                                                            ("churn", "__prediction__")}
    topic = settings.topic(T.MONITORING_DRIFT)
    events = _decode(read_topic(settings, topic, 3))
    assert len(events) == 3 and {k for k, _ in events} == {"churn"}
    by_feature = {d.value["feature"]: d for _, d in events}
    for r in drifted:
        v = by_feature[r.feature].value
        assert by_feature[r.feature].event_type == "DriftDetected"
        assert str(v["header"]["event_id"]) == r.event_id and v["header"]["producer"] == "monitoring.drift"
        assert v["header"]["parent_event_ids"] == [ids["deployed"], ids["registered"]]
        assert v["psi"] == pytest.approx(r.psi) and v["psi"] > v["psi_threshold"] == 0.2
        assert v["p_value"] == pytest.approx(r.p_value) and v["p_value"] < v["p_value_threshold"] == 0.01
        assert v["test"] == ("ks" if r.feature == "age" else "chi2") and v["sample_size"] == 400
        assert v["action"] == "none" and v["window_end"] - v["window_start"] == timedelta(seconds=300)

    # Same window, same monitor: nothing new.
    again = check_once(store, settings, producer=producer, state=state, now=NOW + timedelta(seconds=30))
    assert all(r.suppressed for r in again if r.drifted) and len([r for r in again if r.drifted]) == 3
    # A restarted monitor (no memory) learns from drift_events, as stored by the metadata sink.
    write_events(store, [(d.event_type, d.value) for _, d in events])
    check_once(store, settings, producer=producer, state=MonitorState(), now=NOW + timedelta(seconds=60))
    assert producer.delivered == 3
    # Windows are [now - drift_window_s, now): five minutes on, this traffic no longer counts.
    later = check_once(store, settings, producer=producer, state=state, now=NOW + timedelta(seconds=301))
    assert not any(r.drifted for r in later)          # the traffic has left the window by then


@pytest.mark.stack
def test_retrain_policy_requests_training_on_the_newest_dataset(monitored, read_topic):
    settings, store, _ = monitored
    settings = settings.with_overrides(monitoring={"retrain_on_drift": True})
    for version, age in (("v1", timedelta(days=3)), ("v3", timedelta(hours=5)), ("v2", timedelta(days=1))):
        ds = _roundtrip("DatasetCreated", {
            "header": new_header("producers.sdk"), "name": "churn", "version": version, "uri": "file:///d",
            "metadata_uri": "file:///d/m.json", "task": "binary", "label_column": "y", "feature_columns": ["age"],
            "schema": {"age": "double"}, "row_count": 10, "size_bytes": 1, "checksum": "c", "statistics": []},
            NOW - age)
        write_events(store, [("DatasetCreated", ds)])
    # The request that trained the serving model: retraining reuses its spec.
    req = _roundtrip("TrainingRequested", {"header": new_header("producers.sdk"), "request_id": "req-9",
                                           "dataset_name": "churn", "spec_json": '{"epochs": 3, "lr": 0.01}'},
                     NOW - timedelta(days=2))
    run = _roundtrip("TrainingRunUpdated", {"header": new_header("consumers.training"), "run_id": "run-churn",
                                            "status": "finished", "dataset_name": "churn", "dataset_version": "v1",
                                            "model_name": "churn", "request_id": "req-9"}, NOW - timedelta(days=2))
    write_events(store, [("TrainingRequested", req), ("TrainingRunUpdated", run)])

    results = check_once(store, settings, state=MonitorState(), now=NOW)   # its own producer, as in production

    drifts = _decode(read_topic(settings, settings.topic(T.MONITORING_DRIFT), 3))
    assert {d.value["action"] for _, d in drifts} == {"retrain-requested"}
    requests = _decode(read_topic(settings, settings.topic(T.TRAINING_REQUESTED), 1))
    assert len(requests) == 1
    key, req = requests[0]
    assert key == "churn" and req.event_type == "TrainingRequested"
    v = req.value
    assert (v["reason"], v["dataset_name"], v["dataset_version"], v["model_name"]) == ("drift", "churn", "v3", "churn")
    assert v["spec_json"] == '{"epochs": 3, "lr": 0.01}'
    assert {r.event_id for r in results if r.drifted} <= {str(p) for p in v["header"]["parent_event_ids"]}
    assert {v["header"]["correlation_id"]} == {d.value["header"]["correlation_id"] for _, d in drifts}
    # One request per model and window, even when more features drift later in it.
    write_events(store, [("TrainingRequested", v)])   # as the metadata sink stores it; drift_events is not
    producer = EventProducer(settings, name="tests")
    again = check_once(store, settings, producer=producer, state=MonitorState(), now=NOW + timedelta(seconds=10))
    assert {r.action for r in again if r.drifted} == {"none"} and producer.delivered == 3


@pytest.mark.stack
def test_module_entry_point_runs_one_check(monitored, monkeypatch, read_topic):
    """``python -m consumers.drift --once`` with settings from the environment, as an operator runs it."""
    settings, store, _ = monitored
    for key, value in {"KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                       "KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
                       "CLICKHOUSE__URL": settings.clickhouse.url, "CLICKHOUSE__DATABASE": settings.clickhouse.database,
                       "STACK__DATA_DIR": settings.stack.data_dir,
                       "MONITORING__DRIFT_WINDOW_S": str(int((datetime.now(UTC) - NOW).total_seconds()) + 300),
                       }.items():
        monkeypatch.setenv(f"MODELBUS_{key}", value)

    drift.main(["--once", "--interval", "1"])

    features = {d.value["feature"] for _, d in _decode(read_topic(settings, settings.topic(T.MONITORING_DRIFT), 3))}
    assert features == {"age", "region", "__prediction__"}
    with pytest.raises(SystemExit):
        drift.main(["--interval", "0"])
