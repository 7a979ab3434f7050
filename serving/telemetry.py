"""In-model inference telemetry: one InferenceTelemetry event per request, never on the request's clock.

The served model hands each event (or a closure that builds it) to a bounded
buffer and returns; a daemon thread owning a Kafka producer builds, encodes
and sends. When Kafka is slow or down the buffer fills and further events are
dropped and *counted* rather than slowing inference: serving traffic matters
more than a complete telemetry record, and the counts (logged periodically,
written to a small stats file, and reported per minute to ClickHouse's
``telemetry_losses``, see telemetry_losses.py) say exactly how incomplete it is.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from infra.kafka.renewal import PURGED, session_rejected
from infra.kafka.topics import INFERENCE_TELEMETRY, SERVING_METRICS
from infra.settings import Settings
from schemas.events import new_header
from schemas.types import InferenceTelemetry, ServerMetrics
from serving.telemetry_losses import LossLedger, loss_report
from serving.telemetry_rows import NO_ROWS, RowColumns

PRODUCER_NAME = "serving.triton"
# Stable stage names: reused in the event's stage_latency_us map, logs and ClickHouse rows.
STAGE_DECODE = "decode"
STAGE_MODEL = "model"
STAGE_ENCODE = "encode"
STAGES = (STAGE_DECODE, STAGE_MODEL, STAGE_ENCODE)
# Triton request parameter (KServe "parameters" extension) that marks a smoke inference; the model copies it
# into InferenceTelemetry.smoke. A schema field, not a request-id convention: clients pick their own ids.
SMOKE_PARAMETER = "modelbus_smoke"

log = logging.getLogger("modelbus.serving.telemetry")


def telemetry_event(*, request_id: str, model_name: str, model_version: int, received_at: int, completed_at: int,
                    stages: dict[str, int], batch_size: int, numeric: dict[str, float] | None = None,
                    categorical: dict[str, str] | None = None, prediction: str = "", prediction_value: float = 0.0,
                    confidence: float = 0.0, error: str | None = None, smoke: bool = False,
                    rows: RowColumns | None = None) -> InferenceTelemetry:
    """An InferenceTelemetry value (times in microseconds since the epoch); ``rows``: every served row, as the
    event's ``row_*`` columns (``telemetry_rows.row_columns``)."""
    numeric = numeric or {}
    categorical = categorical or {}
    header = new_header(PRODUCER_NAME, correlation_id=request_id or None)
    return {
        "header": header,
        "request_id": request_id or str(header["event_id"]),  # a request without an id is named by its event
        "model_name": model_name,
        "model_version": int(model_version),
        "received_at": int(received_at),
        "completed_at": int(completed_at),
        "latency_us": max(0, int(completed_at - received_at)),
        "stage_latency_us": {k: int(v) for k, v in stages.items()},
        "batch_size": int(batch_size),
        "numeric_names": list(numeric),
        "numeric_means": [float(v) for v in numeric.values()],
        "categorical_names": list(categorical),
        "categorical_values": [str(v) for v in categorical.values()],
        "prediction": prediction,
        "prediction_value": float(prediction_value),
        "confidence": float(confidence),
        "status": "error" if error else "ok",
        "error": error,
        "smoke": bool(smoke),
        **(rows or NO_ROWS),
    }


def is_smoke(parameters_json: str) -> bool:
    """Whether a request's parameters (the Python backend hands them over as a JSON object) mark it a smoke test."""
    if not parameters_json or parameters_json == "{}" or SMOKE_PARAMETER not in parameters_json:
        return False   # the hot path: live requests carry no parameters, so no JSON is parsed for them
    try:
        params = json.loads(parameters_json)
    except ValueError:
        return False
    return isinstance(params, dict) and params.get(SMOKE_PARAMETER) is True


