"""Valid records of every event type, and the conversions that compare them across Avro libraries."""

from __future__ import annotations

import io
import json
import uuid

import avro.io
import avro.schema
from fastavro.utils import generate_many

from schemas import catalog


def normalize(v):
    """fastavro decodes logical types (uuid → UUID, timestamp-micros → datetime); compare on the wire form."""
    import datetime as dt

    if isinstance(v, dict):
        return {k: normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.datetime):
        return (v - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return v


def samples(name: str, n: int = 5):
    """Random records valid for the schema, with a real uuid (generate_many makes arbitrary strings)."""
    out = []
    for rec in generate_many(catalog().get(name).expanded, n):
        rec["header"]["event_id"] = str(uuid.uuid4())
        rec["header"]["event_time"] = abs(rec["header"]["event_time"]) % (2**50)
        for k, v in list(rec.items()):
            if k in ("received_at", "completed_at", "window_start", "window_end", "observed_at"):
                rec[k] = abs(v) % (2**50)
        out.append(rec)
    return out


def for_apache(rec):
    """The Apache library validates logical types itself: give it datetimes for timestamp-micros."""
    import datetime as dt

    def conv(k, v):
        if k in ("event_time", "received_at", "completed_at", "window_start", "window_end", "observed_at") \
                and isinstance(v, int):
            return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=v)
        if isinstance(v, dict):
            return {kk: conv(kk, vv) for kk, vv in v.items()}
        return v

    return {k: conv(k, v) for k, v in rec.items()}


def apache_schema(name: str) -> avro.schema.Schema:
    """The Apache library's own parse of an event schema, logical types left out: its Python canonical form
    keeps {"type":"string","logicalType":...} where the spec (and Java, and fastavro) reduce it to "string",
    so without them its fingerprint is the spec's. The wire bytes are the same either way."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "logicalType"}
        return [strip(v) for v in o] if isinstance(o, list) else o

    return avro.schema.parse(json.dumps(strip(catalog().get(name).expanded)))


def apache_single_object(name: str, rec: dict) -> bytes:
    """``rec`` single-object encoded by hand from the spec with the Apache library: ``C3 01``, its own
    CRC-64-AVRO fingerprint (which it returns as the little-endian bytes), its binary encoder's body."""
    buf = io.BytesIO()
    schema = avro.schema.parse(json.dumps(catalog().get(name).expanded))
    avro.io.DatumWriter(schema).write(for_apache(rec), avro.io.BinaryEncoder(buf))
    return b"\xc3\x01" + apache_schema(name).fingerprint("CRC-64-AVRO") + buf.getvalue()


def legacy_framed(event_type: str, record: dict) -> bytes:
    """The bytes an older ModelBus writer put on a topic: the fingerprint's bytes reversed."""
    from schemas import AvroCodec

    data = AvroCodec().encode(event_type, record)
    return data[:2] + data[2:10][::-1] + data[10:]
