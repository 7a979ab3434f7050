"""Decoded events → rows of the ClickHouse tables (one place maps the Avro contract to SQL).

Lifecycle events are few, so they are inserted as JSONEachRow and ClickHouse
converts each value to its column type. Telemetry, the one high-volume stream,
has an explicit Arrow schema for bulk inserts (bench baseline, backfills, tests);
its live path never decodes (see ``consumers.telemetry_sink``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Iterable

import pyarrow as pa

# Event type → table of its main row.
TABLES: dict[str, str] = {
    "DatasetCreated": "datasets",
    "TrainingRequested": "training_requests",
    "TrainingRunUpdated": "training_runs",
    "ModelRegistered": "models",
    "ModelDeployed": "deployments",
    "DeploymentRejected": "deployment_rejections",
    "DriftDetected": "drift_events",
    "ServerMetrics": "server_metrics",
    "InferenceTelemetry": "inference_telemetry",
}

_STATS_FIELDS = ("dtype", "kind", "count", "null_count", "mean", "std", "min", "max", "bin_edges", "bin_counts",
                 "categories", "category_counts", "distinct_count")


def _ts(value: Any) -> Any:
    """Aware datetime or epoch micros → 'YYYY-MM-DD hh:mm:ss.ffffff' UTC text ClickHouse parses exactly."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def header_columns(value: dict[str, Any]) -> dict[str, Any]:
    h = value["header"]
    return {"event_id": str(h["event_id"]), "event_time": _ts(h["event_time"]), "producer": h["producer"],
            "correlation_id": str(h["correlation_id"]), "parent_event_ids": [str(p) for p in h["parent_event_ids"]]}


def _plain(value: dict[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    skip = {"header", *skip}
    return {k: v for k, v in value.items() if k not in skip}


_CHECK_FIELDS = ("name", "passed", "value", "threshold", "detail", "n", "reference_value", "difference", "ci_low",
                 "ci_high", "confidence", "rule", "margin", "decisive")
_BEHAVIOUR_FIELDS = ("name", "kind", "passed", "n", "value", "threshold", "detail")


def _nested(prefix: str, records: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list]:
    return {f"{prefix}.{f}": [r[f] for r in records] for f in names}


def _checks(checks: list[dict[str, Any]]) -> dict[str, list]:
    return _nested("checks", checks, _CHECK_FIELDS)


def _stats_rows(head: dict[str, Any], kind: str, name: str, version: str, stats: list[dict]) -> list[dict]:
    return [{**head, "owner_kind": kind, "owner_name": name, "owner_version": version, "position": i,
             "column": s["name"], **{f: s[f] for f in _STATS_FIELDS}} for i, s in enumerate(stats)]


def rows_for(event_type: str, value: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Table → rows for one decoded event; raises KeyError for an event type without a table."""
    head = header_columns(value)
    if event_type == "DatasetCreated":
        row = {**head, **_plain(value, ["statistics"])}
        return {"datasets": [row],
                "column_stats": _stats_rows(head, "dataset", value["name"], value["version"], value["statistics"])}
    if event_type == "ModelRegistered":
        slices = value["slice_metrics"]
        row = {**head, **_plain(value, ["slice_metrics", "reference_stats", "behaviour_tests", "calibration"]),
               **_nested("slice_metrics", slices, ("column", "value", "count", "metrics")),
               **_nested("behaviour_tests", value.get("behaviour_tests") or [], _BEHAVIOUR_FIELDS)}
        cal = value.get("calibration")
        return {"models": [row],
                "column_stats": _stats_rows(head, "model", value["model_name"], str(value["model_version"]),
                                            value["reference_stats"]),
                "model_calibration": [{"event_id": head["event_id"], "event_time": head["event_time"],
                                       "model_name": value["model_name"], "model_version": value["model_version"],
                                       **cal}] if cal else []}
    if event_type in ("ModelDeployed", "DeploymentRejected"):
        return {TABLES[event_type]: [{**head, **_plain(value, ["checks"]), **_checks(value["checks"])}]}
    if event_type == "DriftDetected":
        row = {**head, **_plain(value), "window_start": _ts(value["window_start"]),
               "window_end": _ts(value["window_end"])}
        return {"drift_events": [row]}
    if event_type == "ServerMetrics":
        return {"server_metrics": [{**head, "server": value["server"], "sample_index": i, **s}
                                   for i, s in enumerate(value["samples"])]}
    if event_type in ("TrainingRequested", "TrainingRunUpdated"):
        return {TABLES[event_type]: [{**head, **_plain(value)}]}
    if event_type == "InferenceTelemetry":
        row = {**head, **_plain(value), "received_at": _ts(value["received_at"]),
               "completed_at": _ts(value["completed_at"])}
        return {"inference_telemetry": [row]}
    raise KeyError(f"no table for event type {event_type!r}")


def json_each_row(rows: list[dict[str, Any]]) -> bytes:
    """Rows as ClickHouse JSONEachRow input (NaN/inf are written as ClickHouse reads them)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str, allow_nan=True) + "\n" for r in rows).encode()


_TS = pa.timestamp("us", tz="UTC")
_STR_LIST = pa.list_(pa.string())
TELEMETRY_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_time", _TS), ("producer", pa.string()), ("correlation_id", pa.string()),
    ("parent_event_ids", _STR_LIST), ("request_id", pa.string()), ("model_name", pa.string()),
    ("model_version", pa.int32()), ("received_at", _TS), ("completed_at", _TS), ("latency_us", pa.int64()),
    ("stage_latency_us", pa.map_(pa.string(), pa.int64())), ("batch_size", pa.int32()),
    ("numeric_names", _STR_LIST), ("numeric_means", pa.list_(pa.float64())), ("categorical_names", _STR_LIST),
    ("categorical_values", _STR_LIST), ("prediction", pa.string()), ("prediction_value", pa.float64()),
    ("confidence", pa.float64()), ("status", pa.string()), ("error", pa.string()), ("smoke", pa.bool_()),
    ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])


