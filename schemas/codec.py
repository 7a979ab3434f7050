"""Avro wire format of ModelBus events.

Default framing is Avro *single-object encoding*: ``C3 01`` + the writer
schema's CRC-64-AVRO fingerprint (8 bytes, little-endian) + the Avro binary
body, so readers need no registry. Readers also accept the fingerprint in the
reversed byte order older ModelBus writers used (logged once per schema and
flagged on the decoded event, so consumers count it) until those events have
aged off the topics. With a Schema Registry configured, the
Confluent framing is used instead: ``00`` + schema id (4 bytes, big-endian) +
body. Readers accept both and resolve any known writer schema into the current
reader schema, so old and new producers coexist.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, cast

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import Catalog, EventSchema, catalog, event_schema

log = logging.getLogger("modelbus.schemas.codec")

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
HEADER_LEN = 10


class SerializationError(Exception):
    """Bytes could not be encoded or decoded as a ModelBus event (always raised ``from`` the codec error)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    event_type: str
    value: dict[str, Any]
    writer_version: int
    legacy_framing: bool = False   # the fingerprint came in the pre-spec (reversed) byte order


# Encoders take any mapping, so a builder's TypedDict (schemas/types.py) goes in as it is; decoders give dicts.
Serializer = Callable[[Mapping[str, Any]], bytes]
Deserializer = Callable[[bytes], Decoded]


_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The instants a reader can turn into a datetime (years 1..9999), in microseconds since the epoch.
_MIN_TIME_US, _MAX_TIME_US = -62135596800_000_000, 253402300799_999_999


def _check_header(event_type: str, record: Any) -> None:
    """fastavro writes any string into a ``uuid`` field and any long into a ``timestamp-micros`` one, but
    every reader parses them: refuse such a header at the writer, or the event is published and then
    dead-lettered by every consumer as a "corrupt body"."""
    try:
        header = record["header"]
        eid, when = header["event_id"], header["event_time"]
    except (KeyError, TypeError):
        return   # the schema check names what is missing
    if not isinstance(eid, uuid.UUID) and not (isinstance(eid, str) and _CANONICAL_UUID.fullmatch(eid)):
        try:   # the canonical form passes above cheaply (hot path); other spellings are parsed
            uuid.UUID(eid)
        except (TypeError, ValueError, AttributeError) as exc:
            shown = repr(eid) if len(repr(eid)) <= 80 else repr(eid)[:80] + "..."
            raise SerializationError(f"{event_type}: header.event_id {shown} is not a UUID") from exc
    if isinstance(when, int) and not _MIN_TIME_US <= when <= _MAX_TIME_US:
        raise SerializationError(f"{event_type}: header.event_time {when} is outside years 1-9999 "
                                 "(microseconds since the Unix epoch expected)")


