"""The Store contract, run identically on the in-process engine and over HTTP (see conftest)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from consumers.telemetry_sink import INSERT_SETTINGS
from infra.clickhouse import ClickHouseError
from infra.clickhouse.migrate import load_migrations, migrate
from infra.clickhouse.rows import TELEMETRY_SCHEMA, inference_rows_arrow, telemetry_arrow
from schemas.catalog import catalog
from tests.clickhouse_db import as_columns, insert_telemetry

HOSTILE = "x'; DROP TABLE inference_telemetry; --\\ \"`{evil:String}"


def _tables(store) -> set[str]:
    rows = store.query_rows("SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database})
    return {r["name"] for r in rows}


def test_migrations_apply_once_and_are_idempotent(bare_store, ch_settings):
    first = migrate(bare_store, ch_settings.clickhouse)
    tables = _tables(bare_store)
    second = migrate(bare_store, ch_settings.clickhouse)

    assert first == [m.version for m in load_migrations()]
    assert second == []
    assert _tables(bare_store) == tables
    assert {"inference_telemetry", "telemetry_minute", "datasets", "column_stats", "training_requests",
            "training_runs", "models", "deployments", "deployment_rejections", "drift_events", "server_metrics",
            "v_model_lineage", "v_dataset_models", "schema_migrations"} <= tables
    recorded = bare_store.query_rows("SELECT version, count() AS n FROM schema_migrations FINAL GROUP BY version")
    assert sorted(r["version"] for r in recorded) == first
    assert all(r["n"] == 1 for r in recorded)


def test_every_telemetry_field_of_the_avro_contract_has_a_column(store):
    cols = {r["name"] for r in store.query_rows(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'inference_telemetry'",
        {"db": store.database})}
    schema = catalog().get("InferenceTelemetry").expanded
    fields = {f["name"] for f in schema["fields"] if f["name"] != "header" and not f["name"].startswith("row_")}
    header = {f["name"] for f in schema["fields"][0]["type"]["fields"]}
    assert fields | header | {"kafka_topic", "kafka_partition", "kafka_offset"} <= cols
    # Each served row lands in inference_rows: every row_* column of the event has a column of the row.
    row_cols = {r["name"] for r in store.query_rows(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'inference_rows'",
        {"db": store.database})}
    per_row = {f["name"] for f in schema["fields"] if f["name"].startswith("row_")}
    renamed = {"row_keys": "row_key", "row_predictions": "prediction", "row_values": "prediction_value",
               "row_confidences": "confidence", "row_probabilities": "scores", "row_numeric_values": "numeric_values",
               "row_categorical_values": "categorical_values"}
    assert set(renamed) == per_row and set(renamed.values()) <= row_cols


def test_arrow_round_trip_keeps_values_and_types(store, make_telemetry, minute):
    values = [make_telemetry(at=minute(0), latency_us=1234, status="error"),
              make_telemetry(model="fraud", version=3, at=minute(1), prediction="no", confidence=0.25)]
    store.insert_arrow("inference_telemetry", telemetry_arrow(values, [("t", 0, 10), ("t", 1, 11)]))

    out = store.query_arrow("SELECT * FROM inference_telemetry FINAL ORDER BY event_time")
    assert out.num_rows == 2
    assert out.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    rows = out.to_pylist(maps_as_pydicts="strict")
    assert rows[0]["event_id"] == values[0]["header"]["event_id"]
    assert rows[0]["event_time"] == minute(0)
    assert rows[0]["received_at"] == minute(0) - timedelta(microseconds=1234)
    assert rows[0]["stage_latency_us"] == {"preprocess": 308, "model": 617}
    assert rows[0]["error"] == "boom" and rows[1]["error"] is None
    assert rows[1]["model_name"] == "fraud" and rows[1]["model_version"] == 3
    assert rows[1]["numeric_means"] == [41.5, 5200.0] and rows[1]["categorical_values"] == ["EU"]
    assert (rows[1]["kafka_topic"], rows[1]["kafka_partition"], rows[1]["kafka_offset"]) == ("t", 1, 11)


def test_hostile_strings_are_bound_as_values_never_spliced(store, make_telemetry, minute):
    store.insert_arrow("inference_telemetry", telemetry_arrow(
        [make_telemetry(model=HOSTILE, at=minute(0)), make_telemetry(model="plain", at=minute(0))]))

    rows = store.query_rows("SELECT model_name FROM inference_telemetry WHERE model_name = {m:String}",
                            {"m": HOSTILE})
    assert rows == [{"model_name": HOSTILE}]
    arr = store.query_rows("SELECT count() AS n FROM inference_telemetry WHERE has({ms:Array(String)}, model_name)",
                           {"ms": [HOSTILE, "nope"]})
    assert arr == [{"n": 1}]
    exact = store.query_rows("SELECT count() AS n FROM inference_telemetry WHERE event_time = {t:DateTime64(6)}",
                             {"t": minute(0)})
    assert exact == [{"n": 2}]
    assert "inference_telemetry" in _tables(store)


def test_parameters_without_placeholder_are_refused(store):
    with pytest.raises(ClickHouseError, match="no {name:Type} placeholder"):
        store.query_rows("SELECT 1 AS x WHERE 1 = %(v)s", {"v": "1 OR 1=1"})


def test_errors_carry_clickhouse_message_and_code(store):
    with pytest.raises(ClickHouseError) as unknown:
        store.query_rows("SELECT * FROM no_such_table")
    assert unknown.value.code == 60 and unknown.value.name == "UNKNOWN_TABLE"
    assert "no_such_table" in str(unknown.value) and str(unknown.value).startswith("Code: 60.")

    with pytest.raises(ClickHouseError) as syntax:
        store.command("SELEKT 1")
    assert syntax.value.code == 62 and syntax.value.name == "SYNTAX_ERROR"

    with pytest.raises(ClickHouseError) as typed:
        store.query_rows("SELECT {n:UInt8} AS n", {"n": "not a number"})
    assert typed.value.code is not None and "not a number" in str(typed.value)


def test_insert_raw_avro_container_is_parsed_by_clickhouse(store, make_telemetry, minute, avro_container):
    values = [make_telemetry(at=minute(0), latency_us=100 * (i + 1)) for i in range(20)]
    data = avro_container(values, [("topic-a", i % 2, 100 + i) for i in range(20)])
    store.insert_raw("inference_telemetry_ingest", data, "Avro", settings=INSERT_SETTINGS)   # as the sink does

    rows = store.query_rows("SELECT event_id, producer, latency_us, kafka_partition, kafka_offset, stage_latency_us "
                            "FROM inference_telemetry FINAL ORDER BY kafka_offset")
    assert [r["event_id"] for r in rows] == [v["header"]["event_id"] for v in values]
    assert rows[5]["latency_us"] == 600 and rows[5]["kafka_partition"] == 1 and rows[5]["kafka_offset"] == 105
    assert rows[0]["producer"] == "serving.triton" and rows[0]["stage_latency_us"] == {"preprocess": 25, "model": 50}
    agg = store.query_rows("SELECT sum(requests) AS n FROM telemetry_minute")
    assert agg == [{"n": 20}]


def test_corrupt_avro_is_rejected_with_clickhouse_reason_and_nothing_is_stored(store, make_telemetry, minute,
                                                                              avro_container):
    good = avro_container([make_telemetry(at=minute(0))], [("t", 0, 0)])
    with pytest.raises(ClickHouseError) as err:
        store.insert_raw("inference_telemetry_ingest", good[:-9] + b"\xff" * 9, "Avro", settings=INSERT_SETTINGS)
    assert err.value.code is not None
    assert store.query_rows("SELECT count() AS n FROM inference_telemetry") == [{"n": 0}]


def test_materialized_views_aggregate_per_model_version_and_minute(store, make_telemetry, minute):
    lat = list(range(100, 10_100, 100))                     # 100 requests in minute 0 for v1
    values = [make_telemetry(at=minute(0) + timedelta(seconds=i % 60), latency_us=x,
                             status="error" if i % 10 == 0 else "ok", prediction="yes" if i % 4 else "no",
                             confidence=0.5 + (i % 2) * 0.25) for i, x in enumerate(lat)]
    values += [make_telemetry(version=2, at=minute(1), latency_us=50) for _ in range(7)]
    half = len(values) // 2                                  # two inserts: two partial aggregate rows to merge
    store.insert_arrow("inference_telemetry", telemetry_arrow(values[:half]))
    store.insert_arrow("inference_telemetry", telemetry_arrow(values[half:]))

    rows = store.query_rows(
        "SELECT model_version, minute, sum(requests) AS req, sum(errors) AS err, "
        "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_q) AS q, avgMerge(confidence_avg) AS conf, "
        "sumMap(predictions) AS preds FROM telemetry_minute GROUP BY model_version, minute ORDER BY model_version")
    v1, v2 = rows
    assert (v1["minute"], v1["req"], v1["err"]) == (minute(0), 100, 10)
    assert v1["q"] == pytest.approx([np.percentile(lat, p) for p in (50, 95, 99)], rel=0.02)   # t-digest
    assert v1["conf"] == pytest.approx(0.625)
    assert v1["preds"] == {"yes": 75, "no": 25}
    assert (v2["minute"], v2["req"], v2["err"], v2["preds"]) == (minute(1), 7, 0, {"yes": 7})


def test_replacing_merge_tree_collapses_duplicate_events(store, make_telemetry, minute):
    values = [make_telemetry(at=minute(0)) for _ in range(10)]
    table = telemetry_arrow(values)
    store.insert_arrow("inference_telemetry", table)
    store.insert_arrow("inference_telemetry", table)        # redelivered copy of every event

    assert store.query_rows("SELECT count() AS n FROM inference_telemetry") == [{"n": 20}]
    assert store.query_rows("SELECT count() AS n FROM inference_telemetry FINAL") == [{"n": 10}]
    store.command("OPTIMIZE TABLE inference_telemetry FINAL")
    assert store.query_rows("SELECT count() AS n FROM inference_telemetry") == [{"n": 10}]


def test_telemetry_arrow_schema_matches_the_table(store):
    described = {r["name"]: r["type"] for r in store.query_rows("DESCRIBE TABLE inference_telemetry")}
    assert set(TELEMETRY_SCHEMA.names) <= set(described)


def test_rows_bulk_loaded_as_arrow_equal_the_rows_the_landing_view_writes(store, make_telemetry, minute):
    """inference_rows_arrow (backfills, the sink benchmark's baseline) writes exactly what the sink's path does."""
    records = [{"index": i, "key": f"k{i}", "prediction": p, "prediction_value": float(p == "yes"),
                "confidence": 0.6 + i / 10, "scores": [0.4 - i / 10, 0.6 + i / 10], "numeric": [40.0 + i, 1.5 * i],
                "categorical": ["EU" if i else "US"]} for i, p in enumerate(["yes", "no", "yes"])]
    value = make_telemetry(at=minute(0)) | {"batch_size": 3, **as_columns(records)}
    insert_telemetry(store, [value], [("t", 0, 7)])
    columns = ("event_id, event_time, request_id, row_index, prediction_id, row_key, model_name, model_version, "
               "prediction, prediction_value, confidence, scores, numeric_names, numeric_values, categorical_names, "
               "categorical_values, status, smoke, kafka_topic, kafka_partition, kafka_offset")
    by_view = store.query_rows(f"SELECT {columns} FROM inference_rows ORDER BY row_index")
    assert len(by_view) == 3 and by_view[2]["scores"] == [0.2, 0.8] and by_view[1]["numeric_values"] == [41.0, 1.5]
    store.command("TRUNCATE TABLE inference_rows")
    store.insert_arrow("inference_rows", inference_rows_arrow([value], [("t", 0, 7)]))
    assert store.query_rows(f"SELECT {columns} FROM inference_rows ORDER BY row_index") == by_view
