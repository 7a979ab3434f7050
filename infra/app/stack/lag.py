"""Consumer-group lag per topic: how far each ModelBus group is behind the end of what it reads.

Read with the Kafka admin API (the groups' committed offsets and each partition's
latest offset), so it needs nothing from the consumers themselves and works the
same against tansu and Apache Kafka. Lag is summed over a topic's partitions; a
committed offset past the broker's latest (tansu can report a batch's end late)
counts as no lag, never as negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from infra.kafka.config import LIBRDKAFKA_LOG
from infra.settings import Settings


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: int
    committed: int
    lag: int


def group_lags(settings: Settings, timeout: float = 5.0) -> list[GroupLag]:
    """Lag of every consumer group whose name carries this deployment's prefix."""
    # the stub's config values leave out "logger", which takes a logging.Logger
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "logger": LIBRDKAFKA_LOG,  # type: ignore[dict-item]
                         "socket.timeout.ms": int(timeout * 1000)})
    prefix = settings.group("")
    groups = sorted(g.group_id for g in admin.list_consumer_groups(request_timeout=timeout).result().valid
                    if g.group_id.startswith(prefix))
    committed: dict[str, list[TopicPartition]] = {}
    for group in groups:
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
        committed[group] = [tp for tp in fut.result().topic_partitions if tp.offset >= 0]
    wanted = {TopicPartition(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
    latest: dict[tuple[str, int], int] = {}
    if wanted:
        futs = admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=timeout)
        for tp, fut in futs.items():
            try:
                latest[(tp.topic, tp.partition)] = fut.result().offset
            except KafkaException:   # topic gone since the commit (a restarted in-memory broker)
                continue
    out = []
    for group, tps in committed.items():
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp)
        for topic, parts in sorted(by_topic.items()):
            lag = sum(max(0, latest.get((tp.topic, tp.partition), tp.offset) - tp.offset) for tp in parts)
            out.append(GroupLag(group, topic, len(parts), sum(tp.offset for tp in parts), lag))
    return out