class AvroCodec:
    """Encodes and decodes events; the hot path is two dict lookups and one fastavro call."""

    def __init__(self, cat: Catalog | None = None, registry_client: Any | None = None,
                 subject_for: Callable[[str], str] | None = None):
        self.catalog = cat or catalog()
        self._registry = registry_client
        self._subject_for = subject_for or (lambda event: f"modelbus.events.{event}")
        self._registry_ids: dict[str, int] = {}
        self._by_registry_id: dict[int, EventSchema] = {}
        self._legacy_logged: set[str] = set()

    # -- encoding -------------------------------------------------------
    def _prefix(self, schema: EventSchema) -> bytes:
        if self._registry is None:
            return SINGLE_OBJECT_MAGIC + schema.fingerprint
        sid = self._registry_ids.get(schema.name)
        if sid is None:
            from confluent_kafka.schema_registry import Schema

            try:
                sid = self._registry.register_schema(self._subject_for(schema.name), Schema(schema.json, "AVRO"))
            except Exception as exc:
                raise SerializationError(f"cannot register schema of {schema.name}: {exc}") from exc
            self._registry_ids[schema.name] = sid
            self._by_registry_id[sid] = schema
        return CONFLUENT_MAGIC + struct.pack(">I", sid)

    def serializer(self, event_type: str) -> Serializer:
        """A small callable that encodes records of one event type."""
        schema = self.catalog.get(event_type)
        parsed = schema.parsed
        prefix = self._prefix(schema)

        def serialize(record: Mapping[str, Any]) -> bytes:
            _check_header(event_type, record)
            buf = io.BytesIO()
            buf.write(prefix)
            try:
                schemaless_writer(buf, parsed, record)
            except Exception as exc:
                raise SerializationError(f"{event_type}: record does not match the schema: {exc}") from exc
            return buf.getvalue()

        return serialize

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        return self.serializer(event_type)(record)

    # -- decoding -------------------------------------------------------
    def writer_of(self, data: bytes | None) -> EventSchema:
        """The writer schema named by the framing; raises SerializationError for unknown ones."""
        return self.framing_of(data)[0]

    def framing_of(self, data: bytes | None) -> tuple[EventSchema, bool]:
        """(writer schema, whether its fingerprint came in the legacy reversed byte order); a tombstone (None)
        or anything shorter than a header raises SerializationError."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 5:
            raise SerializationError("message too short to be a ModelBus event")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < HEADER_LEN:
                raise SerializationError("truncated single-object header")
            fp = bytes(data[2:HEADER_LEN])
            schema = self.catalog.by_fingerprint.get(fp)
            if schema is not None:
                return schema, False
            schema = self.catalog.by_legacy_fingerprint.get(fp)
            if schema is None:
                raise SerializationError(f"unknown schema fingerprint {fp.hex()}")
            self._note_legacy(schema)
            return schema, True
        if data[:1] == CONFLUENT_MAGIC:
            sid = struct.unpack(">I", bytes(data[1:5]))[0]
            return self._schema_for_registry_id(sid), False
        raise SerializationError(f"unknown framing magic {bytes(data[:2]).hex()}")

    def _note_legacy(self, schema: EventSchema) -> None:
        key = f"{schema.name} v{schema.version}"
        if key not in self._legacy_logged:
            self._legacy_logged.add(key)
            log.warning("%s arrived with its fingerprint in the legacy byte order (%s); decoded. Writers that "
                        "follow the Avro spec write %s", key, schema.fingerprint[::-1].hex(), schema.fingerprint.hex())

    def _schema_for_registry_id(self, sid: int) -> EventSchema:
        schema = self._by_registry_id.get(sid)
        if schema is not None:
            return schema
        if self._registry is None:
            raise SerializationError(f"Confluent-framed message (schema id {sid}) but no schema registry is configured")
        try:
            reg = self._registry.get_schema(sid)
            expanded = json.loads(reg.schema_str)
        except Exception as exc:
            raise SerializationError(f"schema id {sid} not found in the registry: {exc}") from exc
        from schemas.catalog import fingerprint_of

        known = self.catalog.by_fingerprint.get(fingerprint_of(expanded))
        if known is None:   # a newer (or older) producer's schema: resolved against ours by its short name
            name = str(expanded.get("name", "?")).rsplit(".", 1)[-1]
            known = event_schema(name, 0, expanded)
        self._by_registry_id[sid] = known
        return known

    def decode(self, data: bytes | None, expected: str | None = None) -> Decoded:
        writer, legacy = self.framing_of(data)
        assert data is not None   # framing_of refused a tombstone
        if expected is not None and writer.name != expected:
            raise SerializationError(f"expected a {expected} event, got {writer.name}")
        reader = self.catalog.current.get(writer.name)
        if reader is None:
            raise SerializationError(f"writer schema {writer.name} is not a known event type")
        offset = HEADER_LEN if data[:1] == b"\xc3" else 5
        buf = io.BytesIO(data)
        buf.seek(offset)
        try:
            if reader is writer:
                value = schemaless_reader(buf, writer.parsed, None)
            else:
                value = schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:
            raise SerializationError(f"corrupt {writer.name} body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise SerializationError(f"{writer.name}: {len(data) - buf.tell()} trailing bytes after the record")
        return Decoded(writer.name, cast(dict[str, Any], value), writer.version, legacy)   # a record decodes to a dict

    def deserializer(self, expected: str | None = None) -> Deserializer:
        return lambda data: self.decode(data, expected)
