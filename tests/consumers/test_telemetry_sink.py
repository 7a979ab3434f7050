"""The telemetry sink against a real tansu broker and the embedded ClickHouse owner (real processes)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers.telemetry_sink import TelemetrySink
from infra.kafka import EventProducer
from infra.kafka import dlq as D
from infra.kafka.config import consumer_config
from infra.kafka.topics import INFERENCE_TELEMETRY, dlq_name
from schemas.catalog import catalog
from schemas.events import new_header, now_us
from tests.clickhouse_db import as_columns

pytestmark = pytest.mark.stack


def telemetry(i: int) -> dict:
    t = now_us()
    return {"header": new_header("serving.triton"), "request_id": f"r{i}", "model_name": "churn",
            "model_version": 1 + i % 2, "received_at": t - 900, "completed_at": t, "latency_us": 900 + i,
            "stage_latency_us": {"model": 500}, "batch_size": 1, "numeric_names": ["age"], "numeric_means": [float(i)],
            "categorical_names": ["region"], "categorical_values": ["EU" if i % 3 else "US"],
            "prediction": "yes" if i % 4 else "no", "prediction_value": float(i % 4 != 0), "confidence": 0.8,
            "status": "ok", "error": None}


def produce(settings, n: int, extra: list[bytes] = ()) -> list[str]:
    p = EventProducer(settings, name="tests")
    topic = settings.topic(INFERENCE_TELEMETRY)
    ids = []
    for i in range(n):
        v = telemetry(i)
        ids.append(v["header"]["event_id"])
        p.send(topic, "InferenceTelemetry", v, key=f"k{i % 7}")
        if i == n // 2:
            for raw in extra:
                p.send_raw(topic, raw, b"k0")
    p.flush(30)
    return ids


def run_sink(settings, store, **kw):
    sink = TelemetrySink(settings, store, max_wait_s=0.1, **kw)
    stats = sink.run(idle_timeout=3.0)
    return stats


def counts(store) -> dict:
    return store.query_rows("SELECT count() AS rows, uniqExact(event_id) AS ids, "
                            "(SELECT count() FROM inference_telemetry FINAL) AS final FROM inference_telemetry")[0]


def test_sink_stores_every_event_and_dead_letters_garbage(sink_settings, ch, read_topic):
    garbage = [b"\x00not avro at all",                        # Confluent magic, no registry: unknown framing
               b"\xc3\x01" + b"\xee" * 8 + b"\x02x"]          # single-object header with an unknown fingerprint
    ids = produce(sink_settings, 300, garbage)

    stats = run_sink(sink_settings, ch, max_batch=64)

    assert counts(ch) == {"rows": 300, "ids": 300, "final": 300}
    stored = {r["event_id"] for r in ch.query_rows("SELECT event_id FROM inference_telemetry")}
    assert stored == set(ids)
    assert stats.dead_lettered == 2 and stats.inserted == 300
    dlq = read_topic(sink_settings, dlq_name(sink_settings.topic(INFERENCE_TELEMETRY)), 2)
    assert sorted(m.value() for m in dlq) == sorted(garbage)
    assert {dict(m.headers())[D.H_REASON] for m in dlq} == {b"undecodable"}
    errors = {m.value(): dict(m.headers())[D.H_ERROR].decode() for m in dlq}
    assert "unknown schema fingerprint eeeeeeeeeeeeeeee" in errors[garbage[1]]
    assert "no schema registry" in errors[garbage[0]]
    agg = ch.query_rows("SELECT sum(requests) AS n FROM telemetry_minute")
    assert agg == [{"n": 300}]


def test_block_rejected_by_clickhouse_falls_back_to_per_message_checks(sink_settings, ch, read_topic):
    fp = catalog().get("InferenceTelemetry").fingerprint
    truncated = b"\xc3\x01" + fp + b"\x02\x03\x04"             # known schema, body cut short: ClickHouse refuses
    ids = produce(sink_settings, 50, [truncated])

    stats = run_sink(sink_settings, ch, max_batch=1000)

    assert stats.fallbacks >= 1 and stats.dead_lettered == 1
    assert counts(ch) == {"rows": 50, "ids": 50, "final": 50}
    assert {r["event_id"] for r in ch.query_rows("SELECT event_id FROM inference_telemetry")} == set(ids)
    dlq = read_topic(sink_settings, dlq_name(sink_settings.topic(INFERENCE_TELEMETRY)), 1)
    assert [m.value() for m in dlq] == [truncated]
    assert b"InferenceTelemetry" in dict(dlq[0].headers())[D.H_ERROR]


def test_events_of_every_released_writer_schema_land_and_only_flagged_ones_read_as_smoke(sink_settings, ch):
    """v1 producers (before `smoke`) still run during an upgrade: their rows read false, as Avro resolution says;
    v3 producers (rows as records, before v4's columns) too: their rows land as v4's do."""
    import io

    import fastavro

    v1 = catalog().history["InferenceTelemetry"][0]
    assert "smoke" not in {f["name"] for f in v1.expanded["fields"]}
    old = telemetry(0) | {"request_id": "from-v1"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1.parsed, old)
    p = EventProducer(sink_settings, name="tests")
    topic = sink_settings.topic(INFERENCE_TELEMETRY)
    p.send_raw(topic, b"\xc3\x01" + v1.fingerprint + buf.getvalue(), b"k0")
    p.send(topic, "InferenceTelemetry", telemetry(1) | {"request_id": "flagged", "smoke": True}, key="k0")
    p.send(topic, "InferenceTelemetry", telemetry(2) | {"request_id": "live"}, key="k0")
    # v3 wrote a request's rows as records, v4 as columns: both land row by row in inference_rows.
    v3 = catalog().history["InferenceTelemetry"][2]
    assert "rows" in {f["name"] for f in v3.expanded["fields"]}
    records = [{"index": i, "key": f"order-{i}", "prediction": p, "prediction_value": float(p == "yes"),
                "confidence": 0.7 + i / 10, "scores": [0.3 - i / 10, 0.7 + i / 10] if p == "yes" else
                [0.7 + i / 10, 0.3 - i / 10], "numeric": [40.0 + i], "categorical": [r]}
               for i, (p, r) in enumerate([("yes", "EU"), ("no", "US")])]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v3.parsed, telemetry(3) | {"request_id": "from-v3", "batch_size": 2,
                                                               "rows": records})
    p.send_raw(topic, b"\xc3\x01" + v3.fingerprint + buf.getvalue(), b"k0")
    p.send(topic, "InferenceTelemetry", telemetry(4) | {"request_id": "from-v4", "batch_size": 2,
                                                        **as_columns(records)}, key="k0")
    p.flush(30)

    stats = run_sink(sink_settings, ch)

    assert stats.inserted == 5 and stats.dead_lettered == 0
    rows = ch.query_rows("SELECT request_id, smoke FROM inference_telemetry FINAL ORDER BY request_id")
    assert rows == [{"request_id": "flagged", "smoke": True}, {"request_id": "from-v1",
                    "smoke": False}, {"request_id": "from-v3", "smoke": False}, {"request_id": "from-v4",
                    "smoke": False}, {"request_id": "live", "smoke": False}]
    served = ch.query_rows("SELECT request_id, row_index, prediction_id, row_key, prediction, prediction_value, "
                           "confidence, scores, numeric_values, categorical_values FROM inference_rows FINAL "
                           "WHERE request_id LIKE 'from-v%' ORDER BY request_id, row_index")
    for version in ("v3", "v4"):
        got = [r for r in served if r["request_id"] == f"from-{version}"]
        assert [(r["row_index"], r["prediction_id"], r["row_key"]) for r in got] == [
            (i, f"from-{version}:{i}", f"order-{i}") for i in range(2)], version
        assert [(r["prediction"], r["prediction_value"], r["confidence"], r["scores"], r["numeric_values"],
                 r["categorical_values"]) for r in got] == [
            (w["prediction"], w["prediction_value"], w["confidence"], w["scores"], w["numeric"], w["categorical"])
            for w in records], version


def _committed(settings, group: str) -> int:
    c = Consumer(consumer_config(settings.kafka, group))
    topic = settings.topic(INFERENCE_TELEMETRY)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    offs = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    c.close()
    return sum(max(o.offset, 0) for o in offs)


def test_sink_killed_between_insert_and_commit_restarts_without_duplicates(sink_settings, sink_env, ch):
    ids = produce(sink_settings, 400)
    group = f"sink-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "consumers.telemetry_sink", "--group", group, "--max-batch", "150",
           "--max-wait-s", "0.5", "--idle-timeout", "3"]

    crashed = subprocess.run(cmd, env={**sink_env, "MODELBUS_FAULT": "telemetry_sink.after_insert"},
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr[-2000:]                 # SIGKILL right after its first insert
    after_crash = counts(ch)["rows"]
    assert 0 < after_crash < 400
    assert _committed(sink_settings, group) == 0                            # Kafka never heard of that insert

    done = subprocess.run(cmd, env=sink_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert counts(ch) == {"rows": 400, "ids": 400, "final": 400}            # no duplicates even before merges
    assert {r["event_id"] for r in ch.query_rows("SELECT event_id FROM inference_telemetry")} == set(ids)
    assert ch.query_rows("SELECT sum(requests) AS n FROM telemetry_minute") == [{"n": 400}]
    assert _committed(sink_settings, group) == 400
