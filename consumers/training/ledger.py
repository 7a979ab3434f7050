"""The run ledger: who owns a logical training run, and whether it is done, kept in the artifact store.

The artifact store is the one thing every training consumer shares (across
machines too, on S3) and it already holds what a run produces, so the markers
live next to the outputs they describe and survive any consumer. Ownership is
decided by objects created only if absent (a hard link locally, a conditional
PUT on S3), never by read-then-write, so two consumers can never both own an
attempt or a model version. Layout::

    runs/<run_id>/attempts/<n>.json   created once: whoever creates it owns attempt n
    runs/<run_id>/lease.json          owner, attempt and heartbeat, renewed while training
    runs/<run_id>/checkpoint.pt       newest epoch checkpoint, so another consumer can resume
    runs/<run_id>/version.json        the model version allocated to the run
    runs/<run_id>/outcome.json        the finished and ModelRegistered events, saved before publishing
    runs/<run_id>/DONE                written after ModelRegistered was acknowledged
    models/<name>/<v>/_CLAIM          created once: version v of <name> belongs to one run

Liveness compares heartbeats with this machine's clock; hosts sharing a store
must keep their clocks within a small fraction of ``lease_s``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from infra.storage import ArtifactStore, StorageError

log = logging.getLogger("modelbus.consumers.training.ledger")


class RunAborted(Exception):
    """Waiting for another consumer's run was abandoned because this consumer is stopping."""


@dataclass(frozen=True)
class Claim:
    """This consumer owns ``attempt`` of ``run_id``; ``previous_owner`` is set on a takeover."""

    run_id: str
    owner: str
    attempt: int
    previous_owner: str | None = None


