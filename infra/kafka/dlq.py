"""Dead-letter records: the original bytes plus headers saying why, where from and when.

A poison message is data, not an exception: it lands in ``<topic>.dlq`` with
its key, value and headers intact so it can be inspected and replayed.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException

from infra.errors import EventTooLarge
from infra.kafka.cloudevents import dead_letter_headers
from infra.kafka.size import H_TRUNCATED, fit_dead_letter
from infra.kafka.topics import dlq_name

H_REASON = "modelbus.dlq.reason"          # 'undecodable' | 'unexpected_type' | 'poison' | 'retries-exhausted'
H_ERROR = "modelbus.dlq.error"            # the error message
H_ERROR_TYPE = "modelbus.dlq.error_type"  # exception class name
H_TOPIC = "modelbus.dlq.source_topic"
H_PARTITION = "modelbus.dlq.source_partition"
H_OFFSET = "modelbus.dlq.source_offset"
H_GROUP = "modelbus.dlq.consumer_group"
H_TIME = "modelbus.dlq.time_ms"
_MAX_ERROR = 2000

log = logging.getLogger("modelbus.kafka.dlq")


def dlq_headers(*, reason: str, error: BaseException | str, topic: str, partition: int, offset: int,
                group: str, original: dict[str, bytes] | None = None) -> dict[str, bytes]:
    message = str(error)[:_MAX_ERROR]
    etype = type(error).__name__ if isinstance(error, BaseException) else "str"
    headers = dict(original or {})
    headers.update({
        H_REASON: reason.encode(),
        H_ERROR: message.encode("utf-8", "replace"),
        H_ERROR_TYPE: etype.encode(),
        H_TOPIC: topic.encode(),
        H_PARTITION: str(partition).encode(),
        H_OFFSET: str(offset).encode(),
        H_GROUP: group.encode(),
        H_TIME: str(int(time.time() * 1000)).encode(),
    })
    return headers


def send_to_dlq(producer, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str, error: BaseException | str, group: str,
                original_headers: dict[str, bytes] | None = None) -> None:
    """Queue a dead-letter record, a CloudEvent of its own, cut to fit the size limit; the caller flushes before
    committing the source offset."""
    headers = dlq_headers(reason=reason, error=error, topic=topic, partition=partition, offset=offset,
                          group=group, original=original_headers)
    headers.update(dead_letter_headers(original_headers, value, group=group, topic=topic, partition=partition,
                                       offset=offset))
    value, key, headers = fit_dead_letter(value, key, headers, producer.settings.kafka.max_message_bytes)
    try:
        producer.send_raw(dlq_name(topic), value, key, headers)
    except (KafkaException, EventTooLarge) as exc:   # never let a dead letter kill the consumer: coordinates only
        log.error("dead letter for %s[%s]@%s refused (%s); sending its coordinates without the value",
                  topic, partition, offset, exc)
        coordinates = {k: v for k, v in headers.items() if k.startswith(("modelbus.dlq.", "ce_"))}
        producer.send_raw(dlq_name(topic), b"", None, {**coordinates, H_TRUNCATED: b"true"})