class TelemetryEmitter:
    """Bounded buffer + background Kafka producer for InferenceTelemetry events.

    ``emit`` never blocks and costs a deque append: the event may be passed as
    a zero-argument callable that builds it, so dict building, the header and
    Avro encoding all happen on the background thread. That thread wakes every
    ``drain_interval_s`` instead of on every event (a wake-up per request would
    compete with the request for the GIL); the served model also shortens the
    interpreter's switch interval so a request never waits long behind a drain.
    A full buffer (or a full librdkafka queue) counts the event as dropped.
    A producer fenced after a long stall is replaced and the events it was
    refused are sent again on the new one (``renewals`` counts replacements).
    Counters: accepted, dropped, sent, delivered, failed, invalid (refused by
    the schema or by its builder), renewals.
    """

    def __init__(self, settings: Settings, name: str, *, producer: Any | None = None,
                 buffer_size: int | None = None, stats_path: Path | None = None,
                 report_every_s: float = 30.0, drain_interval_s: float = 0.02, start: bool = True,
                 producer_factory: Callable[[Settings], Any] | None = None, model_name: str = ""):
        self.settings = settings
        self.name = name
        self.model_name = model_name   # names the model in loss reports (the dashboard filters on it)
        self.topic = settings.topic(INFERENCE_TELEMETRY)
        self.capacity = buffer_size or settings.triton.telemetry_buffer
        self._buffer: deque = deque()
        self._producer = producer
        self._producer_factory = producer_factory or make_telemetry_producer
        self._serialize: Callable[[InferenceTelemetry], bytes] | None = None
        self._headers: Callable[[InferenceTelemetry], dict[str, bytes]] | None = None
        self.stats_path = stats_path
        self.report_every_s = report_every_s
        self.drain_interval_s = drain_interval_s
        self.counts = {"accepted": 0, "dropped": 0, "sent": 0, "failed": 0, "invalid": 0, "renewals": 0}
        self._owed: deque = deque()        # refused for a dead producer session: resent on the next producer
        self._renew: str | None = None     # why the producer must be replaced (set by delivery callbacks)
        self._renewing = False
        self.losses = LossLedger()          # per-minute losses, reported to the metrics topic (telemetry_losses.py)
        self._report_serialize: Callable[[ServerMetrics], bytes] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- request side -----------------------------------------------------
    def emit(self, event: InferenceTelemetry | Callable[[], InferenceTelemetry]) -> bool:
        """Hand one event (or its builder) over without waiting; False, and counted, when the buffer is full."""
        if len(self._buffer) >= self.capacity:
            with self._lock:
                self.counts["dropped"] += 1
            self.losses.add("dropped")
            return False
        self._buffer.append(event)  # deque.append is atomic; no lock, no wake-up
        with self._lock:
            self.counts["accepted"] += 1
        return True

    # -- background side --------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.name}", daemon=True)
            self._thread.start()

    def _ensure_producer(self) -> None:
        if self._producer is None:
            self._producer = self._producer_factory(self.settings)
        if self._serialize is None:
            from infra.kafka.cloudevents import event_headers
            from infra.kafka.producer import make_codec

            codec = make_codec(self.settings)
            self._serialize = codec.serializer("InferenceTelemetry")
            schema = codec.catalog.get("InferenceTelemetry")
            self._headers = lambda event: event_headers(schema, event)

    def _on_delivery(self, err, msg) -> None:
        # Only failures are reported (delivery.report.only.error): no Python callback per event.
        if err is None:
            return
        if session_rejected(err) or (self._renewing and err.code() in PURGED):
            # Fenced after a stall: the broker stored nothing. Resend on a new producer (renewal.py).
            self._owed.append(msg)
            self._renew = self._renew or err.str()
            return
        with self._lock:
            self.counts["failed"] += 1
        self.losses.add("failed")

    def _renew_producer(self) -> None:
        """Replace a fenced producer and send what it still owed (its queue too) on the new one."""
        reason, self._renew = self._renew, None
        old, self._producer = self._producer, self._producer_factory(self.settings)
        assert old is not None   # a delivery callback of the old producer asked for the renewal
        self._renewing = True
        try:
            old.purge()
            old.poll(0)   # the purged events come back through _on_delivery into _owed
        finally:
            self._renewing = False
        with self._lock:
            self.counts["renewals"] += 1
        self.losses.add("renewals")   # not a loss, but reported with them: SQL sees when a producer was replaced
        log.warning("telemetry %s: replaced the Kafka producer (%s); resending %d event(s)", self.name, reason,
                    len(self._owed))
        while self._owed:
            msg = self._owed.popleft()
            try:
                self._producer.produce(msg.topic(), msg.value(), msg.key(), on_delivery=self._on_delivery)
            except BufferError:
                with self._lock:
                    self.counts["dropped"] += 1
                    self.counts["sent"] -= 1
                self.losses.add("dropped")

    def _send(self, item: InferenceTelemetry | Callable[[], InferenceTelemetry]) -> None:
        assert self._producer is not None and self._serialize is not None and self._headers is not None, \
            "_ensure_producer runs before the first drain"
        try:
            event = item() if callable(item) else item
            data = self._serialize(event)
            headers = self._headers(event)
        except Exception as exc:  # noqa: BLE001 - SerializationError or a failing builder: count, never crash
            with self._lock:
                self.counts["invalid"] += 1
            log.warning("telemetry %s: event dropped as invalid: %s", self.name, exc)
            return
        try:
            self._producer.produce(self.topic, data, event["model_name"].encode(), headers=headers,
                                   on_delivery=self._on_delivery)
        except BufferError:
            with self._lock:
                self.counts["dropped"] += 1
            self.losses.add("dropped")
            return
        with self._lock:
            self.counts["sent"] += 1

    def _drain(self) -> None:
        if self._renew is not None:
            self._renew_producer()
        while self._buffer:
            self._send(self._buffer.popleft())
        assert self._producer is not None, "_ensure_producer runs before the first drain"
        self._producer.poll(0)

    def _run(self) -> None:
        try:
            self._ensure_producer()
        except Exception:
            log.exception("telemetry %s: cannot create the Kafka producer; events will be dropped", self.name)
            self._drain_as_dropped()
            return
        next_report = time.monotonic() + self.report_every_s
        while not self._stop.wait(self.drain_interval_s):
            try:
                self._drain()
            except Exception:
                log.exception("telemetry %s: drain failed", self.name)
            if time.monotonic() >= next_report:
                self.report()
                self._report_losses()
                next_report = time.monotonic() + self.report_every_s
        self._drain()
        self._report_losses()

    def _report_losses(self) -> None:
        """Send the per-minute loss counts as one ServerMetrics event; put them back if it is not delivered."""
        counts = self.losses.take()
        if not counts or self._producer is None:
            self.losses.put_back(counts)
            return
        try:
            if self._report_serialize is None:
                from infra.kafka.producer import make_codec

                self._report_serialize = make_codec(self.settings).serializer("ServerMetrics")
            value = loss_report(self.name, counts, self.model_name)
            self._producer.produce(self.settings.topic(SERVING_METRICS), self._report_serialize(value),
                                   value["server"].encode(),
                                   on_delivery=lambda err, _msg: self.losses.put_back(counts) if err else None)
        except Exception as exc:  # noqa: BLE001 - a loss report must never take telemetry down
            self.losses.put_back(counts)
            log.warning("telemetry %s: loss report not sent: %s", self.name, exc)

    def _drain_as_dropped(self) -> None:
        while not self._stop.wait(self.drain_interval_s):
            n = len(self._buffer)
            for _ in range(n):
                self._buffer.popleft()
            with self._lock:
                self.counts["dropped"] += n
            if n:
                self.losses.add("dropped", n)

    def stats(self) -> dict[str, int]:
        """Counters; ``delivered`` = sent, minus failed, minus still in the producer's queue."""
        with self._lock:
            out = dict(self.counts)
        producer = self._producer
        in_flight = len(producer) if producer is not None and hasattr(producer, "__len__") else 0
        out["delivered"] = max(0, out["sent"] - out["failed"] - in_flight)
        out["queued"] = len(self._buffer)
        return out

    def report(self) -> dict[str, int]:
        """Log the counters (a warning when events were dropped or failed) and write the stats file."""
        s = self.stats()
        level = logging.WARNING if s["dropped"] or s["failed"] or s["invalid"] else logging.INFO
        log.log(level, "telemetry %s: %s", self.name, " ".join(f"{k}={v}" for k, v in s.items()))
        if self.stats_path is not None:
            try:
                self.stats_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.stats_path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"emitter": self.name, "topic": self.topic, **s, "at": time.time()}))
                tmp.replace(self.stats_path)
            except OSError as exc:
                log.warning("telemetry %s: cannot write %s: %s", self.name, self.stats_path, exc)
        return s

    def close(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop accepting, send what is buffered, wait for acknowledgements; returns the final counts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._producer is not None:
            remaining = self._producer.flush(timeout)
            if remaining:
                with self._lock:
                    self.counts["failed"] += remaining
            self._producer = None  # let librdkafka shut down (and stop reconnecting to a dead broker)
        return self.report()


def make_telemetry_producer(settings: Settings, **overrides: Any):
    """A throughput-oriented producer that never writes one event twice.

    Telemetry is best effort (a full buffer drops and counts), but what it does
    deliver must be exact: the per-minute materialized views count each stored
    message, so a send retried after a lost ack must not land twice. The
    idempotent producer (acks=all) guarantees that at no cost to the request
    path, since sends are asynchronous and batched by linger.ms.
    """
    from confluent_kafka import Producer

    from infra.kafka.config import producer_config

    return Producer(producer_config(settings.kafka, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 50, "compression.type": "lz4",
        "queue.buffering.max.messages": max(1000, settings.triton.telemetry_buffer),
        "message.timeout.ms": 30000,
        "delivery.report.only.error": True,
        "logger": logging.getLogger("modelbus.serving.telemetry.kafka"),  # librdkafka logs via logging, not stderr
        **overrides,
    }))
