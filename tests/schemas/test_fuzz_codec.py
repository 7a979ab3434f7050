"""Hostile bytes at the decoding edge (issue #8): the codec either returns a record that is valid against
the reader schema or raises SerializationError, whatever arrives. Consumers rely on exactly that split to
dead-letter a message and keep consuming, so any other exception type here would crash a consumer.

Valid events are drawn from the catalogue's own schemas, so every event type (and any field added later)
is covered without a hand-written sample per event.
"""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from fastavro import schemaless_writer
from fastavro.validation import validate
from hypothesis import event, given, settings
from hypothesis import strategies as st

from schemas import EVENTS, AvroCodec, SerializationError, catalog
from schemas.codec import CONFLUENT_MAGIC, HEADER_LEN, SINGLE_OBJECT_MAGIC
from tests.fuzz_strategies import MAX_TIME_US, MIN_TIME_US, avro_values

pytestmark = pytest.mark.timeout(120)   # a decoder that loops on some input fails here instead of hanging

FUZZ = settings(max_examples=120, deadline=None)
CODEC = AvroCodec()
RECORDS = {name: avro_values(catalog().get(name).expanded) for name in EVENTS}


@st.composite
def encoded(draw) -> tuple[str, bytes]:
    """(event type, its single-object encoding) for a random valid record of a random event type."""
    name = draw(st.sampled_from(EVENTS))
    return name, CODEC.encode(name, draw(RECORDS[name]))


def refused_or_valid(data: bytes, codec: AvroCodec = CODEC):
    """The property every input must satisfy; returns the Decoded, or None when refused."""
    try:
        decoded = codec.decode(data)
    except SerializationError as exc:
        assert str(exc), "a refusal must say why (it becomes the DLQ error header)"
        event("refused")
        return None
    event("decoded")
    reader = catalog().current[decoded.event_type]
    assert validate(decoded.value, reader.parsed, raise_errors=True)
    uuid.UUID(str(decoded.value["header"]["event_id"]))   # what every consumer reads first
    return decoded


@FUZZ
@given(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: SINGLE_OBJECT_MAGIC + b),
    st.binary(max_size=300).map(lambda b: CONFLUENT_MAGIC + b),
    st.tuples(st.sampled_from(EVENTS), st.binary(max_size=300)).map(
        lambda t: SINGLE_OBJECT_MAGIC + catalog().get(t[0]).fingerprint + t[1]),   # known writer, random body
))
def test_random_bytes_are_refused_or_decode_to_a_valid_record(data):
    refused_or_valid(data)


@FUZZ
@given(sample=encoded())
def test_every_truncation_of_a_valid_event_is_refused(sample):
    name, data = sample
    assert CODEC.decode(data).event_type == name
    for cut in range(len(data)):
        with pytest.raises(SerializationError):
            CODEC.decode(data[:cut])


@FUZZ
@given(encoded(), st.binary(min_size=1, max_size=64))
def test_trailing_bytes_after_a_valid_event_are_refused(sample, tail):
    with pytest.raises(SerializationError, match="trailing bytes"):
        CODEC.decode(sample[1] + tail)


