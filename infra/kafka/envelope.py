"""The immutable event envelope handed to every handler.

Deserialization happens at the edge (the consumer runner); handlers see decoded
values and never a raw ``confluent_kafka.Message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TypeVar, cast

if TYPE_CHECKING:
    from confluent_kafka import Message

E = TypeVar("E")   # an event's TypedDict (schemas/types.py)


@dataclass(frozen=True, slots=True)
class Envelope:
    key: str | None
    value: dict[str, Any]
    event_type: str
    topic: str
    partition: int
    offset: int
    event_id: str
    timestamp_ms: int = 0
    headers: dict[str, bytes] = field(default_factory=dict)
    writer_version: int = 0
    legacy_framing: bool = False   # its fingerprint came in the pre-spec byte order (counted by consumers)
    attempt: int = 1               # which try of this event this is (set by the outcome policy, infra/kafka/outcome.py)
    max_attempts: int = 1          # tries the policy allows an error that is not transient

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def last_attempt(self) -> bool:
        """No retry follows if this attempt fails with an error that is not transient."""
        return self.attempt >= self.max_attempts

    def typed(self, kind: type[E]) -> E:
        """The value as its event's TypedDict (``env.typed(ModelRegistered)``), so mypy checks the keys a handler
        reads. The same dict, not a copy (the hot path pays one string compare); refused when the event is of
        another type, which a cast alone would let through."""
        if self.event_type != kind.__name__:
            raise TypeError(f"{self.coordinates}: a {self.event_type} event, not {kind.__name__}")
        return cast(E, self.value)


# Kafka headers as the clients type them: (name, value) pairs or a mapping. Fetched messages carry (name, bytes)
# pairs; str values exist only in the clients' types (produce accepts them) and are read as UTF-8.
RawHeaders = Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]


def position(m: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a fetched message (one whose ``error()`` is None): the client sets all three,
    its types only say they may be None."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None, "a fetched message has a position"
    return topic, partition, offset


def headers_dict(raw: RawHeaders | None) -> dict[str, bytes]:
    """Header name → value (b"" for a header without one)."""
    pairs = raw.items() if isinstance(raw, Mapping) else (raw or [])
    return {k: v.encode() if isinstance(v, str) else (v if v is not None else b"") for k, v in pairs}
