"""Metadata sink: every lifecycle event topic → its typed ClickHouse table.

Lifecycle events are few and each matters, so they go through the shared
``ConsumerRunner`` (decoded by the codec, DLQ, retries, commit after insert) and
each is written as the rows of its table (``infra.clickhouse.rows``). Tables are
ReplacingMergeTrees keyed on event_id, so a redelivered event changes nothing; a dataset
version is recorded once (its first announcement), whatever key or event id a copy carries.

ClickHouse down or busy → the runner retries the event; ClickHouse refusing the
rows (a value it cannot store) → the event goes to the DLQ with ClickHouse's reason.

Run: ``python -m consumers.metadata_sink``.
"""

from __future__ import annotations

import logging

from infra.clickhouse.errors import ClickHouseError, is_transient
from infra.clickhouse.rows import TABLES, write_events
from infra.errors import PoisonEvent, SkipEvent
from infra.kafka import ConsumerRunner, Envelope
from infra.kafka import topics as T

log = logging.getLogger("modelbus.consumers.metadata_sink")

LIFECYCLE_TOPICS = (T.DATASETS_CREATED, T.TRAINING_REQUESTED, T.TRAINING_RUNS, T.MODELS_REGISTERED,
                    T.MODELS_DEPLOYED, T.MODELS_REJECTED, T.MONITORING_DRIFT, T.SERVING_METRICS)
EVENT_TYPES = tuple(t for t in TABLES if t != "InferenceTelemetry")


class MetadataSink:
    """Handler writing one decoded lifecycle event into ClickHouse."""

    def __init__(self, store):
        self.store = store

    def __call__(self, env: Envelope) -> None:
        if env.event_type == "DatasetCreated":
            self._first_announcement(env)
        try:
            write_events(self.store, [(env.event_type, env.value)])
        except ClickHouseError as exc:
            if is_transient(exc):
                raise            # the runner retries with backoff
            raise PoisonEvent(f"ClickHouse refused the rows of {env.event_type} {env.event_id}: {exc}") from exc

    def _first_announcement(self, env: Envelope) -> None:
        """A dataset version is a content hash, so its first DatasetCreated is its record: a later copy (the same
        event re-keyed, or re-sent under a new id) is skipped, and one giving the version other content is poison.
        Skipping the copy here keeps `datasets` at one row per version even for readers without FINAL."""
        ds = env.value
        try:
            known = self.store.query_rows(
                "SELECT event_id, checksum FROM datasets FINAL WHERE name = {n:String} AND version = {v:String} "
                "ORDER BY event_time LIMIT 1", {"n": ds["name"], "v": ds["version"]})
        except ClickHouseError as exc:
            if is_transient(exc):
                raise
            raise PoisonEvent(f"cannot check dataset {ds['name']}@{ds['version']}: {exc}") from exc
        if not known:
            return
        if known[0]["event_id"] == env.event_id:
            raise SkipEvent(f"dataset event {env.event_id} already recorded")   # redelivered or re-keyed copy
        if known[0]["checksum"] != ds["checksum"]:
            raise PoisonEvent(f"dataset {ds['name']}@{ds['version']} was announced with checksum "
                              f"{known[0]['checksum']} (event {known[0]['event_id']}); "
                              f"this event says {ds['checksum']}")
        raise SkipEvent(f"dataset {ds['name']}@{ds['version']} already recorded by event {known[0]['event_id']}")


GROUP = "metadata-sink"   # consumer group name below kafka.topic_prefix (settings.group)


def build_runner(settings, store, *, group_id: str | None = None, **runner_kw) -> ConsumerRunner:
    return ConsumerRunner(settings, group_id=group_id or settings.group(GROUP),
                          topics=[settings.topic(t) for t in LIFECYCLE_TOPICS], handler=MetadataSink(store),
                          name="metadata-sink", expected_types=EVENT_TYPES, **runner_kw)


def main(argv: list[str] | None = None) -> None:
    from consumers.sink_main import sink_main

    sink_main(argv, description="lifecycle events → ClickHouse metadata tables", group=GROUP, log=log,
              build=build_runner)


if __name__ == "__main__":
    main()
