"""Which Kafka delivery errors mean "this producer session is dead, open a new one".

An idempotent producer whose events timed out (a broker stall, or a process
paused for longer than ``message.timeout.ms``) bumps its epoch; tansu, and
Apache Kafka after a producer-id expiry, then answer every later event with
PRODUCER_FENCED (or an epoch/sequence error), for ever: librdkafka never
recovers and raises no error callback. These errors are per record and final,
and the broker stored nothing, so the records can be sent again on a fresh
producer (a new producer id) without duplicates; every consumer dedupes on
the event id in any case. Shared by ``EventProducer`` and the in-model
telemetry emitter.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

# Refused by the broker for the producer session, not for the record: nothing was stored, resending is safe.
REJECTED_SESSION = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                              KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER})
PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def session_rejected(err: KafkaError | None) -> bool:
    """The broker refused a record because of the producer session (replace the producer, resend)."""
    return err is not None and err.code() in REJECTED_SESSION
