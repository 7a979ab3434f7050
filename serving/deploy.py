"""Deploying, rolling back and inspecting model versions on Triton (no Kafka here).

A deployment is: verify the artifact, place it as a new version directory,
point the config's version policy at it, ``load_model`` (Triton loads the new
version while the old one keeps answering, then retires it), and run a smoke
inference against the artifact's recorded sample output. Any failure puts the
previous config back and reloads it, so the champion keeps serving; the result
names the stage that failed ('artifact', 'load' or 'smoke') for the
DeploymentRejected event.

On the pytorch backend each version also has a libtorch step model (see
``serving.repository``). It is loaded before the front that calls it, and the
step of the version that served before stays loaded until the next switch:
requests still draining through the old front never call an unloaded model,
and rolling back to it is just a front reload.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from infra.settings import Settings
from infra.storage import ArtifactStore, StorageError, StorageUnavailable
from infra.storage.factory import store_from_settings
from serving.artifact import SAMPLE_INPUT, SAMPLE_OUTPUT, ArtifactError, fetch_artifact, verify_checksum
from serving.client import ModelClient
from serving.errors import RepositoryError, ServerUnavailable, ServingError, SignatureError
from serving.repository import ModelRepository, step_model_name, step_version, validate_model_name
from serving.signature import Signature
from serving.telemetry import SMOKE_PARAMETER

log = logging.getLogger("modelbus.serving.deploy")
STAGE_ARTIFACT, STAGE_LOAD, STAGE_SMOKE = "artifact", "load", "smoke"


@dataclass(frozen=True)
class DeployResult:
    ok: bool
    model_name: str
    model_version: int
    action: str                      # 'promote', 'rollback' or 'reconcile'
    stage: str = ""                  # failed stage: 'artifact' | 'load' | 'smoke' ('' on success)
    reason: str = ""
    previous_version: int | None = None
    serving_version: int | None = None
    checksum: str = ""
    artifact_uri: str = ""
    backend: str = ""
    repository_uri: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Deployer:
    """Holds the repository, artifact store and Triton client one deployer process works with."""

    def __init__(self, settings: Settings, store: ArtifactStore | None = None, *,
                 repository: ModelRepository | None = None, client: ModelClient | None = None,
                 rtol: float = 1e-4, atol: float = 1e-5, load_timeout_s: float = 120.0):
        self.settings = settings
        self.store = store if store is not None else store_from_settings(settings)
        self.repo = repository or ModelRepository.from_settings(settings)
        self.client = client or ModelClient.from_settings(settings)
        self.rtol, self.atol = rtol, atol
        self.load_timeout_s = load_timeout_s

    # -- deploy ---------------------------------------------------------------------------------
    def deploy(self, registered: Mapping[str, Any], action: str = "promote") -> DeployResult:
        """Deploy a ModelRegistered value; a bad candidate gives a failed result, never an exception.

        Raises ServerUnavailable when Triton cannot be reached (retry later; the
        repository config is left pointing at the previous version).
        """
        t0 = time.monotonic()
        name = str(registered.get("model_name", ""))
        try:
            version = int(registered.get("model_version") or 0)
        except (TypeError, ValueError):
            version = 0
        base: dict[str, Any] = dict(model_name=name, model_version=version, action=action,
                                    backend=self.repo.options.backend, repository_uri=self.repo.uri,
                                    checksum=str(registered.get("checksum", "")),
                                    artifact_uri=str(registered.get("artifact_uri", "")))

        def result(ok: bool, stage: str = "", reason: str = "", **kw: Any) -> DeployResult:
            return DeployResult(ok=ok, stage=stage, reason=reason, duration_s=time.monotonic() - t0, **{**base, **kw})

        try:
            validate_model_name(name)
            if version < 1:
                raise RepositoryError(f"invalid model version {registered.get('model_version')!r}")
            previous = self._serving(name)
        except RepositoryError as exc:
            return result(False, STAGE_ARTIFACT, str(exc))
        if previous == version:
            kept = self.repo.version_info(name, version) if self.repo.has_version(name, version) else {}
            if kept and kept.get("checksum") != base["checksum"].lower():
                return result(False, STAGE_ARTIFACT, f"version {version} of {name!r} already serves an artifact with "
                              f"checksum {str(kept.get('checksum'))[:16]}…; a different artifact under the same "
                              "version is refused (register a new version)", previous_version=previous,
                              serving_version=previous)
            if kept and self._ready(name, version):
                return result(True, previous_version=previous, serving_version=version, action="reconcile")
        prev_config = self.repo.config_bytes(name)
        with tempfile.TemporaryDirectory(prefix="modelbus-deploy-") as tmp:
            try:
                artifact = fetch_artifact(self.store, base["artifact_uri"], base["checksum"], Path(tmp))
                meta = {"run_id": registered.get("run_id", ""),
                        "dataset_version": registered.get("dataset_version", ""),
                        "primary_metric": registered.get("primary_metric", ""),
                        "metrics": dict(registered.get("metrics") or {}),
                        "event_id": str((registered.get("header") or {}).get("event_id", "")),
                        "deployed_at": time.time()}
                self.repo.place_version(name, version, artifact, meta)
            except StorageUnavailable:   # a store outage is no verdict on the candidate: the deployer retries
                raise
            except (ArtifactError, SignatureError, RepositoryError, StorageError) as exc:
                return result(False, STAGE_ARTIFACT, str(exc), previous_version=previous, serving_version=previous)
        failure = self._switch(name, version, artifact.signature, prev_config, previous)
        if failure:
            stage, reason = failure
            if version != previous:  # never delete the files of the version that serves
                self.repo.remove_version(name, version)
            return result(False, stage, reason, previous_version=previous, serving_version=self._serving(name))
        removed = self.repo.prune(name, protect=[version] + ([previous] if previous else []))
        if removed:
            log.info("pruned %s versions %s (keep_versions=%d)", name, removed, self.repo.options.keep_versions)
        return result(True, previous_version=previous, serving_version=version)

    # -- rollback ----------------------------------------------------------------------------------
    def rollback(self, model_name: str, to_version: int | None = None) -> DeployResult:
        """Serve an older version kept in the repository (default: the newest one below the current)."""
        t0 = time.monotonic()
        name = validate_model_name(model_name)
        current = self._serving(name)
        if current is None:
            raise ServingError(f"model {name!r} is not deployed in {self.repo.uri}")
        kept = [v for v in self.repo.versions(name) if v != current and self.repo.has_version(name, v)]
        if to_version is None:
            older = [v for v in kept if v < current]
            if not older:
                raise ServingError(f"no older version of {name!r} to roll back to (kept: {kept or 'none'})")
            to_version = older[-1]
        if to_version == current:
            raise ServingError(f"version {to_version} of {name!r} is already serving")
        if to_version not in kept:
            raise ServingError(f"version {to_version} of {name!r} is not in the repository (kept: {kept or 'none'})")
        info = self.repo.version_info(name, to_version)
        placed_for = info.get("backend", "python")
        if placed_for != self.repo.options.backend:
            raise ServingError(f"version {to_version} of {name!r} was placed for the {placed_for} backend and this "
                               f"deployer runs {self.repo.options.backend}: deploy it again from its artifact")
        local = self.repo.store.local_path(self.repo.model_file_key(name, to_version))
        base = dict(model_name=name, model_version=to_version, action="rollback", previous_version=current,
                    checksum=info.get("checksum", ""), artifact_uri=info.get("artifact_uri", ""),
                    backend=self.repo.options.backend, repository_uri=self.repo.uri)
        try:
            if local is not None:
                verify_checksum(local, info.get("checksum", ""))
            sig = self.repo.version_signature(name, to_version)
        except (ArtifactError, SignatureError, RepositoryError) as exc:
            return DeployResult(ok=False, stage=STAGE_ARTIFACT, reason=str(exc), serving_version=current,
                                duration_s=time.monotonic() - t0, **base)
        failure = self._switch(name, to_version, sig, self.repo.config_bytes(name), current)
        if failure:
            return DeployResult(ok=False, stage=failure[0], reason=failure[1], serving_version=self._serving(name),
                                duration_s=time.monotonic() - t0, **base)
        return DeployResult(ok=True, serving_version=to_version, duration_s=time.monotonic() - t0, **base)

    # -- state -------------------------------------------------------------------------------------
    def state(self, model_name: str) -> dict[str, Any]:
        """What the repository says serves, what is kept for rollback, and whether Triton has it ready."""
        name = validate_model_name(model_name)
        serving = self._serving(name)
        info = self.repo.version_info(name, serving) if serving and self.repo.has_version(name, serving) else {}
        try:
            ready = bool(serving and self._ready(name, serving))
        except ServingError:
            ready = False
        return {"model_name": name, "serving_version": serving, "versions": self.repo.versions(name),
                "ready": ready, "checksum": info.get("checksum", ""), "artifact_uri": info.get("artifact_uri", ""),
                "run_id": info.get("run_id", ""), "backend": self.repo.options.backend,
                "repository_uri": self.repo.uri}

    # -- internals ---------------------------------------------------------------------------------
    def _serving(self, name: str) -> int | None:
        versions = self.repo.serving_versions(name)
        return versions[-1] if versions else None

    @property
    def uses_steps(self) -> bool:
        """Whether versions run in libtorch step models (the pytorch backend)."""
        return self.repo.options.backend == "pytorch"

    def _ready(self, name: str, version: int) -> bool:
        """The front is ready, and on pytorch the step model it calls too."""
        return self.client.is_ready(name, version) and (
            not self.uses_steps or self.client.is_ready(step_model_name(name, version), version))

    def _retire_steps(self, name: str, keep: set[int]) -> None:
        """Unload step models of ``name`` other than ``keep`` (best effort: a leftover only costs memory)."""
        try:
            loaded = {m.get("name", "") for m in self.client.models() if str(m.get("state", "")).upper() == "READY"}
            for step in sorted(loaded):
                version = step_version(name, step)
                if version is not None and version not in keep:
                    self.client.unload_model(step)
                    log.info("stage=%s model=%s unloaded step %s", STAGE_LOAD, name, step)
        except ServingError as exc:
            log.warning("stage=%s model=%s could not retire old step models: %s", STAGE_LOAD, name, exc)

    def _switch(self, name: str, version: int, sig: Signature, prev_config: bytes | None,
                previous: int | None) -> tuple[str, str] | None:
        """Point the config at ``version``, load and smoke-test it; on failure restore the previous state.

        An unreachable Triton is not the candidate's fault: the previous config is put
        back and ServerUnavailable propagates so the caller retries later.
        """
        failure = self._load_and_smoke(name, version, sig, prev_config, previous)
        if self.uses_steps:
            self._retire_steps(name, keep={v for v in (self._serving(name), previous) if v})
        return failure

    def _load_and_smoke(self, name: str, version: int, sig: Signature, prev_config: bytes | None,
                        previous: int | None) -> tuple[str, str] | None:
        self.repo.write_config(name, sig, [version])
        try:
            try:
                if self.uses_steps:   # the front's initialize() does not call its step, so this order is enough
                    self.client.load_model(step_model_name(name, version), timeout_s=self.load_timeout_s)
                self.client.load_model(name, timeout_s=self.load_timeout_s)
            except ServerUnavailable:
                raise
            except ServingError as exc:
                reason = f"Triton could not load it: {exc}"
                log.warning("stage=%s model=%s version=%d failed: %s", STAGE_LOAD, name, version, exc)
                if previous is not None and self.client.is_ready(name, previous):
                    # A failed load leaves the loaded version untouched: put its config back, no reload needed.
                    self.repo.restore_config(name, prev_config)
                    return STAGE_LOAD, f"{reason}; version {previous} keeps serving"
                return STAGE_LOAD, self._restore(name, prev_config, previous, reason)
            try:
                self._smoke(name, version, sig)
            except ServerUnavailable:
                raise
            except ServingError as exc:
                log.warning("stage=%s model=%s version=%d failed: %s", STAGE_SMOKE, name, version, exc)
                return STAGE_SMOKE, self._restore(name, prev_config, previous, f"smoke inference failed: {exc}")
        except ServerUnavailable:
            self.repo.restore_config(name, prev_config)
            raise
        log.info("stage=%s model=%s version=%d serving", STAGE_SMOKE, name, version)
        return None

    def _restore(self, name: str, prev_config: bytes | None, previous: int | None, reason: str) -> str:
        try:
            self.repo.restore_config(name, prev_config)
            if prev_config is None:
                self.client.unload_model(name)
            else:
                self.client.load_model(name, timeout_s=self.load_timeout_s)
        except (ServingError, RepositoryError, StorageError) as exc:
            return f"{reason}; restoring version {previous} ALSO failed: {exc}"
        return reason + (f"; version {previous} keeps serving" if previous else "")

    def _smoke(self, name: str, version: int, sig: Signature) -> None:
        sample_in = self.repo.version_sample(name, version, SAMPLE_INPUT)
        expected = self.repo.version_sample(name, version, SAMPLE_OUTPUT)
        if sample_in is not None:
            sample_in, expected = _complete_rows(sig, sample_in, expected, self.repo.options.nan_policy)
        if sample_in is None:
            sample_in = {s.column: _synthetic(s) for s in sig.inputs}
            expected = None
        self.client.signature(name, refresh=True)
        got = self.client.predict(name, sample_in, version=version, request_id=f"modelbus-smoke-{name}-v{version}",
                                  parameters={SMOKE_PARAMETER: True})
        for spec in sig.outputs:
            arr = got[spec.name]
            if spec.dtype != "BYTES" and not np.isfinite(arr).all():
                raise ServingError(f"output {spec.name} has NaN or infinite values")
            if expected is None or spec.name not in expected:
                continue
            want = np.asarray(expected[spec.name], dtype=arr.dtype).reshape(arr.shape)
            if not np.allclose(arr, want, rtol=self.rtol, atol=self.atol):
                worst = float(np.max(np.abs(arr.astype(float) - want.astype(float))))
                raise ServingError(f"output {spec.name} differs from sample_output.json "
                                   f"(max abs diff {worst:.3g}, rtol {self.rtol}, atol {self.atol})")


def _complete_rows(sig: Signature, sample: dict[str, Any], expected: dict[str, Any] | None, nan_policy: str):
    """Drop sample rows with a missing number where the server refuses NaN under ``nan_policy``."""
    keep: np.ndarray | None = None
    for spec in sig.inputs:
        if spec.kind != "numeric" or spec.accepts_nan(nan_policy):
            continue
        values = sample.get(spec.column, sample.get(spec.name))
        if values is None:
            continue
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ok = ~np.isnan(arr)
        keep = ok if keep is None else keep & ok
    if keep is None or keep.all():
        return sample, expected
    if not keep.any():
        return None, None
    rows = np.flatnonzero(keep)
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    return ({k: pick(v) for k, v in sample.items()},
            {k: pick(v) for k, v in expected.items()} if expected is not None else None)


def _synthetic(spec) -> list:
    if spec.kind == "categorical":
        return [""]
    per_row = int(np.prod([d if d > 0 else 1 for d in spec.dims]))
    return np.zeros(per_row, dtype=np.float32).reshape(1, -1).tolist()


def deploy(registered: Mapping[str, Any], settings: Settings, store: ArtifactStore | None = None,
           **kw: Any) -> DeployResult:
    """Deploy one ModelRegistered value (see :class:`Deployer`)."""
    return Deployer(settings, store, **kw).deploy(registered)


def rollback(model_name: str, to_version: int | None = None, *, settings: Settings, **kw: Any) -> DeployResult:
    return Deployer(settings, **kw).rollback(model_name, to_version)


def serving_state(model_name: str, *, settings: Settings, **kw: Any) -> dict[str, Any]:
    return Deployer(settings, **kw).state(model_name)
