"""Follows every ModelBus topic from the beginning so the demo can wait for (and show) what happened."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.errors import ModelBusError
from infra.kafka.config import consumer_config
from infra.kafka.topics import CATALOGUE
from infra.settings import Settings
from schemas.codec import AvroCodec, SerializationError


class EventWatcher:
    def __init__(self, settings: Settings, check: Callable[[], list[str]] = lambda: []):
        self.settings = settings
        self.check = check              # returns fatal problems (e.g. a consumer died) to stop waiting early
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._codec = AvroCodec()
        self._consumer = Consumer(consumer_config(settings.kafka, f"demo-watch-{uuid.uuid4().hex[:8]}"))
        topics = [settings.topic(t.name) for t in CATALOGUE if t.name != "inference.telemetry"]
        meta = self._consumer.list_topics(timeout=10).topics
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics if t in meta
                               for p in meta[t].partitions])
        self._thread = threading.Thread(target=self._loop, daemon=True, name="demo-watch")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(200, 0.2):
                if msg.error() is not None:
                    continue
                try:
                    d = self._codec.decode(msg.value())
                except SerializationError:
                    continue
                with self._lock:
                    self.events.append((d.event_type, d.value))

    def of(self, event_type: str, pred: Callable[[dict], bool] = lambda v: True) -> list[dict[str, Any]]:
        with self._lock:
            return [v for t, v in self.events if t == event_type and pred(v)]

    def wait_for(self, what: str, found: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = found()
            if result:
                return result
            problems = self.check()
            if problems:
                raise ModelBusError(f"while waiting for {what}: " + "\n".join(problems))
            time.sleep(0.2)
        raise ModelBusError(f"timed out after {timeout:.0f}s waiting for {what}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
