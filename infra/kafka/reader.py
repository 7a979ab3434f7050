"""The one topic reader for followers and watchers (``train --wait``, the demo watcher, the deployer's
scan of its earlier announcements, benchmarks).

It joins no consumer group and commits nothing: partitions are assigned by hand,
from their beginning or from their current end (taken when the reader is built,
so a reader built before a request is published misses none of its events). It
decodes at the same edge as the consumers, with the configured codec, so
registry-framed events read like single-object ones. Records the edge refuses
are skipped and counted: judging them is the consumers' job (they dead-letter).
"""

from __future__ import annotations

import time
import uuid
from typing import Iterable, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.errors import ModelBusError
from infra.kafka.config import consumer_config
from infra.kafka.edge import Edge
from infra.kafka.envelope import Envelope, headers_dict, position
from infra.kafka.producer import make_codec
from infra.settings import Settings
from schemas.codec import AvroCodec, SerializationError


class TopicReader:
    def __init__(self, settings: Settings, topics: Iterable[str], *, start: Literal["beginning", "end"],
                 codec: AvroCodec | None = None, skip_missing: bool = False, name: str = "reader",
                 timeout: float = 10.0):
        """``topics`` are full names; a missing one raises ModelBusError unless ``skip_missing``."""
        self.edge = Edge(settings, codec or make_codec(settings))
        self.skipped = 0
        self._consumer = Consumer(consumer_config(settings.kafka, f"modelbus-{name}-{uuid.uuid4().hex[:8]}"))
        meta = self._consumer.list_topics(timeout=timeout).topics
        assignment = []
        self._ends: dict[tuple[str, int], int] = {}     # high watermarks when the reader was built
        self._next: dict[tuple[str, int], int] = {}     # next offset to read, per partition
        for topic in topics:
            tm = meta.get(topic)
            if tm is None or tm.error is not None or not tm.partitions:
                if skip_missing:
                    continue
                raise ModelBusError(f"topic {topic} does not exist; is the stack up (`modelbus up`)?")
            for p in tm.partitions:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                self._ends[(topic, p)] = high
                self._next[(topic, p)] = low if start == "beginning" else high
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING if start == "beginning" else high))
        self._consumer.assign(assignment)
        self._assignment = assignment

    def poll(self, max_records: int = 100, timeout: float = 0.5) -> list[Envelope]:
        """The decoded events that arrived within ``timeout`` (possibly none)."""
        out = []
        for m in self._consumer.consume(max_records, timeout):
            if m.error() is not None:
                continue
            topic, partition, offset = position(m)
            self._next[(topic, partition)] = offset + 1
            try:
                out.append(self.edge.envelope(topic=topic, partition=partition, offset=offset,
                                              key=m.key(), value=m.value(), timestamp_ms=m.timestamp()[1],
                                              headers=headers_dict(m.headers())))
            except SerializationError:
                self.skipped += 1
        return out

    def read_to_end(self, timeout: float = 30.0) -> list[Envelope]:
        """The history: every event at least up to the end offsets taken when the reader was built, then until a
        poll comes back empty (brokers may report an end offset that lags a batch just written, so the ends are
        a floor, not the stop). ModelBusError if the ends are not reached within ``timeout``: a reader that
        stopped early would report part of the history as the whole."""
        out: list[Envelope] = []
        deadline = time.monotonic() + timeout
        while True:
            got = self.poll(500, 0.3)
            out += got
            if got:
                continue
            for tp in self._consumer.position(self._assignment):   # also past control records and compacted gaps
                key = (tp.topic, tp.partition)
                self._next[key] = max(self._next.get(key, 0), tp.offset)
            behind = sorted(tp for tp, end in self._ends.items() if self._next.get(tp, 0) < end)
            if not behind:
                return out
            if time.monotonic() > deadline:
                raise ModelBusError(f"could not read {behind} to their end within {timeout:.0f}s")

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
