"""Search coordinator: runs hyperparameter searches as trials on the training consumers.

A TrainingRequested with ``n_trials > 0`` starts a search. The coordinator asks
optuna for up to ``parallelism`` trials at once and publishes each as a
TrainingRequested (reason 'search-trial', ``register_model: false``) that any
training consumer runs; their finished/failed TrainingRunUpdated events come
back and are told to the study. A failed trial is told as FAIL and the search
goes on. When every trial is told, a summary TrainingRunUpdated (the best
trial) is published and one final training with the best parameters (reason
'search-best') is requested: the only model the search registers.

Why two agents: a search's events arrive on two topics and several partitions,
but its state must live in one table partition. The ``route`` agent forwards
every relevant event, keyed by search id, to a one-partition inbox topic; the
``coordinate`` agent owns the changelog-backed table (search id → JSON state),
so a restarted coordinator recovers every search from Kafka. Outputs are
published (and acknowledged) *before* the table is written: a crash in between
replays the event against the old state, and since asking is deterministic
(``consumers.search_state``) the replay publishes the same events with the
same ids, which consumers deduplicate.

Run: ``python -m consumers.search`` (or ``modelbus consumer run search-coordinator``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
from typing import Any

from consumers import search_state as S
from infra.errors import FatalError, ModelBusError
from infra.kafka import EventProducer
from infra.kafka import topics as T
from infra.kafka.envelope import Envelope
from infra.kafka.outcome import RetryPolicy, handle_async
from infra.logs import configure_logging
from infra.settings import Settings
from schemas.types import TrainingRequested, TrainingRunUpdated

log = logging.getLogger("modelbus.consumers.search")
APP_ID = "search-coordinator"
EVENT_TYPES = {"TrainingRequested", "TrainingRunUpdated"}
# A bug in the state machine is retried a few times, then its event is dead-lettered; the broker or the
# dataset registry being down (transient errors) is waited out.
RETRY_POLICY = RetryPolicy(max_attempts=3, backoff_s=0.5, max_backoff_s=10.0)


def inbox_topic(settings: Settings) -> str:
    return settings.topic(T.SEARCH_INBOX)


class Coordinator:
    """What to do with one event, given the search's state; no faust in here."""

    def __init__(self, settings: Settings, registry: Any):
        from trainer.spec import TrainingSpec

        self.settings = settings
        self.registry = registry
        self.spec_fields = set(TrainingSpec.model_fields)

    @staticmethod
    def route(env: Envelope) -> str | None:
        """The search an event belongs to, or None when the coordinator does not care about it."""
        if env.event_type == "TrainingRequested":
            request = env.typed(TrainingRequested)
            return S.search_id_for(request["request_id"]) if int(request.get("n_trials") or 0) > 0 else None
        v = env.typed(TrainingRunUpdated)
        if v.get("search_id") and v.get("trial_number") is not None and v["status"] in ("finished", "failed") \
                and v["header"]["producer"] != S.PRODUCER:
            return str(v["search_id"])
        return None

    def handle(self, state: dict | None, env: Envelope) -> tuple[dict | None, list[S.Output]]:
        """(new state, events to publish) for one routed event; ``state`` is a private copy."""
        if env.event_type == "TrainingRequested":
            v = env.typed(TrainingRequested)
            if state is not None:
                return state, []   # a redelivered request: its outputs went out before the state was written
            try:
                ref = f"{v['dataset_name']}@{v['dataset_version']}" if v.get("dataset_version") else v["dataset_name"]
                version = self.registry.get(ref).version
                state = S.start(v, dataset_version=version, spec_fields=self.spec_fields,
                                default_parallelism=self.settings.training.search_parallelism)
            except ModelBusError as exc:   # bad search space, unknown dataset: the requester must know
                log.warning("search for request %s refused: %s", v["request_id"], exc)
                return S.refused(v, str(exc))
            log.info("search %s: %d trials, %d at once, %s %s", state["search_id"], state["n_trials"],
                     state["parallelism"], state["direction"], state["metric"])
            return state, S.plan(state)
        update = env.typed(TrainingRunUpdated)
        if state is None:
            log.warning("result for unknown search %s ignored", update.get("search_id"))
            return None, []
        if not S.tell(state, update):
            return state, []
        out = S.plan(state)
        if state["status"] != "running":
            log.info("search %s %s%s", state["search_id"], state["status"],
                     f": best trial #{state['best']['number']} {state['metric']}={state['best']['value']:.5g}"
                     if state.get("best") else f": {state.get('failure_reason')}")
        return state, out


def build_app(settings: Settings, *, registry: Any = None, producer: EventProducer | None = None):
    """The faust app with its two agents and the ``searches`` table."""
    from infra.kafka.faust_app import EdgeDecoder, make_app

    if registry is None:
        from producers.datasets.registry import registry_from_settings

        registry = registry_from_settings(settings)
    producer = producer or EventProducer(settings, name=S.PRODUCER)
    coordinator = Coordinator(settings, registry)
    app = make_app(settings, APP_ID)
    searches = app.Table("searches", default=None, partitions=1)
    raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    sources = app.topic(settings.topic(T.TRAINING_REQUESTED), settings.topic(T.TRAINING_RUNS), **raw)
    inbox = app.topic(inbox_topic(settings), partitions=1, internal=True, **raw)
    edge = EdgeDecoder(settings, app.conf.id, producer=producer, expected_types=EVENT_TYPES)

    @app.agent(sources)
    async def route(stream):
        async for event, env in edge.envelopes(stream):
            sid = coordinator.route(env)
            if sid is not None:
                await inbox.send(key=sid.encode(), value=event.message.value, headers=edge.copy_headers(event, env))

    async def step(env: Envelope) -> None:
        """One routed event. A retry starts again from the stored state: the same outputs, with the same ids."""
        sid = env.key or ""
        before = searches.get(sid)
        state, outputs = coordinator.handle(copy.deepcopy(before), env)
        if outputs:
            await asyncio.get_running_loop().run_in_executor(None, _publish_all, producer, settings, outputs)
        if state is not None and state != before:
            searches[sid] = state

    @app.agent(inbox)
    async def coordinate(stream):
        async for event, env in edge.envelopes(stream):
            try:   # the shared outcome policy (infra/kafka/outcome.py), as every runtime does
                outcome = await handle_async(step, env, RETRY_POLICY, stage=APP_ID)
            except FatalError as exc:
                log.critical("%s: %s", env.coordinates, exc)
                await app.crash(exc)
                return
            await edge.settle(event, outcome)

    return app


def _publish_all(producer: EventProducer, settings: Settings, outputs: list[S.Output]) -> None:
    """Send and wait for the broker. A ``DeliveryError`` is transient: the policy retries the event, which sends the
    whole batch again (same event ids, so duplicates are harmless)."""
    for topic, event_type, key, value in outputs:
        producer.send(settings.topic(topic), event_type, value, key=key)
    producer.flush(30)


def main(argv: list[str] | None = None) -> None:
    from infra.kafka.admin import ensure_topics
    from infra.kafka.faust_app import faust_worker
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.search",
                                     description="hyperparameter search: fans trials out, registers the best")
    parser.add_argument("--log-level", default=None, help="log level (default: settings.log_level)")
    args = parser.parse_args(argv)
    settings = load_settings()
    level = (args.log_level or settings.log_level).upper()
    configure_logging(level)
    ensure_topics(settings)   # the inbox is an internal topic: created with the catalogue, one partition
    app = build_app(settings)
    faust_worker(app, settings, loglevel=level.lower(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
