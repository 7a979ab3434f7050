"""Deployer: ModelRegistered → promotion gate → Triton → ModelDeployed / DeploymentRejected.

A faust-streaming worker, because its decisions depend on state: the champion
per model name lives in a changelog-backed table, so a restarted deployer
gates the next candidate against the same champion. The table value of a model
name holds the champion, a short history of promoted records (rollback
targets) and the versions already decided, written in ONE changelog record per
decision so a crash never leaves half of it.

Exactly one announcement per (model, version), across redeliveries, replays
and crashes:

* a version already decided in the table is skipped (same event twice, a
  replay from offset 0, or a second registration of the same version);
* announcements carry a derived event id (uuid5 of model/version/decision);
  at start the deployer reads MODELS_DEPLOYED and MODELS_REJECTED once, so a
  decision announced just before a crash (table not yet written) is recorded,
  not announced again;
* a crash between loading into Triton and announcing leaves the event
  uncommitted and undecided: the restarted deployer gates it again (same
  champion, same verdict), ``Deployer.deploy`` finds it already serving (no
  reload) and the one announcement follows.

Blocking work (gate, Triton, artifact store, publishing) runs in a thread so
the event loop keeps heartbeating; one asyncio lock keeps deployments and
reconciliation passes from touching Triton at the same time.

Rollbacks are done by ``modelbus rollback`` and announced as
ModelDeployed(action='rollback'); a second agent reads them into a rollback
table and the effective champion is the newer of the last promotion and the
last rollback (one deployer worker per Triton repository).

Stage names in logs: gate, artifact, load, smoke, announce, rollback, reconcile.
Run: ``python -m consumers.deployer`` (or ``modelbus consumer run deployer``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import faust

from consumers import gate_evidence
from consumers.champion import champion_for
from consumers.deploy_events import (
    DEPLOYED,
    PRODUCER,
    REJECTED,
    champion_record,
    decision_event_id,
    deployed_event,
    effective_champion,
    event_time_us,
    record_from_deployed,
    rejected_event,
    with_decision,
)
from consumers.reconcile import STAGE_RECONCILE, reconcile, triton_live
from infra.errors import FatalError, SkipEvent
from infra.faults import maybe_fault
from infra.kafka.envelope import Envelope
from infra.kafka.faust_app import EdgeDecoder, faust_worker, make_app, raw_topic
from infra.kafka.outcome import RetryPolicy, handle_async
from infra.kafka.producer import EventProducer
from infra.kafka.reader import TopicReader
from infra.kafka.topics import BY_NAME, MODELS_DEPLOYED, MODELS_REGISTERED, MODELS_REJECTED
from infra.logs import configure_logging
from infra.settings import Settings
from schemas.types import DeploymentRejected, ModelDeployed, ModelRegistered
from serving import gate
from serving.deploy import Deployer
from serving.errors import ServerUnavailable

log = logging.getLogger("modelbus.consumers.deployer")

APP_ID = "deployer"
STATE_TABLE = "deployer-state"
ROLLBACK_TABLE = "deployer-rollbacks"
FAULT_AFTER_LOAD = "deployer.after_load"
STAGE_GATE, STAGE_ANNOUNCE, STAGE_ROLLBACK = "gate", "announce", "rollback"
MAX_ATTEMPTS = 5          # unexpected errors: retried, then the event goes to the DLQ
MAX_BACKOFF_S = 30.0      # Triton, storage or Kafka down (transient errors): retried until they are back
RETRY_POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff_s=1.0, max_backoff_s=MAX_BACKOFF_S)


def partitions(settings: Settings, topic: str) -> int:
    return BY_NAME[topic].partitions or settings.kafka.default_partitions


def changelog_topic(settings: Settings, table: str) -> str:
    """Changelog topic of one of the deployer's tables (faust's naming: ``<app id>-<table>-changelog``)."""
    return f"{settings.kafka.topic_prefix}.{APP_ID}-{table}-changelog"


@dataclass
class Outcome:
    decision: str                        # DEPLOYED or REJECTED
    event_id: str                        # of the (one) announcement
    stage: str = ""                      # where a rejection stopped
    champion: dict[str, Any] | None = None


def scan_announced(settings: Settings, timeout: float = 30.0) -> set[str]:
    """Event ids already on MODELS_DEPLOYED and MODELS_REJECTED, read from the beginning to their current end."""
    topics = [settings.topic(MODELS_DEPLOYED), settings.topic(MODELS_REJECTED)]
    with TopicReader(settings, topics, start="beginning", skip_missing=True, name=f"{APP_ID}-scan") as reader:
        return {env.event_id for env in reader.read_to_end(timeout)}   # refused records: the sinks judge them


class DeployerWorker:
    """The faust app, its tables and agents, and the blocking deployment work they hand to a thread."""

    def __init__(self, settings: Settings, *, reconcile_interval_s: float | None = None,
                 deployer: Deployer | None = None):
        self.settings = settings
        self.reconcile_interval_s = reconcile_interval_s or settings.serving.reconcile_interval_s
        n_registered, n_deployed = partitions(settings, MODELS_REGISTERED), partitions(settings, MODELS_DEPLOYED)
        self.app = make_app(settings, APP_ID, topic_partitions=n_registered)
        self.state = self.app.Table(STATE_TABLE, default=None, partitions=n_registered)
        self.rollbacks = self.app.Table(ROLLBACK_TABLE, default=None, partitions=n_deployed)
        group = self.app.conf.id
        self.producer = EventProducer(settings, name=PRODUCER)
        self.registered_decoder = EdgeDecoder(settings, group, self.producer, expected_types={"ModelRegistered"})
        self.deployed_decoder = EdgeDecoder(settings, group, self.producer, expected_types={"ModelDeployed"})
        self.deployer = deployer or Deployer(settings)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deployer")
        self.announced: set[str] | None = None
        self._store = None
        self._lock: asyncio.Lock | None = None
        registered = raw_topic(self.app, settings.topic(MODELS_REGISTERED), partitions=n_registered)
        deployed = raw_topic(self.app, settings.topic(MODELS_DEPLOYED), partitions=n_deployed)
        self.app.agent(registered, name="deployer-registered")(self._registered_agent)
        self.app.agent(deployed, name="deployer-rollbacks")(self._rollback_agent)
        self.app.task(self._reconcile_loop)

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def clickhouse(self):
        """The metadata store, connected on first use (only a champion rebuild needs it)."""
        if self._store is None:
            from infra.clickhouse import connect

            self._store = connect(self.settings)
        return self._store

    async def blocking(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    def desired(self) -> dict[str, dict[str, Any]]:
        """The champion of every model name: what Triton should serve."""
        out = {}
        for name in set(self.state.keys()) | set(self.rollbacks.keys()):
            champ = effective_champion(self.state.get(name), self.rollbacks.get(name))
            if champ:
                out[name] = champ
        return out

    # -- agents -----------------------------------------------------------------------------------
    async def _registered_agent(self, stream: faust.StreamT) -> None:
        for attempt in itertools.count(1):
            try:
                self.announced = await self.blocking(scan_announced, self.settings)
                break
            except Exception as exc:  # noqa: BLE001 - the broker may still be starting
                log.warning("stage=%s reading earlier announcements failed (attempt %d): %s", STAGE_ANNOUNCE,
                            attempt, exc)
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** attempt))
        log.info("deployer ready: %d earlier announcements known", len(self.announced or ()))
        async for event, env in self.registered_decoder.envelopes(stream):
            await self._handle_registered(event, env)

    async def _rollback_agent(self, stream: faust.StreamT) -> None:
        async for _event, env in self.deployed_decoder.envelopes(stream):
            value = env.typed(ModelDeployed)
            if value.get("action") != "rollback":
                continue
            record = record_from_deployed(value)
            self.rollbacks[record["model_name"]] = record
            log.info("stage=%s model=%s version=%d is the champion again (event %s)", STAGE_ROLLBACK,
                     record["model_name"], record["model_version"], env.event_id)

    async def _reconcile_loop(self) -> None:
        mismatched: dict[str, str] = {}
        while not self.app.should_stop:
            try:
                async with self.lock:
                    report = await self.blocking(reconcile, self.deployer, self.desired())
                for name, note in report.mismatched.items():
                    if mismatched.get(name) != note:   # once per distinct mismatch, not every pass
                        log.warning("stage=%s model=%s %s", STAGE_RECONCILE, name, note)
                mismatched = report.mismatched
            except Exception:
                log.exception("stage=%s pass failed", STAGE_RECONCILE)
            await self.app.sleep(self.reconcile_interval_s)

    # -- one ModelRegistered --------------------------------------------------------------------
    async def _handle_registered(self, event: faust.EventT, env: Envelope) -> None:
        """One event through the shared outcome policy (infra/kafka/outcome.py), as every runtime does."""
        try:
            outcome = await handle_async(self._register, env, RETRY_POLICY, stage="deployer")
        except FatalError as exc:
            log.critical("%s: %s", env.coordinates, exc)
            await self.app.crash(exc)
            return
        await self.registered_decoder.settle(event, outcome)

    async def _register(self, env: Envelope) -> None:
        value = env.typed(ModelRegistered)
        name, version = str(value["model_name"]), int(value["model_version"])
        state = self.state.get(name)
        prior = ((state or {}).get("decided") or {}).get(str(version))
        if prior:
            raise SkipEvent(f"model={name} version={version} already {prior['decision']} "
                            f"(announcement {prior['event_id']})")
        if (current := effective_champion(state, self.rollbacks.get(name))) and \
                int(current["model_version"]) == version:
            raise SkipEvent(f"model={name} version={version} is the champion already")
        async with self.lock:   # held until the table says it: reconciliation never sees a half-made change
            champion = await self.blocking(champion_for, self.clickhouse, self.deployer.repo, name, version,
                                           effective_champion(state, self.rollbacks.get(name)))
            outcome = await self.blocking(self.decide, value, champion)
            self.state[name] = with_decision(self.state.get(name), version, outcome.decision,
                                             outcome.event_id, champion=outcome.champion,
                                             stage=outcome.stage, source_event_id=env.event_id)

    def decide(self, value: ModelRegistered, champion: dict[str, Any] | None) -> Outcome:
        """Gate, deploy and announce one candidate (runs in a worker thread)."""
        name, version = str(value["model_name"]), int(value["model_version"])
        deployed_id, rejected_id = (decision_event_id(name, version, d) for d in (DEPLOYED, REJECTED))
        announced = self.announced if self.announced is not None else set()
        if deployed_id in announced:
            log.info("stage=%s model=%s version=%d was announced before a restart; recorded, not announced again",
                     STAGE_ANNOUNCE, name, version)
            return Outcome(DEPLOYED, deployed_id, champion=champion_record(value, deployed_event_id=deployed_id,
                                                                           at_us=time.time_ns() // 1000))
        if rejected_id in announced:
            return Outcome(REJECTED, rejected_id)
        rows = gate_evidence.paired_rows(self.deployer.store, value, champion)
        decision = gate.decide(value, champion, self.settings, rows)
        champion_version = int(champion["model_version"]) if champion else None
        log.info("stage=%s model=%s version=%d passed=%s vs champion v%s: %s", STAGE_GATE, name, version,
                 decision.passed, champion_version, decision.reason or "all checks passed")
        if not decision.passed:
            self.announce(MODELS_REJECTED, "DeploymentRejected",
                          rejected_event(value, decision, stage=STAGE_GATE, reason=decision.reason,
                                         champion_version=champion_version))
            return Outcome(REJECTED, rejected_id, stage=STAGE_GATE)
        result = self.deployer.deploy(value)
        if not result.ok:
            if not triton_live(self.settings.triton.http_url):
                raise ServerUnavailable(f"Triton went away while deploying ({result.stage}: {result.reason})")
            log.warning("stage=%s model=%s version=%d rejected: %s", result.stage, name, version, result.reason)
            serving = result.serving_version if result.serving_version is not None else champion_version
            self.announce(MODELS_REJECTED, "DeploymentRejected",
                          rejected_event(value, decision, stage=result.stage, reason=result.reason,
                                         champion_version=serving))
            return Outcome(REJECTED, rejected_id, stage=result.stage)
        log.info("stage=load model=%s version=%d serving (%.1fs)", name, version, result.duration_s)
        maybe_fault(FAULT_AFTER_LOAD)
        event = deployed_event(value, decision, result, previous_version=champion_version)
        self.announce(MODELS_DEPLOYED, "ModelDeployed", event)
        return Outcome(DEPLOYED, deployed_id,
                       champion=champion_record(value, deployed_event_id=deployed_id,
                                                at_us=event_time_us(event["header"])))

    def announce(self, topic: str, event_type: str, value: ModelDeployed | DeploymentRejected) -> None:
        self.producer.publish(self.settings.topic(topic), event_type, value, key=value["model_name"])
        event_id = str(value["header"]["event_id"])
        if self.announced is not None:
            self.announced.add(event_id)
        log.info("stage=%s %s model=%s version=%d event %s", STAGE_ANNOUNCE, event_type, value["model_name"],
                 value["model_version"], event_id)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.producer.close(10)


def main(argv: list[str] | None = None) -> int:
    from infra.kafka.admin import ensure_topics
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.deployer", description=__doc__.splitlines()[0])
    parser.add_argument("--reconcile-interval", type=float, default=None, metavar="S",
                        help="seconds between reconciliation passes (default: serving.reconcile_interval_s)")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    for name in settings.serving.policies:   # a broken policy fails now, not at that model's first candidate
        gate.GatePolicy.for_model(settings, name)
    ensure_topics(settings)
    worker = DeployerWorker(settings, reconcile_interval_s=args.reconcile_interval)
    try:
        faust_worker(worker.app, settings, loglevel=settings.log_level.lower(), quiet=True,
                     redirect_stdouts=False).execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
