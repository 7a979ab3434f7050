"""Follows every ModelBus topic from the beginning so the demo can wait for (and show) what happened."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from infra.errors import ModelBusError
from infra.kafka.reader import TopicReader
from infra.kafka.topics import CATALOGUE, INFERENCE_TELEMETRY
from infra.settings import Settings


class EventWatcher:
    def __init__(self, settings: Settings, check: Callable[[], list[str]] = lambda: []):
        self.settings = settings
        self.check = check              # returns fatal problems (e.g. a consumer died) to stop waiting early
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        topics = [settings.topic(t.name) for t in CATALOGUE if t.name != INFERENCE_TELEMETRY]
        self._reader = TopicReader(settings, topics, start="beginning", skip_missing=True,
                                   name="demo-watch")
        self._thread = threading.Thread(target=self._loop, daemon=True, name="demo-watch")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            envs = self._reader.poll(200, 0.2)
            with self._lock:
                self.events += [(env.event_type, env.value) for env in envs]

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
        self._reader.close()
