"""Garbage interleaved with valid events on a real tansu topic (issue #8).

One ConsumerRunner keeps running through every generated batch: each message the codec refuses lands in
``<topic>.dlq`` with its bytes, its headers and the error headers; each valid event reaches the handler
exactly once; and the runner thread is still alive after every batch. The faust path (EdgeDecoder) gets
the same property. Messages are classified by where they landed on the broker (delivery reports give
their partition and offset), never by their position in the batch.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka import dlq as D
from infra.kafka.config import consumer_config
from infra.kafka.topics import MONITORING_DRIFT, dlq_name
from schemas import AvroCodec, SerializationError, catalog
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC
from tests.fuzz_strategies import avro_values

from .conftest import drift_event, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]

CODEC = AvroCodec()
EXPECTED = "DriftDetected"
BROKER = settings(max_examples=6, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _valid() -> st.SearchStrategy[bytes]:
    return st.builds(lambda i, psi: CODEC.encode(EXPECTED, {**drift_event(i), "psi": psi}),
                     st.integers(0, 10**6), st.floats(allow_nan=False))


@st.composite
def _damaged(draw) -> bytes:
    good = draw(_valid())
    if draw(st.booleans()):
        return good[:draw(st.integers(0, len(good) - 1))]
    flipped = bytearray(good)
    for bit in draw(st.lists(st.integers(0, len(good) * 8 - 1), min_size=1, max_size=6)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


VALUES = st.one_of(
    _valid(), _valid(), _damaged(),
    st.binary(max_size=200), st.just(b""), st.none(),
    st.binary(min_size=8, max_size=60).map(lambda b: SINGLE_OBJECT_MAGIC + b),      # unknown fingerprint
    st.binary(min_size=4, max_size=60).map(lambda b: CONFLUENT_MAGIC + b),          # no registry here
    avro_values(catalog().get("ModelDeployed").expanded).map(                       # valid, wrong topic
        lambda v: CODEC.encode("ModelDeployed", v)),
)
MESSAGES = st.lists(st.tuples(VALUES, st.one_of(st.none(), st.binary(max_size=8)),
                              st.dictionaries(st.text("abcxyz", min_size=1, max_size=6), st.binary(max_size=12),
                                              max_size=2)),
                    min_size=1, max_size=25)


def routed_to_handler(value: bytes | None) -> bool:
    """The oracle is the codec itself: its correctness is test_fuzz_codec's job, the routing is ours."""
    try:
        return CODEC.decode(value).event_type == EXPECTED
    except SerializationError:
        return False


