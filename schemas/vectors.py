"""Test vectors of the wire format, published in ``docs/wire-vectors.md`` (rendered by ``infra/app/docs.py``).

An implementation that did not come with ModelBus checks itself against these:
each catalogued schema's Parsing Canonical Form, and its CRC-64-AVRO
fingerprint as the unsigned 64-bit integer and as the 8 little-endian bytes a
single-object encoded event carries after ``C3 01``. The Avro spec's own vector
(``"null"``) comes first, so a reader can tell a byte-order slip from a
canonical-form one.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import EVENTS, Catalog, catalog, fingerprint_of


@dataclass(frozen=True)
class Vector:
    name: str
    version: int | None        # None: not an event (the spec's vector)
    canonical_form: str
    fingerprint: bytes         # little-endian, as on the wire

    @property
    def as_int(self) -> int:
        return int.from_bytes(self.fingerprint, "little")


def vectors(cat: Catalog | None = None) -> list[Vector]:
    """The spec's ``"null"``, then every released and current version of every event, in loop order."""
    cat = cat or catalog()
    out = [Vector('"null"', None, '"null"', fingerprint_of("null"))]
    for name in EVENTS:
        versions = {v.version: v for v in (*cat.history[name], cat.current[name])}
        for v in sorted(versions.values(), key=lambda v: v.version):
            out.append(Vector(name, v.version, to_parsing_canonical_form(v.expanded), v.fingerprint))
    return out
