from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka.config import consumer_config
from schemas.events import new_header


def drift_event(i: int = 0) -> dict:
    return {"header": new_header("tests"), "model_name": "m", "model_version": 1, "feature": f"f{i}",
            "window_start": 1, "window_end": 2, "psi": float(i), "test": "ks", "statistic": 0.1, "p_value": 0.5,
            "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 10}


def wait_for(cond, timeout: float = 30.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` seconds pass (False): tests assert on the result."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def read_all(settings, topic: str, expect: int, timeout: float = 15.0) -> list:
    """Every message of ``topic`` read by a throwaway group (real broker round trip)."""
    c = Consumer(consumer_config(settings.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    c.subscribe([topic])
    out = []
    import time

    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for m in c.consume(100, 0.5):
            if m.error() is None:
                out.append(m)
    c.close()
    return out


def committed(settings, group: str, topic: str, partitions: int) -> int:
    c = Consumer(consumer_config(settings.kafka, group))
    offs = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    c.close()
    return sum(max(o.offset, 0) for o in offs)


class RunnerThread:
    def __init__(self, runner, **kw):
        self.runner = runner
        self.ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, kwargs=kw, daemon=True)

    def _run(self, **kw):
        try:
            self.runner.run(ready=self.ready, **kw)
        except BaseException as exc:  # noqa: BLE001 - any failure of the thread is surfaced to the test
            self.error = exc

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(30), "consumer never got its partitions"
        return self

    def __exit__(self, *exc):
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def runner_thread():
    return RunnerThread
