"""A test-private ClickHouse database on the session's embedded owner: created, migrated, dropped afterwards.

One helper for every fixture that needs real tables without sharing rows with other tests.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate
from infra.settings import Settings


def private_settings(settings: Settings, owner_url: str) -> Settings:
    """``settings`` pointed at the owner and at a database of its own (nothing is created yet)."""
    return settings.with_overrides(clickhouse={"url": owner_url, "database": f"t_{uuid.uuid4().hex[:12]}"})


@contextmanager
def migrated_store(settings: Settings) -> Iterator[HttpStore]:
    """A store on ``settings``' database with every migration applied; the database is dropped on exit."""
    store = HttpStore(settings.clickhouse.url, database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    try:
        yield store
    finally:
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


def as_columns(rows: list[dict]) -> dict[str, list]:
    """A request's rows written as records (index, key, prediction, prediction_value, confidence, scores,
    numeric, categorical: easy to read in a test) as InferenceTelemetry's ``row_*`` columns, the wire form."""
    keys = [r.get("key") for r in rows]
    n_num = max((len(r.get("numeric", [])) for r in rows), default=0)
    n_cat = max((len(r.get("categorical", [])) for r in rows), default=0)
    return {"row_keys": keys if all(k is not None for k in keys) and rows else [],
            "row_predictions": [r["prediction"] for r in rows],
            "row_values": [float(r.get("prediction_value", 0.0)) for r in rows],
            "row_confidences": [float(r.get("confidence", 0.0)) for r in rows],
            "row_probabilities": [float(s) for r in rows for s in r.get("scores", [])],
            "row_numeric_values": [[float(r["numeric"][c]) for r in rows] for c in range(n_num)],
            "row_categorical_values": [[r["categorical"][c] for r in rows] for c in range(n_cat)]}


def with_rows(value: dict) -> dict:
    """An InferenceTelemetry value with its rows as the wire's ``row_*`` columns: a test's ``rows`` (records,
    see ``as_columns``) are converted; a request described only by its request-level fields (one row) gets
    that row, as the served model would have written it."""
    value = dict(value)
    rows = value.pop("rows", None)
    if rows is None and (value.get("row_predictions") or value.get("status", "ok") != "ok"):
        return value
    if rows is None:
        rows = [{"index": 0, "key": None, "prediction": value.get("prediction", ""),
                 "prediction_value": float(value.get("prediction_value", 0.0)),
                 "confidence": float(value.get("confidence", 0.0)), "scores": [],
                 "numeric": list(value.get("numeric_means", [])),
                 "categorical": list(value.get("categorical_values", []))}]
    return {**value, **as_columns(rows)}


def telemetry_container(values, coords=None) -> bytes:
    """Telemetry as the sink inserts it: one Avro object container of the event schema plus the kafka_* fields."""
    import io

    import fastavro

    from schemas import catalog

    schema = dict(catalog().get("InferenceTelemetry").expanded)
    schema["fields"] = [*schema["fields"], {"name": "kafka_topic", "type": "string"},
                        {"name": "kafka_partition", "type": "int"}, {"name": "kafka_offset", "type": "long"}]
    values = list(values)
    coords = list(coords) if coords is not None else [("", -1, -1)] * len(values)
    buf = io.BytesIO()
    records = [dict(with_rows(v), kafka_topic=t, kafka_partition=p, kafka_offset=o)
               for v, (t, p, o) in zip(values, coords)]
    fastavro.writer(buf, fastavro.parse_schema(schema), records)
    return buf.getvalue()


def insert_telemetry(store, values, coords=None) -> None:
    """Insert telemetry through the sink's own path (the ingest table and its views), rows included."""
    from consumers.telemetry_sink import INGEST_TABLE, INSERT_SETTINGS

    store.insert_raw(INGEST_TABLE, telemetry_container(values, coords), "Avro", settings=INSERT_SETTINGS)
