"""The TypedDicts of schemas/types.py agree with the .avsc files, and values on both sides of the codec fit them.

A schema changed without ``python -m schemas.typegen`` fails here (the committed module differs from the
generator's output), and so does a hand edit of the module (its keys or their required-ness differ from the
schema's fields and defaults). Decoded values are checked against the classes' value types as well: they are
what handlers get from ``Envelope.typed``.
"""

from __future__ import annotations

import json
import shutil
import types as pytypes
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from schemas import EVENTS, AvroCodec
from schemas import types as event_types
from schemas.catalog import AVRO_DIR, load_expanded, schema_path
from schemas.events import new_header
from schemas.typegen import TARGET, key_mismatches, main, render, render_dir
from tests.event_samples import samples


def records_in(schema: Any) -> list[dict[str, Any]]:
    """Every record schema inside an expanded schema, the outer one first."""
    if isinstance(schema, list):
        return [r for s in schema for r in records_in(s)]
    if not isinstance(schema, dict):
        return []
    if schema.get("type") == "record":
        return [schema] + [r for f in schema["fields"] for r in records_in(f["type"])]
    return records_in(schema.get("items")) + records_in(schema.get("values")) + records_in(schema.get("type"))


def mismatches(value: Any, hint: Any, where: str = "value") -> list[str]:
    """Where ``value`` does not fit the type ``hint`` (the subset of typing that schemas/types.py uses)."""
    if is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a {hint.__name__} dict"]
        hints = get_type_hints(hint)
        out = [f"{where}: missing {k!r}" for k in hint.__required_keys__ - value.keys()]
        out += [f"{where}: unknown key {k!r}" for k in value.keys() - hints.keys()]
        return out + [p for k in value.keys() & hints.keys() for p in mismatches(value[k], hints[k], f"{where}.{k}")]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, pytypes.UnionType):
        fits = [mismatches(value, a, where) for a in args]
        return [] if any(not f for f in fits) else [f"{where}: {value!r} fits none of {hint}"]
    if origin is list:
        return [f"{where}: not a list"] if not isinstance(value, list) else \
            [p for i, v in enumerate(value) for p in mismatches(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: not a dict"]
        return [p for k, v in value.items()
                for p in mismatches(k, str, f"{where} key") + mismatches(v, args[1], f"{where}[{k}]")]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} not one of {args}"]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    accepted = (int, float) if hint is float else hint   # a double takes an int, as mypy's float does
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, accepted):
        return [f"{where}: {type(value).__name__} {value!r}, not {hint.__name__}"]
    return []