def _micros(v: Any) -> int:
    if isinstance(v, datetime):
        return int(v.timestamp() * 1_000_000) if v.tzinfo else int(v.replace(tzinfo=UTC).timestamp() * 1e6)
    return int(v)


def telemetry_arrow(values: Iterable[dict[str, Any]], kafka: Iterable[tuple[str, int, int]] | None = None) -> pa.Table:
    """InferenceTelemetry values (as produced/decoded) → an Arrow table shaped like ``inference_telemetry``."""
    values = list(values)
    coords = list(kafka) if kafka is not None else [("", -1, -1)] * len(values)
    cols: dict[str, list] = {f.name: [] for f in TELEMETRY_SCHEMA}
    for v, (topic, part, off) in zip(values, coords):
        h = v["header"]
        cols["event_id"].append(str(h["event_id"]))
        cols["event_time"].append(_micros(h["event_time"]))
        cols["producer"].append(h["producer"])
        cols["correlation_id"].append(str(h["correlation_id"]))
        cols["parent_event_ids"].append([str(p) for p in h.get("parent_event_ids", [])])
        for name in ("request_id", "model_name", "model_version", "latency_us", "batch_size", "prediction",
                     "prediction_value", "confidence", "status", "error"):
            cols[name].append(v.get(name))
        cols["smoke"].append(bool(v.get("smoke", False)))
        cols["received_at"].append(_micros(v["received_at"]))
        cols["completed_at"].append(_micros(v["completed_at"]))
        cols["stage_latency_us"].append(list(v.get("stage_latency_us", {}).items()))
        for name in ("numeric_names", "numeric_means", "categorical_names", "categorical_values"):
            cols[name].append(list(v.get(name, [])))
        cols["kafka_topic"].append(topic)
        cols["kafka_partition"].append(part)
        cols["kafka_offset"].append(off)
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in TELEMETRY_SCHEMA}, schema=TELEMETRY_SCHEMA)


ROWS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_time", _TS), ("request_id", pa.string()), ("row_index", pa.int32()),
    ("prediction_id", pa.string()), ("row_key", pa.string()), ("model_name", pa.string()),
    ("model_version", pa.int32()), ("prediction", pa.string()), ("prediction_value", pa.float64()),
    ("confidence", pa.float64()), ("scores", pa.list_(pa.float64())), ("numeric_names", _STR_LIST),
    ("numeric_values", pa.list_(pa.float64())), ("categorical_names", _STR_LIST), ("categorical_values", _STR_LIST),
    ("status", pa.string()), ("smoke", pa.bool_()), ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
])


def inference_rows_arrow(values: Iterable[dict[str, Any]],
                         kafka: Iterable[tuple[str, int, int]] | None = None) -> pa.Table:
    """The served rows of InferenceTelemetry v4 values (their ``row_*`` columns) as an Arrow table shaped like
    ``inference_rows``: what the landing table's view writes, for bulk loads that bypass it (backfills, the
    sink benchmark's baseline)."""
    values = list(values)
    coords = list(kafka) if kafka is not None else [("", -1, -1)] * len(values)
    cols: dict[str, list] = {f.name: [] for f in ROWS_SCHEMA}
    for v, (topic, part, off) in zip(values, coords):
        preds = v.get("row_predictions", [])
        n = len(preds)
        if not n:
            continue
        probs = v.get("row_probabilities", [])
        num, cat = v.get("row_numeric_values", []), v.get("row_categorical_values", [])
        k = len(probs) // n
        keys = v.get("row_keys") or [None] * n
        head = {"event_id": str(v["header"]["event_id"]), "event_time": _micros(v["header"]["event_time"]),
                "request_id": v["request_id"], "model_name": v["model_name"], "model_version": v["model_version"],
                "numeric_names": list(v.get("numeric_names", [])),
                "categorical_names": list(v.get("categorical_names", [])), "status": v.get("status", "ok"),
                "smoke": bool(v.get("smoke", False)), "kafka_topic": topic, "kafka_partition": part,
                "kafka_offset": off}
        for name, value in head.items():
            cols[name].extend([value] * n)
        cols["row_index"].extend(range(n))
        cols["prediction_id"].extend(f"{v['request_id']}:{i}" for i in range(n))
        cols["row_key"].extend(keys)
        cols["prediction"].extend(preds)
        cols["prediction_value"].extend(v["row_values"])
        cols["confidence"].extend(v["row_confidences"])
        cols["scores"].extend(probs[i * k:(i + 1) * k] for i in range(n))
        cols["numeric_values"].extend([c[i] for c in num] for i in range(n))
        cols["categorical_values"].extend([c[i] for c in cat] for i in range(n))
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in ROWS_SCHEMA}, schema=ROWS_SCHEMA)


def write_events(store, events: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Insert decoded lifecycle events, one JSONEachRow block per table; returns rows per table.

    Idempotent per event: the tables are ReplacingMergeTrees keyed on event_id.
    """
    by_table: dict[str, list[dict[str, Any]]] = {}
    for event_type, value in events:
        for table, rows in rows_for(event_type, value).items():
            by_table.setdefault(table, []).extend(rows)
    for table, rows in by_table.items():
        if rows:
            store.insert_raw(table, json_each_row(rows), "JSONEachRow",
                             settings={"input_format_skip_unknown_fields": 0})
    return {t: len(r) for t, r in by_table.items()}
