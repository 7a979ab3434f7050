"""Avro object containers built from already-encoded records, without decoding them.

An Avro record is the concatenation of its fields' encodings, so appending the
encodings of extra trailing fields to a record body yields a valid record of the
writer schema extended with those fields. A container is then a header (magic,
metadata map with the schema, sync marker) plus one block (count, size, bytes,
sync). ClickHouse reads such a container natively (``FORMAT Avro``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

MAGIC = b"Obj\x01"


def zigzag(n: int) -> bytes:
    """Avro ``long``/``int`` encoding: zigzag, then little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(s: str) -> bytes:
    data = s.encode("utf-8")
    return zigzag(len(data)) + data


def extend_schema(schema: dict[str, Any], extra_fields: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The writer schema with fields appended at the end (names must be new)."""
    extra = list(extra_fields)
    names = {f["name"] for f in schema["fields"]}
    clash = [f["name"] for f in extra if f["name"] in names]
    if clash:
        raise ValueError(f"fields {clash} already exist in {schema.get('name')}")
    return {**schema, "fields": [*schema["fields"], *extra]}


class ContainerWriter:
    """Header bytes for one schema, computed once; ``container(records)`` wraps a block of bodies."""

    def __init__(self, schema: dict[str, Any]):
        self.schema_json = json.dumps(schema, separators=(",", ":"))
        self.sync = os.urandom(16)
        meta = {"avro.schema": self.schema_json.encode(), "avro.codec": b"null"}
        parts = [MAGIC, zigzag(len(meta))]
        for key, value in meta.items():
            parts += [avro_string(key), zigzag(len(value)), value]
        parts += [b"\x00", self.sync]
        self.header = b"".join(parts)

    def container(self, count: int, body: bytes | bytearray | memoryview) -> bytes:
        """One complete container holding ``count`` records whose encodings are ``body``."""
        return b"".join((self.header, zigzag(count), zigzag(len(body)), body, self.sync))
