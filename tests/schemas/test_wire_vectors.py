"""The published wire vectors hold for an independent implementation, and the legacy byte order still reads."""

from __future__ import annotations

import logging

import avro.schema
import pytest

from schemas import EVENTS, AvroCodec, catalog
from schemas.catalog import fingerprint_of
from schemas.codec import SINGLE_OBJECT_MAGIC
from schemas.events import new_header
from schemas.vectors import vectors
from tests.event_samples import legacy_framed


def test_the_avro_specs_own_vector():
    assert fingerprint_of("null") == bytes.fromhex("8a8f25cce724dd63")
    (spec,) = [v for v in vectors() if v.version is None]
    assert spec.as_int == 7195948357588979594 and spec.fingerprint == bytes.fromhex("8a8f25cce724dd63")


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: f"{v.name}-v{v.version}")
def test_each_vector_matches_the_apache_avro_library(vector):
    """Parsing Canonical Forms are their own canonical form, and the Apache library's CRC-64-AVRO of each
    (returned as its little-endian bytes) is the published fingerprint, both as bytes and as the integer."""
    parsed = avro.schema.parse(vector.canonical_form)
    assert parsed.canonical_form == vector.canonical_form
    assert parsed.fingerprint("CRC-64-AVRO") == vector.fingerprint
    assert int.from_bytes(parsed.fingerprint("CRC-64-AVRO"), "little") == vector.as_int


def test_every_event_has_a_vector_for_its_current_schema():
    published = {(v.name, v.fingerprint) for v in vectors()}
    assert {(n, catalog().get(n).fingerprint) for n in EVENTS} <= published


def test_the_page_publishes_every_vector():
    from infra.app.docs import WIRE_VECTORS

    page = WIRE_VECTORS.read_text()
    for v in vectors():
        assert f"| {v.as_int} | `{' '.join(f'{b:02x}' for b in v.fingerprint)}` |" in page
        assert v.canonical_form in page


def test_legacy_and_spec_fingerprints_never_collide():
    cat = catalog()
    assert not set(cat.by_fingerprint) & set(cat.by_legacy_fingerprint)


def _drift() -> dict:
    return {"header": new_header("tests"), "model_name": "m", "model_version": 1, "feature": "f",
            "window_start": 1, "window_end": 2, "psi": 0.5, "test": "ks", "statistic": 0.1, "p_value": 0.5,
            "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 10}


def test_legacy_order_decodes_flagged_and_logged_once_per_schema(caplog):
    codec = AvroCodec()
    events = [_drift() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="modelbus.schemas.codec"):
        decoded = [codec.decode(legacy_framed("DriftDetected", e)) for e in events]
    assert [str(d.value["header"]["event_id"]) for d in decoded] == [e["header"]["event_id"] for e in events]
    assert all(d.legacy_framing and d.event_type == "DriftDetected" for d in decoded)
    assert len([r for r in caplog.records if "legacy byte order" in r.getMessage()]) == 1
    written = codec.encode("DriftDetected", _drift())
    assert written[:10] == SINGLE_OBJECT_MAGIC + catalog().get("DriftDetected").fingerprint   # writers: spec order
    assert not codec.decode(written).legacy_framing
