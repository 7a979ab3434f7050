"""Round-trips, framing, interoperability with the Apache avro library, and codec failures."""

from __future__ import annotations

import io
import json

import avro.errors
import avro.io
import avro.schema
import pytest

from schemas import EVENTS, AvroCodec, SerializationError, catalog
from schemas.codec import SINGLE_OBJECT_MAGIC
from tests.event_samples import apache_schema, apache_single_object
from tests.event_samples import normalize as _normalize
from tests.event_samples import samples as _sample


@pytest.mark.parametrize("name", EVENTS)
def test_every_event_round_trips(name):
    codec = AvroCodec()
    for rec in _sample(name):
        data = codec.encode(name, rec)
        assert data[:2] == SINGLE_OBJECT_MAGIC
        assert data[2:10] == catalog().get(name).fingerprint
        decoded = codec.decode(data)
        assert decoded.event_type == name
        assert _normalize(decoded.value) == _normalize(rec)


@pytest.mark.parametrize("name", EVENTS)
def test_decodes_events_apache_avro_wrote_by_the_spec(name):
    """Interoperability: framed by hand from the spec (C3 01 + the Apache library's own fingerprint, whose
    bytes it returns little-endian) around a body written by the Apache library's binary encoder."""
    rec = _sample(name, 1)[0]
    decoded = AvroCodec().decode(apache_single_object(name, rec))
    assert decoded.event_type == name and not decoded.legacy_framing
    assert _normalize(decoded.value) == _normalize(rec)


def _published_schemas() -> dict[str, avro.schema.Schema]:
    """Every .avsc in schemas/avro parsed by the Apache library alone, each named type once (files reference
    each other by full name, so parse until every reference resolves)."""
    from avro.name import Names

    from schemas.catalog import AVRO_DIR

    names, parsed, pending = Names(), {}, sorted(AVRO_DIR.glob("*.avsc"))
    while pending:
        left = []
        for path in pending:
            known = dict(names.names)
            try:
                parsed[path.stem] = avro.schema.make_avsc_object(json.loads(path.read_text()), names)
            except avro.errors.SchemaParseException:
                names.names = known   # a failed parse leaves its own record name registered
                left.append(path)
        assert len(left) < len(pending), f"unresolvable references in {[p.name for p in left]}"
        pending = left
    return parsed


@pytest.mark.parametrize("name", EVENTS)
def test_apache_avro_decodes_what_modelbus_writes_from_the_published_avsc_alone(name):
    schema = _published_schemas()[f"modelbus.events.{name}"]
    rec = _sample(name, 1)[0]
    data = AvroCodec().encode(name, rec)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == apache_schema(name).fingerprint("CRC-64-AVRO")   # the spec's byte order
    body = io.BytesIO(data[10:])
    value = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(data) - 10
    assert _normalize(value) == _normalize(rec)


def test_fingerprint_is_crc64_of_the_spec_canonical_form():
    """Per the Avro spec, Parsing Canonical Form reduces primitives to their simple name (logical types
    dropped), as Java and fastavro do. (The Apache *Python* library keeps {"type":"string"}, so the interop
    tests above hand it the schemas without logical types.) Its hex digest lists the little-endian bytes."""
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    for name in EVENTS:
        es = catalog().get(name)
        pcf = to_parsing_canonical_form(es.expanded)
        assert "logicalType" not in pcf and '{"type":"string"}' not in pcf
        assert es.fingerprint == bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))


@pytest.mark.parametrize("bad", [
    b"",
    b"\xc3\x01\x00",                               # truncated header
    b"\xc3\x01" + b"\xff" * 8 + b"body",           # unknown fingerprint
    b"\x7fgarbage-bytes",                          # unknown magic
    b"\x00\x00\x00\x00\x07body",                   # Confluent framing without a registry
])
def test_undecodable_bytes_raise_serialization_error(bad):
    with pytest.raises(SerializationError):
        AvroCodec().decode(bad)


def test_corrupt_body_and_trailing_bytes_are_refused():
    codec = AvroCodec()
    good = codec.encode("DriftDetected", _sample("DriftDetected", 1)[0])
    with pytest.raises(SerializationError, match="corrupt|trailing"):
        codec.decode(good[:-3])
    with pytest.raises(SerializationError, match="trailing"):
        codec.decode(good + b"\x00\x00")


def test_encoding_a_wrong_record_wraps_the_codec_error():
    with pytest.raises(SerializationError) as info:
        AvroCodec().encode("DriftDetected", {"header": {}})
    assert info.value.__cause__ is not None


def test_expected_type_mismatch_is_refused():
    codec = AvroCodec()
    data = codec.encode("DriftDetected", _sample("DriftDetected", 1)[0])
    with pytest.raises(SerializationError, match="expected a ModelDeployed"):
        codec.decode(data, expected="ModelDeployed")


def test_confluent_framing_with_a_registry():
    # A fake registry: no Schema Registry server can run on this machine. The fake is confluent-kafka's
    # own in-memory MockSchemaRegistryClient; the framing and resolution code under test is ours.
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

    registry = MockSchemaRegistryClient({"url": "mock://"})
    writer = AvroCodec(registry_client=registry)
    rec = _sample("ModelDeployed", 1)[0]
    data = writer.encode("ModelDeployed", rec)
    assert data[:1] == b"\x00"
    reader = AvroCodec(registry_client=registry)  # a different process: resolves the id through the registry
    assert _normalize(reader.decode(data).value) == _normalize(rec)


def test_registry_framed_event_from_a_newer_producer_resolves_into_our_schema():
    # Fake registry as above. The newer producer's schema adds a field with a default, registered under
    # its full name as registries hold it; this process has never seen that schema.
    import io
    import json
    import struct

    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
    from fastavro import parse_schema, schemaless_writer

    from schemas.catalog import catalog

    current = catalog().current["ModelDeployed"]
    newer = json.loads(current.json)
    newer["name"] = f"{newer.get('namespace', 'modelbus.events')}.{newer['name'].rsplit('.', 1)[-1]}"
    newer["fields"] = [*newer["fields"], {"name": "canary_share", "type": "double", "default": 0.0}]
    registry = MockSchemaRegistryClient({"url": "mock://"})
    sid = registry.register_schema("modelbus.deploy.deployed-value", Schema(json.dumps(newer), "AVRO"))
    rec = _sample("ModelDeployed", 1)[0]
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(newer, _write_hint=False), dict(rec, canary_share=0.25))
    data = b"\x00" + struct.pack(">I", sid) + body.getvalue()

    decoded = AvroCodec(registry_client=registry).decode(data, expected="ModelDeployed")
    assert decoded.event_type == "ModelDeployed" and "canary_share" not in decoded.value
    assert _normalize(decoded.value) == _normalize(rec)
