"""Avro containers assembled from encoded event bodies, checked with an independent reader (fastavro)."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.avro_container import ContainerWriter, avro_string, extend_schema, zigzag
from consumers.telemetry_sink import SINK_FIELDS
from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable, is_transient
from schemas import AvroCodec
from schemas.catalog import catalog
from schemas.codec import HEADER_LEN
from schemas.events import new_header, now_us


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_zigzag_matches_the_avro_long_encoding(n):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, {"type": "long"}, n)
    assert zigzag(n) == buf.getvalue()


def test_bodies_plus_appended_fields_form_a_valid_container():
    schema = catalog().get("InferenceTelemetry")
    codec = AvroCodec()
    values = []
    for i in range(5):
        t = now_us()
        values.append({"header": new_header("t"), "request_id": f"r{i}", "model_name": "m", "model_version": 1,
                       "received_at": t, "completed_at": t, "latency_us": i, "batch_size": 1,
                       "stage_latency_us": {"model": i}, "error": None if i else "boom"})
    wire = [codec.encode("InferenceTelemetry", v) for v in values]
    body = b"".join(w[HEADER_LEN:] + avro_string("topic.x") + zigzag(i % 2) + zigzag(1000 + i)
                    for i, w in enumerate(wire))
    data = ContainerWriter(extend_schema(schema.expanded, SINK_FIELDS)).container(len(wire), body)

    records = list(fastavro.reader(io.BytesIO(data)))
    assert [r["request_id"] for r in records] == [f"r{i}" for i in range(5)]
    assert [(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) for r in records] == [
        ("topic.x", i % 2, 1000 + i) for i in range(5)]
    assert records[0]["error"] == "boom" and records[3]["stage_latency_us"] == {"model": 3}


def test_extending_with_an_existing_field_name_is_refused():
    with pytest.raises(ValueError, match="already exist"):
        extend_schema(catalog().get("InferenceTelemetry").expanded, [{"name": "model_name", "type": "string"}])


def test_only_server_state_errors_are_transient():
    assert is_transient(ClickHouseUnavailable("down"))
    assert is_transient(ClickHouseError("Code: 241. DB::Exception: memory", 241))
    assert not is_transient(ClickHouseError("Code: 27. DB::Exception: cannot parse", 27))
    assert not is_transient(ValueError("x"))