class RunLedger:
    def __init__(self, store: ArtifactStore, lease_s: float, *, poll_s: float = 0.5,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.clock = clock

    # -- keys -------------------------------------------------------------
    @staticmethod
    def key(run_id: str, name: str) -> str:
        return f"runs/{run_id}/{name}"

    def _attempt_key(self, run_id: str, n: int) -> str:
        return self.key(run_id, f"attempts/{n}.json")

    def _read(self, key: str) -> dict[str, Any] | None:
        """A JSON marker, or None when absent; an unreadable one is treated as absent (and logged)."""
        try:
            if not self.store.exists(key):
                return None
            doc = json.loads(self.store.get_bytes(key))
        except ValueError as exc:
            log.warning("ignoring unreadable marker %s: %s", key, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def _write(self, key: str, doc: dict[str, Any]) -> None:
        self.store.put_bytes(key, json.dumps(doc, default=str).encode())

    # -- done / outcome -----------------------------------------------------
    def done(self, run_id: str) -> dict[str, Any] | None:
        return self._read(self.key(run_id, "DONE"))

    def mark_done(self, run_id: str, **info: Any) -> None:
        self._write(self.key(run_id, "DONE"), {"run_id": run_id, "time": self.clock(), **info})

    def outcome(self, run_id: str) -> dict[str, Any] | None:
        return self._read(self.key(run_id, "outcome.json"))

    def save_outcome(self, run_id: str, doc: dict[str, Any]) -> None:
        self._write(self.key(run_id, "outcome.json"), doc)

    # -- leases ---------------------------------------------------------------
    def attempts(self, run_id: str) -> list[int]:
        out = []
        for key in self.store.list(self.key(run_id, "attempts/")):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def holder(self, run_id: str) -> tuple[int, str | None, float | None]:
        """(latest attempt, its owner, last sign of life) — the time is None when the attempt was released."""
        attempts = self.attempts(run_id)
        if not attempts:
            return 0, None, None
        latest = attempts[-1]
        marker = self._read(self._attempt_key(run_id, latest)) or {}
        owner, beat = marker.get("owner"), float(marker.get("created", 0.0))
        lease = self._read(self.key(run_id, "lease.json"))
        if lease and lease.get("attempt") == latest:
            if lease.get("released"):
                return latest, owner, None
            beat = max(beat, float(lease.get("heartbeat", 0.0)))
        return latest, owner, beat

    def acquire(self, run_id: str, owner: str, *, should_abort: Callable[[], bool] = lambda: False,
                on_wait: Callable[[str | None, int], None] | None = None) -> Claim | dict[str, Any]:
        """Own the next attempt of ``run_id``, or return its DONE record.

        A live lease held by another consumer is waited for (polling) until the
        run is DONE or the lease expires, then taken over with attempt + 1.
        """
        waited = False
        while True:
            done = self.done(run_id)
            if done is not None:
                return done
            latest, holder, beat = self.holder(run_id)
            if beat is not None and self.clock() - beat < self.lease_s:
                if should_abort():
                    raise RunAborted(f"stopped while waiting for run {run_id} (held by {holder})")
                if not waited and on_wait is not None:
                    on_wait(holder, latest)
                waited = True
                time.sleep(self.poll_s)
                continue
            n = latest + 1
            now = self.clock()
            mine = json.dumps({"owner": owner, "attempt": n, "created": now}).encode()
            if self.store.put_if_absent(self._attempt_key(run_id, n), mine):
                self._write(self.key(run_id, "lease.json"), {"owner": owner, "attempt": n, "heartbeat": now})
                return Claim(run_id, owner, n, previous_owner=holder if latest else None)
            # another consumer created attempt n first: look again

    def renew(self, claim: Claim) -> bool:
        """Heartbeat; False when a newer attempt exists (this consumer was presumed dead and replaced)."""
        if self.store.exists(self._attempt_key(claim.run_id, claim.attempt + 1)):
            return False
        self._write(self.key(claim.run_id, "lease.json"),
                    {"owner": claim.owner, "attempt": claim.attempt, "heartbeat": self.clock()})
        return True

    def still_owner(self, claim: Claim) -> bool:
        return not self.store.exists(self._attempt_key(claim.run_id, claim.attempt + 1))

    def release(self, claim: Claim) -> None:
        """Give the run up so the next consumer need not wait for the lease to expire."""
        try:
            if self.still_owner(claim):
                self._write(self.key(claim.run_id, "lease.json"), {"owner": claim.owner, "attempt": claim.attempt,
                                                                   "heartbeat": self.clock(), "released": True})
        except StorageError as exc:
            log.warning("could not release run %s (it expires by itself): %s", claim.run_id, exc)

    # -- checkpoints ------------------------------------------------------------
    def push_checkpoint(self, run_id: str, path: Path) -> str | None:
        if not path.is_file():
            return None
        return self.store.put_file(self.key(run_id, "checkpoint.pt"), path)

    def pull_checkpoint(self, run_id: str, dest: Path) -> bool:
        """Copy the shared checkpoint over ``dest``; False when the run has none yet."""
        key = self.key(run_id, "checkpoint.pt")
        if not self.store.exists(key):
            return False
        tmp = dest.with_name(dest.name + ".download")
        self.store.get_file(key, tmp)
        os.replace(tmp, dest)
        return True

    # -- model versions -------------------------------------------------------------
    def allocate_version(self, model_name: str, run_id: str, owner: str) -> int:
        """The run's version of ``model_name``: reused after a crash, else the next free number.

        Versions are claimed with create-if-absent markers, so concurrent runs of
        one model name always get distinct numbers.
        """
        record = self._read(self.key(run_id, "version.json"))
        if record and record.get("model_name") == model_name:
            return int(record["version"])
        claimed = self._claimed_versions(model_name)
        for v in sorted(claimed, reverse=True):   # a claim made before a crash, not yet recorded
            doc = self._read(f"models/{model_name}/{v}/_CLAIM") or {}
            if doc.get("run_id") == run_id:
                return self._record_version(model_name, run_id, v)
        v = max(claimed, default=0) + 1
        body = {"run_id": run_id, "owner": owner, "time": self.clock()}
        while not self.store.put_if_absent(f"models/{model_name}/{v}/_CLAIM", json.dumps(body).encode()):
            v += 1
        return self._record_version(model_name, run_id, v)

    def _claimed_versions(self, model_name: str) -> list[int]:
        out = []
        for key in self.store.list(f"models/{model_name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "_CLAIM" and parts[2].isdigit():
                out.append(int(parts[2]))
        return out

    def _record_version(self, model_name: str, run_id: str, version: int) -> int:
        self._write(self.key(run_id, "version.json"), {"model_name": model_name, "version": version})
        return version

    def upload(self, prefix: str, local_dir: Path, files: dict[str, str]) -> dict[str, str]:
        """Upload an artifact directory's files; name → URI."""
        return {name: self.store.put_file(f"{prefix}/{rel}", local_dir / rel) for name, rel in files.items()}


class Heartbeat:
    """Renews a claim's lease from a thread while training runs; ``lost`` turns true when replaced."""

    def __init__(self, ledger: RunLedger, claim: Claim, interval_s: float | None = None):
        self.ledger = ledger
        self.claim = claim
        self.interval_s = interval_s or max(0.2, min(5.0, ledger.lease_s / 3))
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{claim.run_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.ledger.renew(self.claim):
                    log.warning("run %s attempt %d was taken over by another consumer", self.claim.run_id,
                                self.claim.attempt)
                    self.lost.set()
                    return
            except StorageError as exc:  # keep trying: a short store outage must not kill training
                log.warning("lease renewal of %s failed: %s", self.claim.run_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
