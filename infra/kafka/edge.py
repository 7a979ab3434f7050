"""The decode edge: a topic's bytes become an ``Envelope``, or a refusal that names its dead-letter reason.

Every runtime (ConsumerRunner, the faust agents' EdgeDecoder, the telemetry
sink, the TopicReader) decodes here, so one rule decides what a topic may
carry: the event types the topic catalogue lists for it (``topics.py``),
narrowed to those the consumer handles. A schema-valid event of another type
(a DriftDetected produced onto ``training.requested``) is refused as
``unexpected_type`` (``UnexpectedType``) and never reaches a handler or a table. Topics outside the
catalogue (a test's scratch topic) carry whatever the consumer expects, or any
known event when it names none.
"""

from __future__ import annotations

from typing import Iterable

from infra.kafka.envelope import Envelope
from infra.kafka.topics import CATALOGUE, INTERNAL
from infra.settings import Settings
from schemas.catalog import EventSchema
from schemas.codec import AvroCodec, Decoded, SerializationError

UNDECODABLE = "undecodable"
UNEXPECTED_TYPE = "unexpected_type"


class UnexpectedType(SerializationError):
    """A well-formed event of a type its topic does not carry (to this consumer)."""


def refusal_reason(exc: SerializationError) -> str:
    """The dead-letter reason of an event the edge refused."""
    return UNEXPECTED_TYPE if isinstance(exc, UnexpectedType) else UNDECODABLE


def catalogued_types(settings: Settings) -> dict[str, frozenset[str]]:
    """Full topic name → the event types it carries."""
    return {settings.topic(t.name): frozenset(t.events) for t in (*CATALOGUE, *INTERNAL)}


class Edge:
    """Decodes with one codec and checks each event's type against its topic."""

    def __init__(self, settings: Settings, codec: AvroCodec, expected_types: Iterable[str] | None = None,
                 max_attempts: int = 1):
        self.codec = codec
        self.max_attempts = max_attempts   # the runtime's retry policy: envelopes arrive ready for attempt 1
        self.expected = frozenset(expected_types) if expected_types else None
        self._catalogued = catalogued_types(settings)
        self._allowed: dict[str, frozenset[str] | None] = {}

    def allowed(self, topic: str) -> frozenset[str] | None:
        """Event types accepted on ``topic``; None: any known event."""
        if topic not in self._allowed:
            listed = self._catalogued.get(topic)
            self._allowed[topic] = (self.expected if listed is None
                                    else listed & self.expected if self.expected is not None else listed)
        return self._allowed[topic]

    def check(self, topic: str, event_type: str) -> None:
        allowed = self.allowed(topic)
        if allowed is not None and event_type not in allowed:
            raise UnexpectedType(f"{event_type} is not an event this consumer takes from {topic} "
                                           f"(expected {', '.join(sorted(allowed)) or 'none'})")

    def framing(self, topic: str, data: bytes | None) -> tuple[EventSchema, bool]:
        """Writer schema and legacy flag of a message, without decoding its body (the telemetry sink)."""
        schema, legacy = self.codec.framing_of(data)
        self.check(topic, schema.name)
        return schema, legacy

    def decode(self, topic: str, data: bytes | None) -> Decoded:
        """The decoded event; SerializationError (UnexpectedType for a type the topic does not carry)."""
        decoded = self.codec.decode(data)
        self.check(topic, decoded.event_type)
        return decoded

    def envelope(self, *, topic: str, partition: int, offset: int, key: bytes | str | None, value: bytes | None,
                 timestamp_ms: int, headers: dict[str, bytes]) -> Envelope:
        """The envelope handlers see; raises SerializationError as ``decode`` does."""
        decoded = self.decode(topic, value)
        return Envelope(
            key=key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else key,
            value=decoded.value, event_type=decoded.event_type, topic=topic, partition=partition, offset=offset,
            event_id=str(decoded.value["header"]["event_id"]), timestamp_ms=timestamp_ms, headers=headers,
            writer_version=decoded.writer_version, legacy_framing=decoded.legacy_framing,
            max_attempts=self.max_attempts,
        )
