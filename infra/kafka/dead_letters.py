"""What the dead-letter topics hold: a count per topic and its latest records with their reasons.

Dead letters stay in Kafka, where they can be replayed; this module reads them
without joining a group or committing (like ``infra.kafka.reader``): the count is
the span of retained offsets, the latest records are read back from the end.
A record's reason, error and origin come from the ``modelbus.dlq.*`` headers
that ``infra.kafka.dlq`` writes, never from parsing its payload.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from infra.kafka import dlq as D
from infra.kafka.config import consumer_config
from infra.kafka.envelope import headers_dict
from infra.kafka.topics import DLQ_SUFFIX
from infra.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    time: datetime | None
    reason: str
    error: str
    error_type: str
    source: str            # '<topic>[<partition>]@<offset>' the record was refused at
    group: str
    size: int              # bytes of the value kept (0 when only its coordinates fitted)


@dataclass(frozen=True)
class DeadLetterTopic:
    topic: str
    count: int                                   # records retained on the topic
    latest: tuple[DeadLetter, ...] = field(default=())


def _text(headers: dict[str, bytes], key: str) -> str:
    return headers.get(key, b"").decode("utf-8", "replace")


def _letter(msg) -> DeadLetter:
    h = headers_dict(msg.headers())
    ms = _text(h, D.H_TIME)
    at = datetime.fromtimestamp(int(ms) / 1000, UTC) if ms.isdigit() else None
    source = f"{_text(h, D.H_TOPIC)}[{_text(h, D.H_PARTITION)}]@{_text(h, D.H_OFFSET)}"
    return DeadLetter(msg.topic(), msg.partition(), msg.offset(), at, _text(h, D.H_REASON), _text(h, D.H_ERROR),
                      _text(h, D.H_ERROR_TYPE), source, _text(h, D.H_GROUP), len(msg.value() or b""))


def dead_letters(settings: Settings, *, latest: int = 5, timeout: float = 10.0) -> list[DeadLetterTopic]:
    """Every dead-letter topic of this deployment (its prefix), busiest first, with its ``latest`` records."""
    consumer = Consumer(consumer_config(settings.kafka, f"modelbus-dlq-view-{uuid.uuid4().hex[:8]}"))
    try:
        names = sorted(t for t in consumer.list_topics(timeout=timeout).topics
                       if t.endswith(DLQ_SUFFIX) and t.startswith(settings.kafka.topic_prefix + "."))
        out = []
        for name in names:
            out.append(_read_topic(consumer, name, latest, timeout))
        return sorted(out, key=lambda t: (-t.count, t.topic))
    finally:
        consumer.close()


def _read_topic(consumer: Consumer, topic: str, latest: int, timeout: float) -> DeadLetterTopic:
    """Reads from ``latest`` records before the high watermark to the real end.

    The end is where fetches stop returning records, not the watermark alone: the
    embedded broker (tansu) can report a high watermark below the last offset of a
    multi-record batch, so the watermark is a starting point and the count is taken
    from the last offset actually read.
    """
    meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
    count, letters = 0, []
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        if high <= low:          # the watermarks say empty: counted as empty, not read
            continue
        start = max(low, high - latest)
        consumer.assign([TopicPartition(topic, p, start)])
        tail: deque = deque(maxlen=latest)
        batch = consumer.consume(max(latest, 1), timeout)
        while batch:
            tail.extend(m for m in batch if m.error() is None)
            batch = consumer.consume(max(latest, 100), 0.5)
        consumer.unassign()
        end = max(high, tail[-1].offset() + 1) if tail else high
        count += end - low
        letters += [_letter(m) for m in tail]
    letters.sort(key=lambda d: (d.time or datetime.min.replace(tzinfo=UTC), d.offset), reverse=True)
    return DeadLetterTopic(topic, count, tuple(letters[:latest]))
