"""The size policy on a real tansu broker (issue 16, fault 2).

A record of about 1 MB or more used to crash-loop every consumer: its dead-letter copy (the same bytes plus
headers) was refused with MSG_SIZE_TOO_LARGE, the runner died before committing, and met the record again
after each restart. The hand-made records below bypass EventProducer's own check, as a foreign or older
producer would.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.errors import EventTooLarge
from infra.kafka import ConsumerRunner, EventProducer, size
from infra.kafka import dlq as D
from infra.kafka.topics import MONITORING_DRIFT, dlq_name

from .conftest import committed, drift_event, read_all, wait_for

pytestmark = pytest.mark.stack

BIG, EDGE = 5_000_000, 999_800   # EDGE fits alone; its dead letter's headers used to push it past 1,000,000


def _foreign_producer(settings) -> Producer:
    return Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "message.max.bytes": 8_000_000})


def test_producer_refuses_an_event_over_the_limit_with_a_clear_error(isolated_settings):
    s = isolated_settings.with_overrides(kafka={"max_message_bytes": 50_000})
    producer = EventProducer(s, name="tests.size")
    event = {**drift_event(0), "feature": "x" * 60_000}
    with pytest.raises(EventTooLarge, match=r"is 60,[0-9]{3} bytes .* the limit is 50,000 \(kafka.max_message_bytes\)"):
        producer.send(s.topic(MONITORING_DRIFT), "DriftDetected", event, key="m")
    assert len(producer) == 0
    producer.send(s.topic(MONITORING_DRIFT), "DriftDetected", drift_event(1), key="m")   # the producer still works
    producer.flush(10)


def test_oversized_records_are_dead_lettered_truncated_and_the_runner_moves_on(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    seen: list[str] = []
    runner = ConsumerRunner(s, group_id="g-size", topics=[topic], handler=lambda env: seen.append(env.event_id),
                            name="size")
    good = [drift_event(i) for i in range(3)]
    foreign = _foreign_producer(s)
    codec_producer = EventProducer(s, name="tests")
    with runner_thread(runner) as rt:
        codec_producer.publish(topic, "DriftDetected", good[0], key="m")
        foreign.produce(topic, b"\xc3\x01" + b"x" * BIG, b"m", headers={"trace": b"t1"})
        foreign.produce(topic, codec_producer.serializer("DriftDetected")(good[1]) + b"\x00" * EDGE, b"m")
        assert foreign.flush(30) == 0
        codec_producer.publish(topic, "DriftDetected", good[2], key="m")
        assert wait_for(lambda: len(seen) == 2 and runner.stats.dead_lettered == 2, timeout=60), runner.stats
        assert rt.error is None and rt.thread.is_alive()
        assert wait_for(lambda: committed(s, "g-size", topic, s.kafka.default_partitions) == 4)
    assert seen == [good[0]["header"]["event_id"], good[2]["header"]["event_id"]]
    dead = read_all(s, dlq_name(topic), 2, timeout=30)
    assert len(dead) == 2
    for m, original in zip(sorted(dead, key=lambda m: int(dict(m.headers())[D.H_OFFSET])), (BIG + 2, None)):
        h = dict(m.headers())
        assert h[D.H_REASON] == b"oversized" and h[D.H_TOPIC] == topic.encode()
        assert h[size.H_TRUNCATED] == b"true"
        assert len(m.value()) + len(m.key()) + sum(len(k) + len(v) for k, v in h.items()) <= s.kafka.max_message_bytes
        if original is not None:
            assert int(h[size.H_ORIGINAL_SIZE]) == original and h["trace"] == b"t1"
            assert m.value()[:10] == b"\xc3\x01xxxxxxxx"   # a prefix of the original bytes


def test_a_dead_letter_that_does_not_fit_is_cut_to_fit():
    """Undecodable records just under the limit: the dead-letter headers must not push the copy over it."""
    headers = D.dlq_headers(reason="undecodable", error="x" * 5000, topic="t", partition=0, offset=7, group="g",
                            original={"a": b"b" * 100})
    value, key, out = size.fit_dead_letter(b"v" * EDGE, b"key", headers, 1_000_000)
    assert size.record_size(value, key, out) + size.RECORD_OVERHEAD <= 1_000_000
    assert value == b"v" * len(value) and len(value) > 990_000 and out[size.H_ORIGINAL_SIZE] == str(EDGE).encode()
    small, _, same = size.fit_dead_letter(b"v" * 10, b"key", headers, 1_000_000)
    assert small == b"v" * 10 and size.H_TRUNCATED not in same
