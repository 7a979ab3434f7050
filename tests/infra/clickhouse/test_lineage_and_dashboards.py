"""Lifecycle tables, lineage views and the named dashboard queries on realistic sample data."""

from __future__ import annotations

from datetime import timedelta

import pytest

from infra.clickhouse.dashboards import describe, load_dashboard_queries, parameters
from infra.clickhouse.rows import write_events
from tests.clickhouse_db import insert_telemetry


@pytest.fixture
def loaded(store, lifecycle_events, make_telemetry, minute):
    events = lifecycle_events()
    write_events(store, events)
    write_events(store, events[-3:])   # redelivery of the last events must not double anything
    tel = [make_telemetry(version=1, at=minute(0), latency_us=100 * (i + 1), prediction="yes" if i < 6 else "no",
                          status="error" if i == 0 else "ok") for i in range(10)]
    tel += [make_telemetry(version=2, at=minute(1), latency_us=80) for _ in range(4)]
    tel += [make_telemetry(model="fraud", at=minute(1)) for _ in range(3)]
    insert_telemetry(store, (tel))
    return store, events


def test_lifecycle_rows_keep_every_field_that_matters(loaded):
    store, events = loaded
    run_rows = store.query_rows("SELECT status, epoch, metrics, environment, artifact_uris, params_json "
                                "FROM training_runs FINAL ORDER BY event_time")
    assert [r["status"] for r in run_rows] == ["started", "epoch", "finished"]
    assert run_rows[1]["epoch"] == 1 and run_rows[1]["metrics"] == {"train_loss": 0.5, "val_loss": 0.6}
    assert run_rows[2]["artifact_uris"] == {"report": "file:///r"} and run_rows[2]["environment"]["torch"] == "2.13.0"

    model = store.query_rows("SELECT metrics, baseline_metrics, slice_metrics.value AS sv, "
                             "slice_metrics.metrics AS sm, labels, parent_event_ids FROM models FINAL")[0]
    assert model["baseline_metrics"] == {"majority": {"roc_auc": 0.5}}
    assert model["sv"] == ["EU", "US"] and model["sm"][1] == {"roc_auc": 0.92}
    finished = [v for t, v in events if t == "TrainingRunUpdated" and v["status"] == "finished"][0]
    assert model["parent_event_ids"] == [str(finished["header"]["event_id"])]

    stats = store.query_rows("SELECT owner_kind, column, bin_edges, categories, mean FROM column_stats FINAL "
                             "ORDER BY owner_kind, event_time, column")
    assert [(s["owner_kind"], s["column"]) for s in stats] == [
        ("dataset", "age"), ("dataset", "region"), ("dataset", "age"), ("dataset", "region"), ("model", "age")]
    assert stats[1]["categories"] == ["EU", "US"] and stats[1]["mean"] is None
    tags = store.query_rows("SELECT tags FROM datasets FINAL LIMIT 1")[0]["tags"]
    assert tags == {"owner": "o'brien"}
    assert store.query_rows("SELECT count() AS n FROM server_metrics FINAL") == [{"n": 2}]
    assert store.query_rows("SELECT count() AS n FROM drift_events FINAL") == [{"n": 1}]


def test_model_lineage_walks_back_to_the_upstream_dataset_event(loaded):
    store, events = loaded
    rows = store.query_rows("SELECT * FROM v_model_lineage")
    assert len(rows) == 1
    row = rows[0]
    real_push = [v for t, v in events if t == "DatasetCreated"][1]
    reg = [v for t, v in events if t == "ModelRegistered"][0]
    assert (row["model_name"], row["model_version"], row["run_id"]) == ("churn", 1, "run-1")
    assert row["run_status"] == "finished" and row["params_json"] == '{"epochs": 2, "lr": 0.01}'
    assert row["dataset_version"] == "ds-v1"
    assert row["dataset_event_id"] == str(real_push["header"]["event_id"])     # not the earlier decoy push
    assert row["model_event_id"] == str(reg["header"]["event_id"])
    assert row["model_metrics"]["roc_auc"] == pytest.approx(0.91)

    by_data = store.query_rows("SELECT * FROM v_dataset_models")
    assert [(r["dataset_version"], r["model_name"], r["model_version"], r["deployed"]) for r in by_data] == [
        ("ds-v1", "churn", 1, True)]
    assert by_data[0]["primary_metric_value"] == pytest.approx(0.91)


def _params(name, sql, since, model=""):
    p = {"model": model, "since": since}
    if "limit" in parameters(sql):
        p["limit"] = 50
    return p


def test_every_dashboard_query_runs_with_bound_parameters_only(loaded, minute):
    store, _ = loaded
    queries = load_dashboard_queries()
    assert {"requests_per_minute", "error_rate", "latency_percentiles", "prediction_distribution",
            "model_versions_serving", "recent_deployments", "recent_rejections", "drift_events"} <= set(queries)
    for name, sql in queries.items():
        assert describe(sql), f"{name} has no leading comment"
        assert set(parameters(sql)) <= {"model", "since", "limit"}
        store.query_rows(sql, _params(name, sql, minute(-180)))
        assert store.query_rows(sql, _params(name, sql, minute(-180), model="x'; DROP TABLE models; --")) == []
    assert store.query_rows("SELECT count() AS n FROM models") == [{"n": 1}]


def test_dashboard_numbers_match_the_sample(loaded, minute):
    store, _ = loaded
    q = load_dashboard_queries()
    since = minute(-180)

    rpm = store.query_rows(q["requests_per_minute"], _params("", q["requests_per_minute"], since, "churn"))
    assert [(r["minute"], r["model_version"], r["requests"]) for r in rpm] == [(minute(0), 1, 10), (minute(1), 2, 4)]

    err = store.query_rows(q["error_rate"], _params("", q["error_rate"], since, "churn"))
    assert err[0]["errors"] == 1 and err[0]["error_rate"] == pytest.approx(0.1) and err[1]["error_rate"] == 0

    lat = store.query_rows(q["latency_percentiles"], _params("", q["latency_percentiles"], since, "churn"))
    assert 500 <= lat[0]["p50_us"] <= 600 and lat[0]["max_us"] == 1000 and lat[1]["p99_us"] == 80   # t-digest

    dist = store.query_rows(q["prediction_distribution"], _params("", q["prediction_distribution"], since, "churn"))
    v1 = [(r["prediction"], r["count"], r["share"]) for r in dist if r["model_version"] == 1]
    # Served rows, not requests: v1's failed request served no row, so 9 of its 10 requests count.
    assert v1 == [("yes", 5, pytest.approx(5 / 9)), ("no", 4, pytest.approx(4 / 9))]

    serving = store.query_rows(q["model_versions_serving"], _params("", q["model_versions_serving"], since))
    flags = {(r["model_name"], r["model_version"]): r["is_deployed"] for r in serving}
    assert flags == {("churn", 1): True, ("churn", 2): False, ("fraud", 1): False}

    deps = store.query_rows(q["recent_deployments"], _params("", q["recent_deployments"], since))
    assert [(d["model_name"], d["model_version"], d["run_id"]) for d in deps] == [("churn", 1, "run-1")]
    rej = store.query_rows(q["recent_rejections"], _params("", q["recent_rejections"], since))
    assert rej[0]["failed_checks"] == ["beats_champion"] and rej[0]["champion_version"] == 1
    drift = store.query_rows(q["drift_events"], _params("", q["drift_events"], since))
    assert [(d["feature"], d["psi"]) for d in drift] == [("age", 0.4)]
    assert store.query_rows(q["drift_events"], _params("", q["drift_events"], minute(0) + timedelta(hours=2))) == []
