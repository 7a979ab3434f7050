"""Kafka layer shared by producers/ and consumers/: config mapping, producer, consumer runner, DLQ, topics."""

from infra.kafka.consumer import ConsumerRunner, RunnerStats
from infra.kafka.envelope import Envelope
from infra.kafka.idempotency import ProcessedLog
from infra.kafka.producer import EventProducer, make_codec

__all__ = ["ConsumerRunner", "Envelope", "EventProducer", "ProcessedLog", "RunnerStats", "make_codec"]
