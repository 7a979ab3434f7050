"""The one topic reader for followers and watchers (``train --wait``, the demo watcher, benchmarks).

It joins no consumer group and commits nothing: partitions are assigned by hand,
from their beginning or from their current end (taken when the reader is built,
so a reader built before a request is published misses none of its events). It
decodes at the same edge as the consumers, with the configured codec, so
registry-framed events read like single-object ones. Records the edge refuses
are skipped and counted: judging them is the consumers' job (they dead-letter).
"""

from __future__ import annotations

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
        for topic in topics:
            tm = meta.get(topic)
            if tm is None or tm.error is not None or not tm.partitions:
                if skip_missing:
                    continue
                raise ModelBusError(f"topic {topic} does not exist; is the stack up (`modelbus up`)?")
            for p in tm.partitions:
                offset = (OFFSET_BEGINNING if start == "beginning" else
                          self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1])
                assignment.append(TopicPartition(topic, p, offset))
        self._consumer.assign(assignment)

    def poll(self, max_records: int = 100, timeout: float = 0.5) -> list[Envelope]:
        """The decoded events that arrived within ``timeout`` (possibly none)."""
        out = []
        for m in self._consumer.consume(max_records, timeout):
            if m.error() is not None:
                continue
            try:
                topic, partition, offset = position(m)
                out.append(self.edge.envelope(topic=topic, partition=partition, offset=offset,
                                              key=m.key(), value=m.value(), timestamp_ms=m.timestamp()[1],
                                              headers=headers_dict(m.headers())))
            except SerializationError:
                self.skipped += 1
        return out

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
