"""CloudEvents 1.0 Kafka headers (protocol binding, binary content mode) on every record ModelBus writes.

The value stays the self-describing Avro single-object (or Confluent-framed)
event, so no ModelBus reader needs these headers; they let tools that did not
come with ModelBus route and filter without decoding: ``ce_type`` is the
event's Avro full name (``modelbus.events.DatasetCreated``), ``ce_id`` its
header's ``event_id``, ``ce_source`` ``/modelbus/<header.producer>``,
``ce_time`` its ``event_time`` in RFC 3339, ``content-type`` the data's media
type ``application/avro``, and the extension ``ce_avrofingerprint`` the writer
schema's CRC-64-AVRO fingerprint as 16 hex digits of its little-endian bytes
(the same 8 bytes the single-object header carries).

A dead letter is an event of its own: ``ce_type`` ``modelbus.deadletter``,
``ce_source`` ``/modelbus/<consumer group>``, a ``ce_id`` derived from the
source coordinates (the same record dead-lettered twice keeps one id), and the
original's ``ce_id`` / ``ce_type`` as ``ce_originalid`` / ``ce_originaltype``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any, Mapping

from schemas.catalog import NAMESPACE, EventSchema
from schemas.codec import HEADER_LEN, SINGLE_OBJECT_MAGIC

SPECVERSION = "1.0"
CONTENT_TYPE = "application/avro"
OPAQUE_CONTENT_TYPE = "application/octet-stream"   # a dead letter whose bytes nobody could read
DEAD_LETTER_TYPE = "modelbus.deadletter"

H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_TYPE = "ce_type"
H_SOURCE = "ce_source"
H_TIME = "ce_time"
H_CONTENT_TYPE = "content-type"
H_FINGERPRINT = "ce_avrofingerprint"
H_ORIGINAL_ID = "ce_originalid"
H_ORIGINAL_TYPE = "ce_originaltype"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DLQ_IDS = uuid.UUID("6f0e3b52-3c1a-4d7e-9a55-0c8f5b8e2d41")   # uuid5 namespace of dead-letter ids
_CONSTANT: dict[bytes, dict[str, bytes]] = {}   # per writer schema fingerprint: the headers that never change


def event_type_name(event: str) -> str:
    return f"{NAMESPACE}.{event}"


def rfc3339(when: int | dt.datetime) -> str:
    """An event_time (µs since the epoch, or a datetime) as RFC 3339 in UTC."""
    if not isinstance(when, dt.datetime):
        when = _EPOCH + dt.timedelta(microseconds=int(when))
    elif when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_headers(schema: EventSchema, value: Mapping[str, Any]) -> dict[str, bytes]:
    """The binary-mode headers of one event (``value`` already passed the codec's checks)."""
    constant = _CONSTANT.get(schema.fingerprint)
    if constant is None:
        constant = _CONSTANT[schema.fingerprint] = {
            H_SPECVERSION: SPECVERSION.encode(), H_TYPE: event_type_name(schema.name).encode(),
            H_CONTENT_TYPE: CONTENT_TYPE.encode(), H_FINGERPRINT: schema.fingerprint.hex().encode()}
    header = value["header"]
    return {**constant, H_ID: str(header["event_id"]).encode(),
            H_SOURCE: f"/modelbus/{header['producer']}".encode(), H_TIME: rfc3339(header["event_time"]).encode()}


def dead_letter_headers(original: dict[str, bytes] | None, value: bytes | None, *, group: str, topic: str,
                        partition: int, offset: int) -> dict[str, bytes]:
    """The headers that make a dead-letter record a CloudEvent of its own, the original still reachable."""
    original = original or {}
    out = {
        H_SPECVERSION: SPECVERSION.encode(),
        H_ID: str(uuid.uuid5(_DLQ_IDS, f"{group}/{topic}/{partition}/{offset}")).encode(),
        H_TYPE: DEAD_LETTER_TYPE.encode(),
        H_SOURCE: f"/modelbus/{group}".encode(),
        H_TIME: rfc3339(time.time_ns() // 1000).encode(),
        H_CONTENT_TYPE: original.get(H_CONTENT_TYPE) or OPAQUE_CONTENT_TYPE.encode(),
    }
    if H_ID in original:
        out[H_ORIGINAL_ID] = original[H_ID]
    if H_TYPE in original:
        out[H_ORIGINAL_TYPE] = original[H_TYPE]
    fingerprint = original.get(H_FINGERPRINT)
    if fingerprint is None and value is not None and value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= HEADER_LEN:
        fingerprint = bytes(value[2:HEADER_LEN]).hex().encode()   # what the body names, read or not
    if fingerprint is not None:
        out[H_FINGERPRINT] = fingerprint
    return out
