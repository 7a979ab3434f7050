"""Idempotent event producer: Avro-encodes, sends with acks=all, surfaces delivery failures.

Delivery reports are collected by callback; ``flush`` raises ``DeliveryError``
listing every event the broker did not acknowledge, so nothing is dropped
silently (also across a broker restart: librdkafka retries until
``message.timeout.ms`` and then reports the failure here).

A broker that comes back without its producer-id state (the in-memory
embedded broker after a restart; on Apache Kafka, an expired producer id)
leaves librdkafka's idempotent producer either fatal or re-sending under a
producer id the broker rejects until every event times out. So after the
broker was unreachable, or after such an error, the librdkafka producer is
replaced by a fresh one (which gets a new producer id) and the events the old
one still held are sent again on it: events published around a restart are
delivered without restarting the process. The same holds after a stall longer
than ``message.timeout.ms`` (broker or this process paused), after which the
broker answers PRODUCER_FENCED for ever: those events are sent again on the
new producer (``renewal.py``). Events librdkafka already failed
(timed out while the broker was down) stay failed and are reported. An event
that was in flight when the connection dropped may be stored twice; every
ModelBus consumer is idempotent on ``event_id``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Mapping

from confluent_kafka import KafkaError, KafkaException, Producer

from infra.errors import DeliveryError
from infra.kafka import size
from infra.kafka.cloudevents import event_headers
from infra.kafka.config import producer_config
from infra.kafka.renewal import PURGED as _PURGED
from infra.kafka.renewal import REJECTED_SESSION, session_rejected
from infra.settings import Settings
from schemas.codec import AvroCodec, Serializer

RENEWAL_METRIC = "modelbus_producer_renewals"   # ServerMetrics sample name, server "producer:<name>"
log = logging.getLogger("modelbus.kafka.producer")

# Delivery errors after which the producer id and sequence numbers cannot be trusted any more.
_RENEW_ON = frozenset({KafkaError._FATAL}) | REJECTED_SESSION
_PROBE_EVERY_S = 0.5   # while the broker is unreachable: how often a TCP connect checks whether it is back
_BACKOFF_MAX_S = 30.0  # longest wait between two replacements while the broker keeps failing


class EventProducer:
    def __init__(self, settings: Settings, name: str, *, codec: AvroCodec | None = None, **overrides: Any):
        self.name = name
        self.settings = settings
        self._codec = codec or make_codec(settings)
        self._serializers: dict[str, Serializer] = {}
        self._conf = producer_config(settings.kafka, **overrides)
        self._timeout_ms = int(self._conf.get("message.timeout.ms", 300000))
        self._failed: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._swap = threading.Lock()         # held while producing, so no event lands on a replaced producer
        self._renew_reason: str | None = None  # set by callbacks, acted on outside librdkafka calls
        self._outage = False                   # all brokers were down: renew once one answers again
        self._next_probe = 0.0
        self._backoff = _PROBE_EVERY_S
        self._delivered_at_renewal = 0
        self._resending = False
        self._owed: list[tuple[Callable | None, float, Any]] = []   # refused for the session: resend on renewal
        self.delivered = 0
        self.renewals = 0
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        generation = self.renewals
        return Producer({**self._conf, "error_cb": lambda err: self._on_error(generation, err)})

    # -- callbacks (run inside librdkafka poll/flush calls) -------------
    def _on_error(self, generation: int, err: KafkaError) -> None:
        if generation != self.renewals:    # a replaced producer's last words
            return
        if err.fatal():
            log.error("%s: fatal producer error: %s", self.name, err.str())
            self._renew_reason = f"fatal error: {err.str()}"
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._outage = True

    def _report(self, user_cb: Callable | None, queued_at: float, err: KafkaError | None, msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            why = err.str()
            if self._resending and err.code() in _PURGED:
                if self._resend(user_cb, queued_at, msg):
                    return
                why = f"not acknowledged within message.timeout.ms ({self._timeout_ms} ms)"
            elif session_rejected(err):   # fenced / stale epoch: nothing stored; resent on the next producer
                with self._lock:
                    self._owed.append((user_cb, queued_at, msg))
                self._renew_reason = self._renew_reason or f"producer session refused: {err.str()}"
                return
            with self._lock:
                self._failed.append((f"{msg.topic()} key={msg.key()!r}", why))
            if err.fatal() or err.code() in _RENEW_ON:
                self._renew_reason = self._renew_reason or err.str()
        if user_cb is not None:
            user_cb(err, msg)

    def _resend(self, user_cb: Callable | None, queued_at: float, msg) -> bool:
        """Queue an event the replaced producer still held on the new one; False once message.timeout.ms has
        passed since it was first queued (a resend must not extend its life)."""
        if (time.monotonic() - queued_at) * 1000 >= self._timeout_ms:
            return False
        _kind, created_ms = msg.timestamp()
        try:
            self._producer.produce(msg.topic(), msg.value(), msg.key(), headers=msg.headers(),
                                   timestamp=max(created_ms, 0),
                                   on_delivery=functools.partial(self._report, user_cb, queued_at))
        except (BufferError, KafkaException):
            return False
        return True

    # -- sending ----------------------------------------------------------
    def serializer(self, event_type: str) -> Serializer:
        ser = self._serializers.get(event_type)
        if ser is None:
            ser = self._serializers[event_type] = self._codec.serializer(event_type)
        return ser

    def send(self, topic: str, event_type: str, value: Mapping[str, Any], key: str | bytes | None = None,
             headers: dict[str, bytes] | None = None, on_delivery: Callable | None = None) -> None:
        """Queue one event with its CloudEvents headers; delivery errors surface on the next ``flush``;
        EventTooLarge over the size limit."""
        data = self.serializer(event_type)(value)
        ce = event_headers(self._codec.catalog.get(event_type), value)
        self.send_raw(topic, data, key, ce if headers is None else {**ce, **headers}, on_delivery)

    def send_raw(self, topic: str, data: bytes, key: str | bytes | None = None,
                 headers: dict[str, bytes] | None = None, on_delivery: Callable | None = None) -> None:
        cb = functools.partial(self._report, on_delivery, time.monotonic())
        k = key.encode() if isinstance(key, str) else key
        size.check(topic, data, k, headers, self.settings.kafka.max_message_bytes)
        if self._outage or self._renew_reason is not None:
            self._heal()
        while True:
            try:
                with self._swap:
                    # the stub types headers as an invariant Dict[str, str | bytes | None]; a dict[str, bytes] is one
                    self._producer.produce(topic, data, k, headers=headers or None,  # type: ignore[arg-type]
                                           on_delivery=cb)
                break
            except BufferError:  # local queue full: serve delivery callbacks and retry
                self.poll(0.05)
            except KafkaException as exc:
                if not _is_fatal(exc):
                    raise
                self._renew(f"fatal error: {exc.args[0].str()}")
        self.poll(0)

    def publish(self, topic: str, event_type: str, value: Mapping[str, Any], key: str | bytes | None = None,
                headers: dict[str, bytes] | None = None, timeout: float = 30.0) -> None:
        """Send one event and wait until the broker acknowledged it (raises DeliveryError otherwise)."""
        self.send(topic, event_type, value, key, headers)
        self.flush(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued event; raise DeliveryError naming those the broker did not acknowledge."""
        deadline = time.monotonic() + timeout
        remaining = 0
        while True:   # in slices, so a producer that must be replaced is replaced while we wait
            try:
                remaining = self._producer.flush(min(0.25, max(0.0, deadline - time.monotonic())))
            except KafkaException as exc:
                if not _is_fatal(exc):
                    raise
                self._renew_reason = f"fatal error: {exc.args[0].str()}"
            self._heal()
            if (remaining == 0 and not len(self._producer)) or time.monotonic() >= deadline:
                break
        remaining = len(self._producer)
        with self._lock:
            failed, self._failed = self._failed, []
        if remaining:
            failed.append((f"{remaining} event(s)", f"not acknowledged within {timeout:.0f}s"))
        if failed:
            detail = "; ".join(f"{where}: {why}" for where, why in failed[:5])
            more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
            raise DeliveryError(f"{self.name}: {len(failed)} event(s) not delivered: {detail}{more}")

    def poll(self, timeout: float = 0) -> int:
        try:
            served = self._producer.poll(timeout)
        except KafkaException as exc:
            if not _is_fatal(exc):
                raise
            self._renew_reason = f"fatal error: {exc.args[0].str()}"
            served = 0
        if self._outage or self._renew_reason is not None:
            self._heal()
        return served

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 30.0) -> None:
        """Flush on shutdown so queued events are either acknowledged or reported."""
        self.flush(timeout)

    # -- replacing the librdkafka producer --------------------------------
    def _heal(self) -> None:
        """Replace the producer when a callback asked for it, or when the lost broker answers again."""
        reason = self._renew_reason
        now = time.monotonic()
        if self.delivered > self._delivered_at_renewal:   # the last replacement worked: probe quickly again
            self._backoff = _PROBE_EVERY_S
        if reason is None and self._outage and now >= self._next_probe:
            self._next_probe = now + _PROBE_EVERY_S
            if _reachable(self._conf["bootstrap.servers"]):
                reason = "all brokers were down; one accepts connections again"
                # A broker that accepts connections but keeps failing (e.g. refused credentials) would otherwise
                # have us replace the producer on every probe: back off until an event is delivered again.
                self._next_probe = now + self._backoff
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
        if reason is not None:
            self._renew(reason)

    def _renew(self, reason: str) -> None:
        """Swap in a fresh producer and move the events the old one still held onto it."""
        with self._swap:
            old = self._producer
            self.renewals += 1
            self._renew_reason, self._outage = None, False
            self._delivered_at_renewal = self.delivered
            self._producer = self._new_producer()
            self._resending = True
            try:
                for step in (old.purge, lambda: old.poll(0)):   # every event it holds comes back as a
                    try:                                          # _PURGE_* report, served here and
                        step()                                    # re-sent on the new producer by _report
                    except KafkaException:
                        pass
                with self._lock:
                    owed, self._owed = self._owed, []
                for user_cb, queued_at, msg in owed:
                    if not self._resend(user_cb, queued_at, msg):
                        with self._lock:
                            self._failed.append((f"{msg.topic()} key={msg.key()!r}",
                                                 "refused for a stale producer session, not resent in time"))
            finally:
                self._resending = False
        left = len(old)
        if left:
            with self._lock:
                self._failed.append((f"{left} event(s)", f"lost with the replaced producer ({reason})"))
        log.warning("%s: replaced the Kafka producer (%s)", self.name, reason)
        self._report_renewal(reason)

    def _report_renewal(self, reason: str) -> None:
        """The renewal as a metric: one ServerMetrics sample on the metrics topic (stored in ``server_metrics``,
        listed by ``modelbus status``). Best effort and outside the delivery accounting, so a lost report can
        never fail the caller's own events at the next ``flush``."""
        from infra.kafka.topics import SERVING_METRICS
        from schemas.events import new_header
        from schemas.types import ServerMetrics

        server = f"producer:{self.name}"
        value: ServerMetrics = {
            "header": new_header(self.name), "server": server,
            "samples": [{"name": RENEWAL_METRIC, "value": 1.0,
                         "labels": {"process": self.name, "pid": str(os.getpid()), "reason": reason[:200]}}]}

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                log.warning("%s: renewal report not delivered: %s", self.name, err.str())

        try:
            data = self.serializer("ServerMetrics")(value)
            headers = event_headers(self._codec.catalog.get("ServerMetrics"), value)
            self._producer.produce(self.settings.topic(SERVING_METRICS), data, server.encode(),
                                   headers=headers,  # type: ignore[arg-type]  # same stub quirk as in send_raw
                                   on_delivery=delivered)
        except (BufferError, KafkaException, ValueError) as exc:
            log.warning("%s: renewal report not sent: %s", self.name, exc)


def _reachable(bootstrap: str, timeout: float = 0.2) -> bool:
    """Whether any bootstrap broker accepts a TCP connection (no Kafka request, so no client backoff)."""
    for server in bootstrap.split(","):
        hostport = server.strip().split("://")[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port or 9092)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def _is_fatal(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL)


def make_codec(settings: Settings) -> AvroCodec:
    """Single-object encoding by default; Confluent framing when a Schema Registry is configured."""
    k = settings.kafka
    if not k.schema_registry_url:
        return AvroCodec()
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {"url": k.schema_registry_url}
    if k.schema_registry_auth:
        conf["basic.auth.user.info"] = k.schema_registry_auth.get_secret_value()
    return AvroCodec(registry_client=SchemaRegistryClient(conf))
