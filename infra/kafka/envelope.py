"""The immutable event envelope handed to every handler.

Deserialization happens at the edge (the consumer runner); handlers see decoded
values and never a raw ``confluent_kafka.Message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


def headers_dict(raw: list[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return {k: (v if v is not None else b"") for k, v in (raw or [])}
