"""Topic management: every catalogue topic and its DLQ exist, with explicit partitions, before anyone uses them."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.errors import StackError
from infra.kafka.config import admin_config
from infra.kafka.topics import CATALOGUE, INTERNAL, dlq_name
from infra.settings import Settings


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings.kafka))


def desired_topics(settings: Settings) -> list[NewTopic]:
    k = settings.kafka
    out = []
    for spec in CATALOGUE + INTERNAL:
        name = settings.topic(spec.name)
        config = {"retention.ms": str(k.retention_ms), **spec.config}
        if spec.compacted:
            config["cleanup.policy"] = "compact"
        parts = spec.partitions or k.default_partitions
        out.append(NewTopic(name, parts, k.replication_factor, config=config))
        out.append(NewTopic(dlq_name(name), 1, k.replication_factor, config={"retention.ms": str(k.retention_ms)}))
    return out


def ensure_topics(settings: Settings, extra: list[NewTopic] | None = None, timeout: float = 20.0) -> list[str]:
    """Create missing topics; return the names that were created. Existing topics are left as they are."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise StackError(f"Kafka at {settings.kafka.bootstrap_servers} is unreachable: {exc}") from exc
    wanted = [t for t in desired_topics(settings) + list(extra or []) if t.topic not in existing]
    if not wanted:
        return []
    created = []
    for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise StackError(f"cannot create topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # metadata propagates asynchronously
        if set(created) <= set(admin.list_topics(timeout=timeout).topics):
            break
        time.sleep(0.1)
    return created
