"""Idempotent event producer: Avro-encodes, sends with acks=all, surfaces delivery failures.

Delivery reports are collected by callback; ``flush`` raises ``DeliveryError``
listing every event the broker did not acknowledge, so nothing is dropped
silently (also across a broker restart: librdkafka retries until
``message.timeout.ms`` and then reports the failure here).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from confluent_kafka import KafkaError, Producer

from infra.errors import DeliveryError
from infra.kafka.config import producer_config
from infra.settings import Settings
from schemas.codec import AvroCodec, Serializer

log = logging.getLogger("modelbus.kafka.producer")


class EventProducer:
    def __init__(self, settings: Settings, name: str, *, codec: AvroCodec | None = None, **overrides: Any):
        self.name = name
        self.settings = settings
        self._codec = codec or make_codec(settings)
        self._serializers: dict[str, Serializer] = {}
        self._producer = Producer(producer_config(settings.kafka, **overrides))
        self._failed: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.delivered = 0

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        if err is None:
            self.delivered += 1
            return
        with self._lock:
            self._failed.append((f"{msg.topic()} key={msg.key()!r}", err.str()))

    def serializer(self, event_type: str) -> Serializer:
        ser = self._serializers.get(event_type)
        if ser is None:
            ser = self._serializers[event_type] = self._codec.serializer(event_type)
        return ser

    def send(self, topic: str, event_type: str, value: dict[str, Any], key: str | bytes | None = None,
             headers: dict[str, bytes] | None = None, on_delivery: Callable | None = None) -> None:
        """Queue one event; delivery errors surface on the next ``flush``."""
        self.send_raw(topic, self.serializer(event_type)(value), key, headers, on_delivery)

    def send_raw(self, topic: str, data: bytes, key: str | bytes | None = None,
                 headers: dict[str, bytes] | None = None, on_delivery: Callable | None = None) -> None:
        cb = self._on_delivery if on_delivery is None else _chain(self._on_delivery, on_delivery)
        k = key.encode() if isinstance(key, str) else key
        while True:
            try:
                self._producer.produce(topic, data, k, headers=headers or None, on_delivery=cb)
                break
            except BufferError:  # local queue full: serve delivery callbacks and retry
                self._producer.poll(0.05)
        self._producer.poll(0)

    def publish(self, topic: str, event_type: str, value: dict[str, Any], key: str | bytes | None = None,
                headers: dict[str, bytes] | None = None, timeout: float = 30.0) -> None:
        """Send one event and wait until the broker acknowledged it (raises DeliveryError otherwise)."""
        self.send(topic, event_type, value, key, headers)
        self.flush(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        with self._lock:
            failed, self._failed = self._failed, []
        if remaining:
            failed.append((f"{remaining} event(s)", f"not acknowledged within {timeout:.0f}s"))
        if failed:
            detail = "; ".join(f"{where}: {why}" for where, why in failed[:5])
            more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
            raise DeliveryError(f"{self.name}: {len(failed)} event(s) not delivered: {detail}{more}")

    def poll(self, timeout: float = 0) -> int:
        return self._producer.poll(timeout)

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 30.0) -> None:
        """Flush on shutdown so queued events are either acknowledged or reported."""
        self.flush(timeout)


def _chain(a: Callable, b: Callable) -> Callable:
    def both(err, msg):
        a(err, msg)
        b(err, msg)

    return both


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
