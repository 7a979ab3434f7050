"""Telemetry the model server lost, as data: per process and minute, in ClickHouse next to the traffic.

The emitter drops events rather than slow requests (full buffer) and librdkafka
may fail to deliver some (broker down past ``message.timeout.ms``). Counted in
a log line or a local file only, that loss is invisible where traffic is read:
per-minute requests in SQL and on the dashboard would simply read low. So
each loss is counted in the minute it happened, and the counts travel as a
ServerMetrics event (``server = telemetry:<process>``, one sample per minute
and kind) on the metrics topic, which the metadata sink stores in
``server_metrics``; the ``telemetry_losses`` view (migration 007) sums them
per process and minute.

Producer renewals (a fenced or stranded Kafka producer replaced, its owed events resent) travel the
same way, as ``modelbus_telemetry_renewals`` samples in ``server_metrics``: not a loss, but the
moment SQL should see next to a gap in traffic.

A report that is not delivered puts its counts back, so a loss report sent
after an outage still names the minutes of the outage; counts of a process
killed before it could report are lost with it (its own log says so).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from schemas.events import new_header
from schemas.types import MetricSample, ServerMetrics

SERVER_PREFIX = "telemetry:"
KINDS = ("dropped", "failed", "renewals")   # renewals: Kafka producers replaced (fenced, or every broker gone)
SAMPLE_PREFIX = "modelbus_telemetry_"


class LossLedger:
    """Losses per (minute, kind), taken out by a report and put back when it was not delivered."""

    def __init__(self) -> None:
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, n: int = 1, at: float | None = None) -> None:
        minute = int((time.time() if at is None else at) // 60) * 60
        with self._lock:
            self._counts[(minute, kind)] += n

    def take(self) -> Counter:
        with self._lock:
            out, self._counts = self._counts, Counter()
        return out

    def put_back(self, counts: Counter) -> None:
        with self._lock:
            self._counts.update(counts)


def loss_report(process: str, counts: Counter, model_name: str = "") -> ServerMetrics:
    """A ServerMetrics value carrying ``counts`` ((minute, kind) → events) of one process (serving one model)."""
    samples: list[MetricSample] = [
        {"name": SAMPLE_PREFIX + kind, "labels": {"process": process, "model": model_name, "minute": str(minute)},
         "value": float(n)}
        for (minute, kind), n in sorted(counts.items()) if n]
    return {"header": new_header("serving.telemetry"), "server": SERVER_PREFIX + process, "samples": samples}
