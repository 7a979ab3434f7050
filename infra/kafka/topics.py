"""The topic catalogue: every ModelBus topic, the events it carries, and how it is configured.

Logical names are prefixed with ``settings.kafka.topic_prefix`` at run time
(``settings.topic(DATASETS_CREATED)``). Topics are created up front by
``modelbus up`` / ``ensure_topics`` with explicit partitions, so consumer
groups and faust tables always agree on partition counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATASETS_CREATED = "datasets.created"
TRAINING_REQUESTED = "training.requested"
TRAINING_RUNS = "training.runs"
MODELS_REGISTERED = "models.registered"
MODELS_DEPLOYED = "models.deployed"
MODELS_REJECTED = "models.rejected"
INFERENCE_TELEMETRY = "inference.telemetry"
MONITORING_DRIFT = "monitoring.drift"
SERVING_METRICS = "serving.metrics"
OUTCOMES_OBSERVED = "outcomes.observed"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str                       # logical name, without prefix
    events: tuple[str, ...]         # event types it carries
    producers: str                  # who writes it (documentation: the catalogue in docs/events.md)
    consumers: str                  # who reads it
    partitions: int | None = None   # None: settings.kafka.default_partitions
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(DATASETS_CREATED, ("DatasetCreated",), "producers SDK / `modelbus dataset push`",
              "training consumers, metadata sink"),
    TopicSpec(TRAINING_REQUESTED, ("TrainingRequested",), "`modelbus train`, search coordinator, drift policy",
              "training consumers, search coordinator, metadata sink"),
    TopicSpec(TRAINING_RUNS, ("TrainingRunUpdated",), "training consumers", "search coordinator, metadata sink"),
    TopicSpec(MODELS_REGISTERED, ("ModelRegistered",), "training consumers", "deployer, metadata sink"),
    TopicSpec(MODELS_DEPLOYED, ("ModelDeployed",), "deployer", "deployer (reconciliation), metadata sink",
              partitions=1),
    TopicSpec(MODELS_REJECTED, ("DeploymentRejected",), "deployer", "metadata sink", partitions=1),
    TopicSpec(INFERENCE_TELEMETRY, ("InferenceTelemetry",), "served models inside Triton", "telemetry sink"),
    TopicSpec(MONITORING_DRIFT, ("DriftDetected",), "drift monitor", "metadata sink"),
    TopicSpec(SERVING_METRICS, ("ServerMetrics",), "Triton metrics scraper, telemetry loss reports", "metadata sink"),
    TopicSpec(OUTCOMES_OBSERVED, ("OutcomeObserved",), "upstream apps: SDK `report_outcome`, `modelbus outcome push`",
              "outcome sink"),
)

BY_NAME = {t.name: t for t in CATALOGUE}

SEARCH_INBOX = "search-coordinator.inbox"
# Topics one consumer keeps for itself. Not in the catalogue (nobody else reads or writes them, and
# their events also travel on catalogue topics), but created with them, so that `modelbus up` after a
# broker restart brings them back with the right partitions instead of a broker's auto-create default.
INTERNAL: tuple[TopicSpec, ...] = (
    TopicSpec(SEARCH_INBOX, ("TrainingRequested", "TrainingRunUpdated"), "search coordinator (re-keyed by search id)",
              "search coordinator: one partition, so one search's events stay in order", partitions=1),
)


def dlq_name(topic: str) -> str:
    """Dead-letter topic of a (full) topic name."""
    return topic + DLQ_SUFFIX
