"""Training consumer: DatasetCreated / TrainingRequested → trained, evaluated, registered model.

One ``ConsumerRunner`` (one event at a time; the runner keeps polling with its
partitions paused while a model trains, so long runs never cause a rebalance)
around ``TrainingHandler``. Consumers in the group ``modelbus.training`` share
the work; the run ledger in the artifact store makes each logical run happen
once and register at most one model, whatever the redeliveries and crashes.

Run: ``python -m consumers.training`` (or ``modelbus consumer run training``).
"""

from __future__ import annotations

import argparse
import logging
import threading

from consumers.training.events import PRODUCER
from consumers.training.handler import Interrupted, TrainingHandler
from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka import topics as T
from infra.logs import configure_logging
from infra.settings import Settings
from infra.storage import ArtifactStore

GROUP = "training"   # consumer group name below kafka.topic_prefix (settings.group)
EVENT_TYPES = ("DatasetCreated", "TrainingRequested")
log = logging.getLogger("modelbus.consumers.training")


def build_runner(settings: Settings, store: ArtifactStore, producer: EventProducer, *, group_id: str | None = None,
                 owner: str | None = None, **runner_kw) -> ConsumerRunner:
    """A runner whose handler trains one event at a time and stops training when the runner stops."""
    stop = threading.Event()   # the runner sets it; the handler stops training mid-epoch when it is set
    handler = TrainingHandler(settings, store, producer, owner=owner, stopping=stop.is_set)
    runner_kw.setdefault("max_attempts", 3)
    return ConsumerRunner(settings, group_id=group_id or settings.group(GROUP),
                          topics=[settings.topic(T.DATASETS_CREATED), settings.topic(T.TRAINING_REQUESTED)],
                          handler=handler, name="training", producer=producer, max_batch=1,
                          expected_types=EVENT_TYPES, stop_event=stop, **runner_kw)


def main(argv: list[str] | None = None) -> None:
    from infra.settings import load_settings
    from infra.storage.factory import store_from_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.training",
                                     description="dataset-created / training-requested → trained, registered model")
    parser.add_argument("--group", default=None, help=f"Kafka consumer group (default: <topic_prefix>.{GROUP})")
    parser.add_argument("--idle-timeout", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("--max-events", type=int, default=None, help="exit after handling this many events")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    producer = EventProducer(settings, name=PRODUCER)
    runner = build_runner(settings, store_from_settings(settings), producer, group_id=args.group)
    try:
        stats = runner.run(max_events=args.max_events, idle_timeout=args.idle_timeout)
    except Interrupted as exc:   # SIGTERM mid-run: nothing is lost, the next consumer resumes
        log.info("%s", exc)
        return
    log.info("training consumer stopped: %s", stats)


__all__ = ["GROUP", "TrainingHandler", "build_runner", "main"]
