"""The telemetry sink and records it cannot store (issue 16, faults 2 and 6), on real tansu and ClickHouse.

The sink resumes from ClickHouse, not from Kafka commits, so a record it dead-letters must be recorded as
handled: otherwise each restart dead-letters it again, and a record whose dead letter is refused (about
1 MB and more) stopped ingestion on every partition for good.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.kafka import dlq as D
from infra.kafka import size
from infra.kafka.topics import INFERENCE_TELEMETRY, dlq_name

from .test_telemetry_sink import counts, produce, run_sink

pytestmark = pytest.mark.stack


def test_oversized_and_poison_records_are_skipped_once_and_never_stall_the_sink(sink_settings, ch, read_topic):
    s = sink_settings
    topic = s.topic(INFERENCE_TELEMETRY)
    foreign = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "message.max.bytes": 8_000_000})
    produce(s, 40)
    foreign.produce(topic, b"\xc3\x01" + b"\xee" * 5_000_000, b"k0")   # 5 MB of unknown framing
    foreign.produce(topic, b"\x00" + b"z" * 999_800, b"k0")           # fits alone, not with DLQ headers
    assert foreign.flush(30) == 0                                     # last records of their partition

    first = run_sink(s, ch, max_batch=64)
    assert first.dead_lettered == 2 and counts(ch)["rows"] == 40
    dlq = read_topic(s, dlq_name(topic), 2)
    assert len(dlq) == 2
    for m in dlq:
        h = dict(m.headers())
        assert h[D.H_REASON] == b"undecodable" and h[size.H_TRUNCATED] == b"true"
        assert size.record_size(m.value(), m.key(), h) <= s.kafka.max_message_bytes
    skipped = ch.query_rows("SELECT kafka_offset AS o, reason FROM telemetry_sink_skipped ORDER BY o")
    assert [r["o"] for r in skipped] == sorted(int(dict(m.headers())[D.H_OFFSET]) for m in dlq)

    # A restart resumes after the skipped records: nothing dead-lettered twice, later events stored.
    produce(s, 10)
    again = run_sink(s, ch, max_batch=64)
    assert again.dead_lettered == 0
    assert counts(ch)["final"] == 40 + 10
    assert len(read_topic(s, dlq_name(topic), 3, timeout=5)) == 2