class DlqReader:
    """Reads the dead-letter topic from the start by assignment (no group join), accumulating records."""

    def __init__(self, settings_, topic: str):
        self.consumer = Consumer(consumer_config(settings_.kafka, f"dlq-{uuid.uuid4().hex[:8]}"))
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.by_source: dict[tuple[int, int], object] = {}

    def until(self, n: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while len(self.by_source) < n and time.monotonic() < deadline:
            for m in self.consumer.consume(100, 0.2):
                if m.error() is None:
                    h = dict(m.headers())
                    self.by_source[(int(h[D.H_PARTITION]), int(h[D.H_OFFSET]))] = m
        return self.by_source


def produce(producer: EventProducer, topic: str, messages) -> list[tuple[tuple[int, int], tuple]]:
    """Send every message; return ((partition, offset), message) from the broker's delivery reports."""
    landed: list = []
    for msg in messages:
        value, key, headers = msg
        producer.send_raw(topic, value, key, headers,
                          on_delivery=lambda err, m, msg=msg: landed.append((err, (m.partition(), m.offset()), msg)))
    producer.flush()
    assert len(landed) == len(messages) and [err for err, _, _ in landed if err is not None] == []
    return [(coords, msg) for _, coords, msg in landed]


def refusal(value: bytes | None) -> tuple[bytes, bytes]:
    """(reason, error type) a refused value must be dead-lettered with: a well-formed event of another type
    is unexpected on this topic, anything else is undecodable."""
    try:
        CODEC.decode(value)
    except SerializationError:
        return b"undecodable", b"SerializationError"
    return b"unexpected_type", b"UnexpectedType"


def check_dead_letter(dead, value, headers, topic: str, group: str) -> None:
    h = dict(dead.headers())
    assert (h[D.H_REASON], h[D.H_ERROR_TYPE]) == refusal(value)
    assert h[D.H_ERROR].strip() and h[D.H_TOPIC] == topic.encode() and h[D.H_GROUP] == group.encode()
    assert dead.value() == (value if value is not None else b"")   # the original bytes, kept as data
    assert all(h[k] == v for k, v in headers.items()), "original headers are kept"


@pytest.fixture
def fuzz_runner(isolated_settings, runner_thread):
    """One runner for every example of the test: it must survive all the garbage, batch after batch."""
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    handled: list[tuple[int, int]] = []
    runner = ConsumerRunner(s, group_id="g-fuzz", topics=[topic], name="fuzz", expected_types=[EXPECTED],
                            handler=lambda env: handled.append((env.partition, env.offset)))
    dlq = DlqReader(s, dlq_name(topic))
    with runner_thread(runner) as rt:
        yield SimpleNamespace(settings=s, topic=topic, runner=runner, thread=rt, handled=handled,
                              producer=EventProducer(s, name="tests.fuzz"), dlq=dlq, sent=0, dead=0)
    dlq.consumer.close()


@BROKER
@given(messages=MESSAGES)
def test_garbage_is_dead_lettered_and_valid_events_handled_once_by_a_live_runner(fuzz_runner, messages):
    f = fuzz_runner
    landed = produce(f.producer, f.topic, messages)
    f.sent += len(landed)
    good = {coords for coords, (value, _, _) in landed if routed_to_handler(value)}
    bad = {coords: msg for coords, msg in landed if coords not in good}
    f.dead += len(bad)
    assert wait_for(lambda: f.runner.handled >= f.sent), f"runner stuck at {f.runner.stats}, sent {f.sent}"
    assert f.thread.thread.is_alive() and f.thread.error is None
    assert good <= set(f.handled) and len(f.handled) == len(set(f.handled)), "each valid event exactly once"
    assert not set(bad) & set(f.handled), "garbage reached the handler"
    dead = f.dlq.until(f.dead)
    assert set(bad) <= set(dead)
    for coords, (value, _key, headers) in bad.items():
        check_dead_letter(dead[coords], value, headers, f.topic, "g-fuzz")
    assert f.runner.stats.dead_lettered == f.dead and f.runner.stats.processed == len(f.handled)


# -- the faust path: EdgeDecoder decodes raw events for the deployer and search agents ----------------------

@pytest.fixture(scope="module")
def edge(kafka_settings):
    """An EdgeDecoder with a real producer on the session broker, and a reader of its dead letters."""
    from infra.kafka.admin import ensure_topics
    from infra.kafka.faust_app import EdgeDecoder

    s = kafka_settings.with_overrides(kafka={"topic_prefix": f"edge{uuid.uuid4().hex[:8]}"})
    ensure_topics(s)
    topic = s.topic(MONITORING_DRIFT)
    dlq = DlqReader(s, dlq_name(topic))
    yield SimpleNamespace(decoder=EdgeDecoder(s, "edge-fuzz", expected_types={EXPECTED}), topic=topic, dlq=dlq,
                          dead={}, offsets=iter(range(10**9)))
    dlq.consumer.close()


def _faust_event(topic: str, offset: int, value, key, headers):
    """A faust event as agents receive it. faust's own Message; the event wrapper is a stand-in holding what
    EdgeDecoder reads (``.message`` and ``.value``), since a real faust Event needs a running app."""
    from faust.types.tuples import Message

    message = Message(topic, 0, offset, time.time(), 0, list(headers.items()), key, value, None)
    return SimpleNamespace(message=message, value=value)


@settings(max_examples=20, deadline=None)   # each dead letter is flushed before faust may commit: ~10 ms
@given(messages=MESSAGES)
def test_edge_decoder_dead_letters_garbage_and_decodes_the_rest(edge, messages):
    for value, key, headers in messages:
        offset = next(edge.offsets)
        env = edge.decoder.decode(_faust_event(edge.topic, offset, value, key, headers))
        if routed_to_handler(value):
            assert env is not None and env.offset == offset and env.event_type == EXPECTED
            assert env.event_id == str(CODEC.decode(value).value["header"]["event_id"])
        else:
            assert env is None
            edge.dead[offset] = (value, headers)
    assert edge.decoder.dead_lettered == len(edge.dead)
    got = edge.dlq.until(len(edge.dead))
    for offset, (value, headers) in edge.dead.items():
        check_dead_letter(got[(0, offset)], value, headers, edge.topic, "edge-fuzz")