@FUZZ
@given(st.data())
def test_bit_flips_are_refused_or_decode_to_a_valid_record(data):
    name, good = data.draw(encoded())
    bits = data.draw(st.lists(st.integers(0, len(good) * 8 - 1), min_size=1, max_size=8, unique=True))
    flipped = bytearray(good)
    for b in bits:
        flipped[b // 8] ^= 1 << (b % 8)
    decoded = refused_or_valid(bytes(flipped))
    if decoded is not None and all(b // 8 >= HEADER_LEN for b in bits):
        assert decoded.event_type == name   # the framing names the writer; a body flip cannot change it


@FUZZ
@given(encoded(), st.binary(min_size=8, max_size=8).filter(lambda fp: fp not in catalog().by_fingerprint))
def test_unknown_fingerprints_are_refused_by_name(sample, fp):
    body = sample[1][HEADER_LEN:]
    with pytest.raises(SerializationError, match=f"unknown schema fingerprint {fp.hex()}"):
        CODEC.decode(SINGLE_OBJECT_MAGIC + fp + body)


@FUZZ
@given(encoded(), st.integers(0, 2**32 - 1))
def test_confluent_framing_without_a_registry_is_refused(sample, sid):
    data = CONFLUENT_MAGIC + struct.pack(">I", sid) + sample[1][HEADER_LEN:]
    with pytest.raises(SerializationError, match=f"schema id {sid}.*no schema registry"):
        CODEC.decode(data)


@pytest.fixture(scope="module")
def registry_codec():
    """A codec with a registry holding one registered schema. The registry is a fake: confluent-kafka's own
    in-memory MockSchemaRegistryClient (no Schema Registry server can run here); the codec under test is ours."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

    from schemas.events import new_header

    codec = AvroCodec(registry_client=MockSchemaRegistryClient({"url": "mock://"}))
    data = codec.encode("DriftDetected", {
        "header": new_header("tests"), "model_name": "m", "model_version": 1, "feature": "f", "window_start": 1,
        "window_end": 2, "psi": 0.1, "test": "ks", "statistic": 0.1, "p_value": 0.5, "psi_threshold": 0.2,
        "p_value_threshold": 0.01, "sample_size": 10})
    return codec, struct.unpack(">I", data[1:5])[0]


@FUZZ
@given(st.booleans(), st.integers(0, 2**32 - 1), st.binary(max_size=200))
def test_confluent_framing_with_unknown_ids_or_garbage_bodies(registry_codec, use_known, sid, body):
    codec, known_sid = registry_codec
    sid = known_sid if use_known else sid
    data = CONFLUENT_MAGIC + struct.pack(">I", sid) + body
    if sid != known_sid:
        with pytest.raises(SerializationError, match=f"schema id {sid} not found in the registry"):
            codec.decode(data)
    else:
        refused_or_valid(data, codec)


@FUZZ
@given(encoded(), st.sampled_from(EVENTS))
def test_an_event_of_another_type_is_refused_when_one_is_expected(sample, expected):
    name, data = sample
    if name == expected:
        assert CODEC.decode(data, expected=expected).event_type == name
    else:
        with pytest.raises(SerializationError, match=f"expected a {expected} event, got {name}"):
            CODEC.decode(data, expected=expected)


# -- schema-valid, semantically invalid: the header every consumer reads first --------------------------

def _unchecked_encoding(name: str, record: dict) -> bytes:
    """What another client (plain fastavro, no header check) would publish."""
    buf = io.BytesIO()
    schema = catalog().get(name)
    schemaless_writer(buf, schema.parsed, record)
    return SINGLE_OBJECT_MAGIC + schema.fingerprint + buf.getvalue()


def _not_a_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
        return False
    except ValueError:
        return True


HOSTILE_IDS = st.one_of(st.text(max_size=40), st.sampled_from(["", "1", "../../etc/passwd", "'; DROP TABLE x;--",
                                                                "00000000-0000-0000-0000-00000000000g"]))


def _refused_by_writer_and_readers(name: str, record: dict, match: str) -> None:
    """The codec's writer refuses ``record``, and bytes from a writer without that check fail every reader."""
    with pytest.raises(SerializationError, match=match):
        CODEC.encode(name, record)
    with pytest.raises(SerializationError):   # the premise: bytes from a writer without the check
        CODEC.decode(_unchecked_encoding(name, record))


@FUZZ
@given(st.sampled_from(EVENTS), st.data())
def test_writer_refuses_event_ids_that_every_reader_would_refuse(name, data):
    """fastavro writes any string into a ``uuid`` field and readers parse it: such an event would be
    published and then dead-lettered by every consumer. The codec refuses it at the writer instead."""
    record = data.draw(RECORDS[name])
    eid = data.draw(HOSTILE_IDS.filter(_not_a_uuid))
    record["header"]["event_id"] = eid
    _refused_by_writer_and_readers(name, record, "event_id .* is not a UUID")


@FUZZ
@given(st.sampled_from(EVENTS), st.data())
def test_writer_refuses_event_times_no_reader_can_represent(name, data):
    record = data.draw(RECORDS[name])
    record["header"]["event_time"] = data.draw(st.one_of(st.integers(MAX_TIME_US + 1, 2**63 - 1),
                                                         st.integers(-2**63, MIN_TIME_US - 1)))
    _refused_by_writer_and_readers(name, record, "event_time")


@FUZZ
@given(st.sampled_from(EVENTS), st.data())
def test_valid_headers_still_encode(name, data):
    """The writer checks refuse only what readers refuse: UUID objects and any representable time pass."""
    record = data.draw(RECORDS[name])
    record["header"]["event_id"] = data.draw(st.one_of(st.uuids(), st.uuids().map(str)))
    decoded = CODEC.decode(CODEC.encode(name, record))
    assert str(decoded.value["header"]["event_id"]) == str(record["header"]["event_id"])
