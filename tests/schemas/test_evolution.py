"""Evolution guard: every released schema version stays backward- and forward-compatible with the current one."""

from __future__ import annotations

import copy
import json

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse

from schemas import EVENTS, catalog
from schemas.catalog import HISTORY_DIR, fingerprint_of


def _compatible(reader: dict, writer: dict) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(parse(json.dumps(reader)), parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


def check_pair(old: dict, new: dict) -> list[str]:
    problems = []
    if not _compatible(new, old):
        problems.append("backward: the new reader cannot read data written with the old schema")
    if not _compatible(old, new):
        problems.append("forward: an old reader cannot read data written with the new schema")
    return problems


@pytest.mark.parametrize("name", EVENTS)
def test_every_released_version_is_kept(name):
    released = catalog().history[name]
    assert released, f"{name} has no released version under {HISTORY_DIR / name}"
    assert catalog().get(name).fingerprint in {v.fingerprint for v in released}, (
        f"{name}: the current schema is not released; run `python -m schemas.release` after checking compatibility")


@pytest.mark.parametrize("name", EVENTS)
def test_current_schema_is_compatible_with_every_released_version(name):
    current = catalog().get(name).expanded
    for old in catalog().history[name]:
        assert check_pair(old.expanded, current) == [], f"{name} v{old.version}"


def _with_field(schema: dict, field: dict) -> dict:
    s = copy.deepcopy(schema)
    s["fields"].append(field)
    return s


def test_guard_catches_a_field_added_without_default():
    current = catalog().get("ModelRegistered").expanded
    broken = _with_field(current, {"name": "owner", "type": "string"})
    assert any(p.startswith("backward") for p in check_pair(current, broken))


def test_guard_catches_a_removed_field_without_default():
    current = catalog().get("ModelRegistered").expanded
    broken = copy.deepcopy(current)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "run_id"]
    assert any(p.startswith("forward") for p in check_pair(current, broken))


def test_guard_catches_a_type_change():
    current = catalog().get("InferenceTelemetry").expanded
    broken = copy.deepcopy(current)
    for f in broken["fields"]:
        if f["name"] == "latency_us":
            f["type"] = "string"
    assert check_pair(current, broken)


def test_guard_accepts_an_optional_field_with_default():
    current = catalog().get("ModelRegistered").expanded
    evolved = _with_field(current, {"name": "owner", "type": ["null", "string"], "default": None})
    assert check_pair(current, evolved) == []
    assert fingerprint_of(evolved) != fingerprint_of(current)


def test_old_writer_resolves_into_new_reader_on_the_wire():
    """Data written with an older schema decodes through the codec into the current shape (with defaults)."""
    import io
    import uuid

    from fastavro import parse_schema, schemaless_writer

    from schemas import AvroCodec
    from schemas.catalog import Catalog, EventSchema
    from schemas.codec import SINGLE_OBJECT_MAGIC

    current = catalog().get("DriftDetected").expanded
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] != "action"]   # 'action' has a default
    cat = Catalog()
    old_es = EventSchema("DriftDetected", 0, old, parse_schema(old, _write_hint=False), fingerprint_of(old))
    cat.by_fingerprint[old_es.fingerprint] = old_es
    rec = {"header": {"event_id": str(uuid.uuid4()), "event_time": 1, "producer": "p", "correlation_id": "c",
                      "parent_event_ids": []},
           "model_name": "m", "model_version": 1, "feature": "f", "window_start": 1, "window_end": 2, "psi": 0.3,
           "test": "ks", "statistic": 0.2, "p_value": 0.001, "psi_threshold": 0.2, "p_value_threshold": 0.01,
           "sample_size": 10}
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + old_es.fingerprint)
    schemaless_writer(buf, old_es.parsed, rec)
    decoded = AvroCodec(cat).decode(buf.getvalue())
    assert decoded.value["action"] == "none" and decoded.value["psi"] == 0.3
