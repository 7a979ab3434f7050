"""Metadata sink: every lifecycle event topic → its typed ClickHouse table.

Lifecycle events are few and each matters, so they go through the shared
``ConsumerRunner`` (decoded by the codec, DLQ, retries, commit after insert) and
each is written as the rows of its table (``infra.clickhouse.rows``). Tables are
ReplacingMergeTrees keyed on event_id, so a redelivered event changes nothing.

ClickHouse down or busy → the runner retries the event; ClickHouse refusing the
rows (a value it cannot store) → the event goes to the DLQ with ClickHouse's reason.

Run: ``python -m consumers.metadata_sink``.
"""

from __future__ import annotations

import argparse
import logging

from infra.clickhouse.errors import ClickHouseError, is_transient
from infra.clickhouse.rows import TABLES, write_events
from infra.errors import PoisonEvent
from infra.kafka import ConsumerRunner, Envelope
from infra.kafka import topics as T
from infra.logs import configure_logging

log = logging.getLogger("modelbus.consumers.metadata_sink")

LIFECYCLE_TOPICS = (T.DATASETS_CREATED, T.TRAINING_REQUESTED, T.TRAINING_RUNS, T.MODELS_REGISTERED,
                    T.MODELS_DEPLOYED, T.MODELS_REJECTED, T.MONITORING_DRIFT, T.SERVING_METRICS)
EVENT_TYPES = tuple(t for t in TABLES if t != "InferenceTelemetry")


class MetadataSink:
    """Handler writing one decoded lifecycle event into ClickHouse."""

    def __init__(self, store):
        self.store = store

    def __call__(self, env: Envelope) -> None:
        try:
            write_events(self.store, [(env.event_type, env.value)])
        except ClickHouseError as exc:
            if is_transient(exc):
                raise            # the runner retries with backoff
            raise PoisonEvent(f"ClickHouse refused the rows of {env.event_type} {env.event_id}: {exc}") from exc


GROUP = "metadata-sink"   # consumer group name below kafka.topic_prefix (settings.group)


def build_runner(settings, store, *, group_id: str | None = None, **runner_kw) -> ConsumerRunner:
    return ConsumerRunner(settings, group_id=group_id or settings.group(GROUP),
                          topics=[settings.topic(t) for t in LIFECYCLE_TOPICS], handler=MetadataSink(store),
                          name="metadata-sink", expected_types=EVENT_TYPES, **runner_kw)


def main(argv: list[str] | None = None) -> None:
    from infra.clickhouse import connect
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(description="lifecycle events → ClickHouse metadata tables")
    parser.add_argument("--group", default=None, help=f"Kafka consumer group (default: <topic_prefix>.{GROUP})")
    parser.add_argument("--idle-timeout", type=float, default=None, help="exit after this many idle seconds")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    store = connect(settings)
    try:
        stats = build_runner(settings, store, group_id=args.group).run(idle_timeout=args.idle_timeout)
        log.info("metadata sink stopped: %s", stats)
    finally:
        store.close()


if __name__ == "__main__":
    main()