def load_source(source: str) -> dict[str, Any]:
    """Runs generated source as its own module would: without this file's ``from __future__`` import."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<generated types>", "exec", dont_inherit=True), namespace)
    return namespace


# -- (a) the committed module is the generator's output ---------------------------------------------------------

def test_committed_types_module_is_what_the_generator_writes():
    assert TARGET.read_text() == render_dir(), "schemas/types.py is stale: run `python -m schemas.typegen`"
    assert main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_module(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "types.py"
    stale.write_text(TARGET.read_text().replace("    producer: str", "    producer: int"))
    monkeypatch.setattr("schemas.typegen.TARGET", stale)
    assert main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert "producer: int" in stale.read_text(), "--check writes nothing"


# -- (b) keys and their required-ness match each schema's fields and defaults ----------------------------------

def test_every_event_has_its_class():
    assert list(event_types.EVENT_TYPES) == list(EVENTS)


@pytest.mark.parametrize("name", EVENTS)
def test_class_keys_are_the_schema_fields(name):
    expanded = load_expanded(schema_path(name))
    for record in records_in(expanded):   # the event and every named record it uses
        cls = getattr(event_types, record["name"].rsplit(".", 1)[-1])
        assert key_mismatches(cls, record) == []
        assert list(get_type_hints(cls)) == [f["name"] for f in record["fields"]]


# -- (c) the checks can fail ---------------------------------------------------------------------------------

def _changed_copy(tmp_path, change) -> Any:
    avro = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, avro)
    path = schema_path("DatasetCreated", avro)
    schema = json.loads(path.read_text())
    change(schema["fields"])
    path.write_text(json.dumps(schema))
    return avro


def test_a_new_schema_field_changes_the_output_and_the_old_class_fails(tmp_path):
    avro = _changed_copy(tmp_path, lambda fields: fields.append(
        {"name": "owner", "type": "string", "doc": "Who pushed it."}))
    source = render_dir(avro)
    assert source != TARGET.read_text()
    assert "    owner: str  # Who pushed it." in source
    changed = load_expanded(schema_path("DatasetCreated", avro))
    assert key_mismatches(event_types.DatasetCreated, changed) == [
        "DatasetCreated: no key for schema field 'owner'"]
    assert key_mismatches(load_source(source)["DatasetCreated"], changed) == []


def test_a_new_default_makes_the_required_key_a_mismatch(tmp_path):
    def add_default(fields):
        next(f for f in fields if f["name"] == "checksum")["default"] = ""

    changed = load_expanded(schema_path("DatasetCreated", _changed_copy(tmp_path, add_default)))
    assert key_mismatches(event_types.DatasetCreated, changed) == [
        "DatasetCreated.checksum: has a default, so it should be NotRequired"]


def test_a_removed_field_is_an_extra_key(tmp_path):
    avro = _changed_copy(tmp_path, lambda fields: fields.remove(next(f for f in fields if f["name"] == "tags")))
    changed = load_expanded(schema_path("DatasetCreated", avro))
    assert key_mismatches(event_types.DatasetCreated, changed) == ["DatasetCreated: key 'tags' is not a schema field"]


def test_the_generator_refuses_what_it_cannot_type():
    record = {"type": "record", "name": "X", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    with pytest.raises(NotImplementedError, match="timestamp-millis"):
        render([record])
    with pytest.raises(ValueError, match="not a Python identifier"):
        render([{"type": "record", "name": "X", "fields": [{"name": "class", "type": "string"}]}])


def test_the_generated_module_maps_every_avro_kind():
    record = {"type": "record", "name": "Everything", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["red", "green"]}},
        {"name": "f", "type": {"type": "fixed", "name": "Eight", "size": 8}},
        {"name": "u", "type": ["null", "string", "long"], "default": None},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "float"}}},
        {"name": "b", "type": "bytes"}, {"name": "ok", "type": "boolean"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}
    source = render([record])   # a timestamp without a uuid: only the alias (and import) it needs
    assert "Uuid = " not in source and "import UUID" not in source and "TimestampMicros = " in source
    cls = load_source(source)["Everything"]
    assert get_type_hints(cls) == {"e": Literal["red", "green"], "f": bytes, "u": str | int | None,
                                   "m": dict[str, list[float]], "b": bytes, "ok": bool, "t": int | datetime}
    assert cls.__optional_keys__ == {"u"}


# -- (d) values on both sides of the codec fit the classes --------------------------------------------------

@pytest.mark.parametrize("name", EVENTS)
def test_samples_and_their_decoded_values_fit_the_class(name):
    codec, cls = AvroCodec(), event_types.EVENT_TYPES[name]
    for record in samples(name, 5):
        assert mismatches(record, cls) == []
        decoded = codec.decode(codec.encode(name, record)).value
        assert decoded.keys() == get_type_hints(cls).keys(), "a decoded value carries every field"
        assert mismatches(decoded, cls) == []


def test_logical_types_are_typed_as_both_their_written_and_decoded_forms():
    header = new_header("tests")
    assert mismatches(header, event_types.EventHeader) == []
    decoded = AvroCodec().decode(AvroCodec().encode("ServerMetrics", {"header": header, "server": "s",
                                                                       "samples": []})).value["header"]
    assert isinstance(decoded["event_id"], uuid.UUID) and isinstance(decoded["event_time"], datetime)
    assert mismatches(decoded, event_types.EventHeader) == []
    assert mismatches({**header, "event_time": datetime.now(UTC).date()}, event_types.EventHeader) != []


def test_the_value_check_can_fail():
    problems = mismatches({"name": "x"}, event_types.SliceMetrics)
    assert "value: missing 'column'" in problems and "value: unknown key 'name'" in problems
    bad = {"column": "c", "value": "v", "count": True, "metrics": {"auc": "high"}}
    assert sorted(mismatches(bad, event_types.SliceMetrics)) == [
        "value.count: bool True, not int", "value.metrics[auc]: str 'high', not float"]


def test_the_module_has_no_string_annotations():
    """Python 3.11 cannot tell NotRequired in a string annotation: every key would read as required."""
    assert not any(line.startswith("from __future__") for line in TARGET.read_text().splitlines())
    assert event_types.EventHeader.__optional_keys__ == {"parent_event_ids"}
