"""The training handler: one triggering event → at most one logical run → at most one ModelRegistered.

Why it looks like this: events are delivered at least once and consumers die
mid-run, so the handler never trusts "I have not seen this event". It asks the
run ledger (artifact store) instead: a DONE run is skipped, a run another
consumer is actively training is waited for, a run whose owner stopped
heartbeating is taken over with attempt + 1 from the shared checkpoint. The
model is uploaded before its ModelRegistered is sent, and the run is marked
DONE only after the broker acknowledged that event.

Outcomes: user-fixable problems (unusable data, invalid spec, diverging loss,
unknown dataset) → a ``failed`` update and the event is done; anything
unexpected → a ``failed`` update, then re-raised so the runner retries it
(and dead-letters it after its last attempt).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from consumers.training import events as E
from consumers.training.jobs import Job, JobError, JobResolver
from consumers.training.ledger import Claim, Heartbeat, RunAborted, RunLedger
from infra.errors import DeliveryError, FatalError, SkipEvent
from infra.kafka import topics as T
from infra.kafka.envelope import Envelope
from infra.kafka.outcome import is_transient
from infra.kafka.producer import EventProducer
from infra.settings import Settings
from infra.storage import ArtifactStore
from producers.errors import ProducerError
from schemas.types import TrainingRequested, TrainingRunUpdated
from trainer.errors import CheckpointError, TrainerError, TrainingStopped

log = logging.getLogger("modelbus.consumers.training")
CHECKPOINT_FILE = "checkpoint.pt"


class Interrupted(FatalError):
    """The consumer is stopping mid-run: the event stays uncommitted and the next consumer resumes the run."""


class TrainingHandler:
    """``ConsumerRunner`` handler for DatasetCreated and TrainingRequested."""

    def __init__(self, settings: Settings, store: ArtifactStore, producer: EventProducer, *,
                 owner: str | None = None, stopping: Callable[[], bool] = lambda: False):
        self.settings = settings
        self.store = store
        self.producer = producer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = stopping
        self.ledger = RunLedger(store, lease_s=settings.training.lease_s)
        self.jobs = JobResolver(settings, store)
        self.runs_topic = settings.topic(T.TRAINING_RUNS)
        self.models_topic = settings.topic(T.MODELS_REGISTERED)

    # -- entry --------------------------------------------------------------
    def __call__(self, env: Envelope) -> None:
        if env.event_type == "TrainingRequested" and int(env.typed(TrainingRequested).get("n_trials") or 0) > 0:
            raise SkipEvent("hyperparameter search request: the search coordinator runs it")
        try:
            job = self.jobs.resolve(env)
        except JobError as exc:
            log.warning("%s %s cannot be trained: %s", env.event_type, env.event_id, exc)
            self._publish(self._failed(exc.job, 1, str(exc), duration_s=0.0))
            return
        try:
            got = self.ledger.acquire(job.run_id, self.owner, should_abort=self.stopping,
                                      on_wait=lambda who, n: log.info("run %s attempt %d is held by %s; waiting",
                                                                      job.run_id, n, who))
        except RunAborted as exc:
            raise Interrupted(str(exc)) from exc
        if not isinstance(got, Claim):
            self._answer_done(job, got)
            raise SkipEvent(f"run {job.run_id} is done ({got.get('model_name')} v{got.get('model_version')})")
        self._run_claimed(job, got, env)

    def _run_claimed(self, job: Job, claim: Claim, env: Envelope) -> None:
        t0 = time.perf_counter()
        with Heartbeat(self.ledger, claim) as hb:
            try:
                outcome = self.ledger.outcome(job.run_id)
                if outcome is not None:   # a previous attempt stored its events, maybe without sending them
                    self._republish(job, claim, outcome)
                    return
                self._train(job, claim, hb, t0)
            except TrainingStopped as exc:
                if hb.lost.is_set():
                    raise SkipEvent(f"run {job.run_id} attempt {claim.attempt} was taken over") from exc
                self.ledger.release(claim)
                raise Interrupted(f"stopping: run {job.run_id} interrupted; its checkpoint lets the next "
                                  "consumer resume") from exc
            except SkipEvent:
                raise
            except DeliveryError:   # the broker did not take the events: the retry re-sends the saved outcome
                self.ledger.release(claim)
                raise
            except CheckpointError as exc:   # disk or store trouble: worth retrying
                self._fail_transient(job, claim, exc, t0, env)
                raise
            except (TrainerError, ProducerError) as exc:
                log.warning("run %s failed: %s", job.run_id, exc)
                self._publish(self._failed(job, claim.attempt, str(exc), duration_s=time.perf_counter() - t0))
                self.ledger.release(claim)
            except Exception as exc:
                self._fail_transient(job, claim, exc, t0, env)
                raise

    # -- the run ------------------------------------------------------------
    def _train(self, job: Job, claim: Claim, hb: Heartbeat, t0: float) -> None:
        from trainer.loop import resolve_device
        from trainer.provenance import code_version, environment
        from trainer.run import train_and_evaluate

        assert job.spec is not None and job.info is not None
        device = resolve_device(job.spec.device)
        env, code = environment(device, job.spec.world_size), code_version()
        resume = {"attempt": claim.attempt, "previous_owner": claim.previous_owner}
        self.producer.send(self.runs_topic, "TrainingRunUpdated", E.run_update(
            job, "started", attempt=claim.attempt, eid=E.event_id(job.run_id, claim.attempt, "started"),
            params_json=json.dumps({**job.spec.model_dump(mode="json"), **resume}), environment=env,
            code_version=code, duration_s=0.0), key=job.run_id)
        ckdir = self.settings.checkpoint_dir / job.run_id
        ckdir.mkdir(parents=True, exist_ok=True)
        shared = self.ledger.pull_checkpoint(job.run_id, ckdir / CHECKPOINT_FILE)
        notes: list[str] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            try:
                self.ledger.push_checkpoint(job.run_id, ckdir / CHECKPOINT_FILE)
            except Exception as exc:  # noqa: BLE001 - a resume point is a bonus, training goes on
                log.warning("run %s: checkpoint not shared: %s", job.run_id, exc)
            params = {"attempt": claim.attempt, **({"checkpoint_error": notes[-1]} if notes else {})}
            self.producer.send(self.runs_topic, "TrainingRunUpdated", E.run_update(
                job, "epoch", attempt=claim.attempt, eid=E.event_id(job.run_id, claim.attempt, "epoch", epoch),
                epoch=epoch, metrics=metrics, params_json=json.dumps(params), environment=env, code_version=code,
                duration_s=time.perf_counter() - t0), key=job.run_id)

        with tempfile.TemporaryDirectory(prefix=f"modelbus-train-{job.run_id}-") as tmp:
            data = self.jobs.load(job, Path(tmp) / "data")
            result = train_and_evaluate(
                data, job.info, job.spec, Path(tmp) / "artifact", checkpoint_dir=ckdir, on_epoch=on_epoch,
                should_stop=lambda: hb.lost.is_set() or self.stopping(), on_checkpoint_error=notes.append)
            del data
            if hb.lost.is_set() or not self.ledger.still_owner(claim):
                raise SkipEvent(f"run {job.run_id} attempt {claim.attempt} was taken over; its result is dropped")
            outcome = self._publishable(job, claim, result, t0, resumed_shared=shared)
        self.ledger.save_outcome(job.run_id, outcome)
        self._send_outcome(job, claim, outcome)
        shutil.rmtree(ckdir, ignore_errors=True)

    def _publishable(self, job: Job, claim: Claim, result: Any, t0: float, *, resumed_shared: bool) -> dict:
        """Upload the artifact and build the finished / ModelRegistered events (not sent yet)."""
        from trainer.export import set_model_version

        version, signature = None, result.signature
        if job.register:
            version = self.ledger.allocate_version(job.model_name, job.run_id, self.owner)
            signature = set_model_version(result.artifact_dir, job.model_name, version)
            prefix = f"models/{job.model_name}/{version}"
        else:
            prefix = self.ledger.key(job.run_id, "artifact")
        uris = self.ledger.upload(prefix, result.artifact_dir, result.files)
        artifact_uri, report_uri = self.store.uri(prefix), self.store.uri(f"{prefix}/report")
        ck_key = self.ledger.key(job.run_id, CHECKPOINT_FILE)
        extra = {"artifact": artifact_uri, "report": report_uri}
        if self.store.exists(ck_key):
            extra["checkpoint"] = self.store.uri(ck_key)
        params = {**result.params, "attempt": claim.attempt, "warnings": list(result.warnings),
                  "resumed_from_shared_checkpoint": resumed_shared}
        finished = E.run_update(
            job, "finished", attempt=claim.attempt, eid=E.event_id(job.run_id, "finished", job.trigger_id),
            metrics=E.final_metrics(result), params_json=json.dumps(params, sort_keys=True, default=str),
            environment=result.environment, code_version=result.code_version,
            duration_s=time.perf_counter() - t0, artifact_uris={**uris, **extra})
        registered = None
        if version is not None:
            registered = E.model_registered(job, result, version=version, artifact_uri=artifact_uri,
                                            report_uri=report_uri, signature=signature)
        return {"finished": finished, "registered": registered, "model_name": job.model_name,
                "model_version": version, "attempt": claim.attempt}

    def _send_outcome(self, job: Job, claim: Claim, outcome: dict) -> None:
        """finished, then ModelRegistered; DONE only once the broker acknowledged both."""
        self.producer.send(self.runs_topic, "TrainingRunUpdated", outcome["finished"], key=job.run_id)
        if outcome.get("registered") is not None:
            self.producer.send(self.models_topic, "ModelRegistered", outcome["registered"], key=job.model_name)
        self.producer.flush(30)
        self.ledger.mark_done(job.run_id, model_name=outcome.get("model_name"),
                              model_version=outcome.get("model_version"), attempt=claim.attempt,
                              registered_event_id=E.registered_event_id(job.run_id) if outcome.get("registered")
                              else None)
        self.ledger.release(claim)
        reg = outcome.get("registered")
        log.info("run %s finished (attempt %d)%s", job.run_id, claim.attempt,
                 f": registered {reg['model_name']} v{reg['model_version']}" if reg else " (not registered)")

    def _republish(self, job: Job, claim: Claim, outcome: dict) -> None:
        """Re-send a stored outcome with its original event ids (consumers dedupe on them), then mark DONE."""
        log.info("run %s: re-publishing the outcome of attempt %s", job.run_id, outcome.get("attempt"))
        self._send_outcome(job, claim, outcome)
        if job.request_id and job.request_id != outcome["finished"].get("request_id"):
            self._publish(E.answer(outcome["finished"], job))

    def _answer_done(self, job: Job, done: dict) -> None:
        """A request for a run that is already done gets the run's ``finished`` update (not a second model)."""
        if job.request_id is None:
            return
        outcome = self.ledger.outcome(job.run_id)
        if outcome is not None:
            self._publish(E.answer(outcome["finished"], job))

    # -- failures -------------------------------------------------------------
    def _failed(self, job: Job, attempt: int, reason: str, *, duration_s: float,
                final: bool = True) -> TrainingRunUpdated:
        return E.run_update(job, "failed", attempt=attempt, eid=E.event_id(job.run_id, attempt, "failed",
                                                                          job.trigger_id),
                            failure_reason=reason[:4000], duration_s=duration_s, final=final,
                            params_json=job.spec.to_json() if job.spec is not None else "{}")

    def _fail_transient(self, job: Job, claim: Claim, exc: BaseException, t0: float, env: Envelope) -> None:
        last_try = env.last_attempt and not is_transient(exc)   # the policy retries transient errors until they pass
        log.exception("run %s attempt %d failed unexpectedly%s", job.run_id, claim.attempt,
                      "; giving up" if last_try else "; the event will be retried")
        reason = f"{type(exc).__name__}: {exc}"
        if last_try:
            reason = f"gave up after {env.max_attempts} attempt(s), the event is dead-lettered: {reason}"
        try:
            self._publish(self._failed(job, claim.attempt, reason, duration_s=time.perf_counter() - t0,
                                       final=last_try))
        except Exception as send_exc:  # noqa: BLE001 - the original error is what matters
            log.error("could not report the failure of %s: %s", job.run_id, send_exc)
        self.ledger.release(claim)

    def _publish(self, value: TrainingRunUpdated) -> None:
        self.producer.publish(self.runs_topic, "TrainingRunUpdated", value, key=value["run_id"])
