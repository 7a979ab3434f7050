"""Writing models into a Triton model repository (a local directory or an s3:// prefix).

Layout: ``<repo>/<model>/config.pbtxt`` plus one directory per version holding
``model.py`` (the Python-backend model clients call), ``signature.json``,
``deploy.json`` (provenance, checksum) and the samples. The config pins exactly
one version with a ``specific`` version policy, so switching versions is
"rewrite config, load" and rollback needs no artifact store: the last N
versions stay on disk.

Where the TorchScript runs depends on the backend setting:

- ``python`` (embedded): ``model.pt`` sits in the version directory and the
  Python-backend model runs it in-process.
- ``pytorch`` (NVIDIA's Triton images): ``model.pt`` goes into a *step model*
  ``<model>__v<version>`` on ``pytorch_libtorch``, and the Python-backend model
  becomes a thin front that validates the request, calls the step through BLS
  and emits telemetry, so every request still yields InferenceTelemetry. Each
  version has its own step model (its own inputs, no config shared across
  versions), and names ending in ``__v<digits>`` are reserved for them.

Both kinds of repository go through ``infra.storage`` (keys are validated there
too); production Triton reads s3:// repositories natively.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from infra.settings import Settings
from infra.storage import ArtifactStore, StorageError, StorageUnavailable, open_store
from serving.artifact import OPTIONAL, SIGNATURE_FILE, Artifact, verify_checksum
from serving.errors import RepositoryError
from serving.signature import Signature

CONFIG_FILE = "config.pbtxt"
DEPLOY_FILE = "deploy.json"
BACKEND_MODEL_FILE = "model.py"
PARAM_SIGNATURE = "modelbus.signature"
PARAM_TELEMETRY = "modelbus.telemetry"
PARAM_NAN_POLICY = "modelbus.nan_policy"
PARAM_STEP_MODEL = "modelbus.step_model"
STEP_PLATFORM = "pytorch_libtorch"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_STEP_SUFFIX = re.compile(r"__v[0-9]+\Z")


def validate_model_name(name: Any) -> str:
    """Model names become directory names and Triton names: letters, digits, '_' and '-' only.

    An allow-list rather than a deny-list, so traversal ('..', '/'), hidden
    files, whitespace and control characters are impossible by construction.
    """
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise RepositoryError(f"invalid model name {name!r}: use 1-64 letters, digits, '_' or '-', "
                              "starting with a letter or digit")
    if _STEP_SUFFIX.search(name):
        raise RepositoryError(f"invalid model name {name!r}: names ending in '__v<digits>' are reserved for "
                              "the libtorch step models of the pytorch backend")
    return name


def step_model_name(name: str, version: int) -> str:
    """The libtorch model behind ``version`` of ``name`` on the pytorch backend."""
    return f"{validate_model_name(name)}__v{_version(version)}"


def is_step_model(name: str) -> bool:
    return bool(_STEP_SUFFIX.search(name))


def step_version(name: str, candidate: str) -> int | None:
    """The version whose step model ``candidate`` is, when it is one of ``name``'s (else None)."""
    prefix = f"{name}__v"
    if not candidate.startswith(prefix) or not _STEP_SUFFIX.fullmatch(candidate, len(name)):
        return None
    return int(candidate[len(prefix):])


def _version(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 2**63:   # Triton versions are int64
        raise RepositoryError(f"invalid model version {v!r}: must be a positive 64-bit integer")
    return v


@dataclass(frozen=True)
class RepositoryOptions:
    backend: str = "python"
    max_batch_size: int = 64
    instance_count: int = 1
    keep_versions: int = 3
    telemetry: bool = True
    nan_policy: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> RepositoryOptions:
        t = settings.triton
        return cls(backend=t.backend, max_batch_size=t.max_batch_size, instance_count=t.instance_count,
                   keep_versions=t.keep_versions, telemetry=t.telemetry, nan_policy=t.nan_policy)


class ModelRepository:
    """A Triton model repository on an ArtifactStore."""

    def __init__(self, store: ArtifactStore, options: RepositoryOptions | None = None):
        self.store = store
        self.options = options or RepositoryOptions()
        if self.options.backend not in ("python", "pytorch"):
            raise RepositoryError(f"unsupported Triton backend {self.options.backend!r}")

    @classmethod
    def open(cls, uri: str, options: RepositoryOptions | None = None, *, s3_endpoint_url: str | None = None,
             s3_region: str | None = None) -> ModelRepository:
        return cls(open_store(uri, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region), options)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRepository:
        a = settings.artifacts
        return cls.open(settings.triton_repository, RepositoryOptions.from_settings(settings),
                        s3_endpoint_url=a.s3_endpoint_url, s3_region=a.s3_region)

    @property
    def uri(self) -> str:
        return self.store.root

    # -- config -----------------------------------------------------------
    def render_config(self, name: str, signature: Signature, versions: Iterable[int]) -> str:
        """config.pbtxt text serving exactly ``versions`` with the inputs/outputs of ``signature``.

        Always the Python backend: on ``pytorch`` it is the front that calls the
        version's step model (``modelbus.step_model``), so it must serve one version.
        """
        validate_model_name(name)
        o = self.options
        versions = sorted(_version(v) for v in versions)
        cfg = mc.ModelConfig(name=name, max_batch_size=o.max_batch_size, backend="python")
        cfg.version_policy.specific.versions.extend(versions)
        for spec in signature.inputs:
            cfg.input.add(name=spec.name, data_type=getattr(mc, spec.triton_type), dims=list(spec.dims))
        for spec in signature.outputs:
            cfg.output.add(name=spec.name, data_type=getattr(mc, spec.triton_type), dims=list(spec.dims))
        cfg.dynamic_batching.max_queue_delay_microseconds = 0
        cfg.instance_group.add(count=o.instance_count, kind=mc.ModelInstanceGroup.KIND_CPU)
        cfg.parameters[PARAM_SIGNATURE].string_value = signature.to_json()
        cfg.parameters[PARAM_TELEMETRY].string_value = "true" if o.telemetry else "false"
        cfg.parameters[PARAM_NAN_POLICY].string_value = o.nan_policy
        if o.backend == "pytorch":
            if len(versions) != 1:
                raise RepositoryError(f"the pytorch backend serves one version of {name!r} at a time, got {versions}")
            cfg.parameters[PARAM_STEP_MODEL].string_value = step_model_name(name, versions[0])
        return text_format.MessageToString(cfg)

    def render_step_config(self, name: str, version: int, signature: Signature) -> str:
        """config.pbtxt of the libtorch step model of one version.

        No batching of its own (the front batches; ``max_batch_size`` 0 makes the
        batch dimension explicit), because libtorch passes strings only as a
        one-dimensional ``List[str]``: categorical inputs are ``[-1]``, numbers
        ``[-1, *dims]``. The instance kind is left to Triton, so it runs on a GPU
        where there is one.
        """
        step = step_model_name(name, version)
        cfg = mc.ModelConfig(name=step, max_batch_size=0)
        self._step_runtime(cfg)
        cfg.version_policy.specific.versions.append(version)
        for spec in signature.inputs:
            dims = [-1] if spec.dtype == "BYTES" else [-1, *spec.dims]
            cfg.input.add(name=spec.name, data_type=getattr(mc, spec.triton_type), dims=dims)
        for spec in signature.outputs:
            cfg.output.add(name=spec.name, data_type=getattr(mc, spec.triton_type), dims=[-1, *spec.dims])
        cfg.instance_group.add(count=self.options.instance_count)
        cfg.parameters[PARAM_SIGNATURE].string_value = signature.to_json()
        return text_format.MessageToString(cfg)

    def _step_runtime(self, cfg: mc.ModelConfig) -> None:
        """Where step models run: libtorch. (Tests override this: the bundled tritonserver has no libtorch.)"""
        cfg.platform = STEP_PLATFORM

    def _step_files(self) -> dict[str, bytes]:
        """Extra files for a step model's version directory (none for libtorch)."""
        return {}

    def write_config(self, name: str, signature: Signature, versions: Iterable[int]) -> str:
        return self._put(f"{validate_model_name(name)}/{CONFIG_FILE}",
                         self.render_config(name, signature, versions).encode())

    def read_config(self, name: str) -> mc.ModelConfig | None:
        key = f"{validate_model_name(name)}/{CONFIG_FILE}"
        if not self.store.exists(key):
            return None
        try:
            return text_format.Parse(self.store.get_bytes(key).decode(), mc.ModelConfig())
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            raise RepositoryError(f"{self.uri}/{key} is not a valid model config: {exc}") from exc

    def config_bytes(self, name: str) -> bytes | None:
        key = f"{validate_model_name(name)}/{CONFIG_FILE}"
        return self.store.get_bytes(key) if self.store.exists(key) else None

    def restore_config(self, name: str, data: bytes | None) -> None:
        """Put back a config saved with :meth:`config_bytes` (None: remove the model's config)."""
        key = f"{validate_model_name(name)}/{CONFIG_FILE}"
        if data is None:
            self.store.delete(key)
        else:
            self._put(key, data)

    def serving_versions(self, name: str) -> list[int]:
        """Versions the current config serves (empty when the model has no config)."""
        cfg = self.read_config(name)
        return sorted(cfg.version_policy.specific.versions) if cfg is not None else []

    # -- versions ---------------------------------------------------------
    def place_version(self, name: str, version: int, artifact: Artifact, meta: dict[str, Any] | None = None) -> str:
        """Copy a verified artifact into ``<repo>/<name>/<version>/``; the checksum is re-checked first."""
        validate_model_name(name)
        _version(version)
        verify_checksum(artifact.model_path, artifact.checksum)
        prefix = f"{name}/{version}"
        self.store.delete_prefix(prefix + "/")  # leftovers of an earlier failed attempt
        if self.options.backend == "pytorch":
            step = step_model_name(name, version)
            self.store.delete_prefix(f"{step}/")
            self._put_file(f"{step}/{version}/model.pt", artifact.model_path)
            for file, data in self._step_files().items():
                self._put(f"{step}/{version}/{file}", data)
            self._put(f"{step}/{CONFIG_FILE}", self.render_step_config(name, version, artifact.signature).encode())
        else:
            self._put_file(f"{prefix}/model.pt", artifact.model_path)
        self._put(f"{prefix}/{SIGNATURE_FILE}", artifact.signature.to_json().encode())
        for extra in OPTIONAL:
            if (artifact.dir / extra).is_file():
                self._put_file(f"{prefix}/{extra}", artifact.dir / extra)
        self._put(f"{prefix}/{BACKEND_MODEL_FILE}", backend_model_source())
        info = {"model_name": name, "model_version": version, "checksum": artifact.checksum,
                "artifact_uri": artifact.uri, "backend": self.options.backend, **(meta or {})}
        self._put(f"{prefix}/{DEPLOY_FILE}", json.dumps(info, sort_keys=True, indent=1).encode())
        return self.store.uri(prefix)

    def model_file_key(self, name: str, version: int) -> str:
        """Where a kept version's model.pt is: its step model on pytorch, else its own directory."""
        if self.version_info(name, version).get("backend") == "pytorch":
            return f"{step_model_name(name, version)}/{version}/model.pt"
        return f"{validate_model_name(name)}/{_version(version)}/model.pt"

    def has_step(self, name: str, version: int) -> bool:
        return self.store.exists(f"{step_model_name(name, version)}/{CONFIG_FILE}")

    def versions(self, name: str) -> list[int]:
        """Version directories present (complete or not) for ``name``."""
        found = set()
        try:
            for key in self.store.list(f"{validate_model_name(name)}/"):
                part = key.split("/")[1] if key.count("/") >= 2 else ""
                if part.isdigit():
                    found.add(int(part))
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise RepositoryError(f"cannot list {self.uri}/{name}: {exc}") from exc
        return sorted(found)

    def has_version(self, name: str, version: int) -> bool:
        return self.store.exists(f"{validate_model_name(name)}/{_version(version)}/{DEPLOY_FILE}")

    def version_info(self, name: str, version: int) -> dict[str, Any]:
        key = f"{validate_model_name(name)}/{_version(version)}/{DEPLOY_FILE}"
        try:
            return json.loads(self.store.get_bytes(key))
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except (StorageError, ValueError) as exc:
            raise RepositoryError(f"version {version} of {name!r} is not in {self.uri}: {exc}") from exc

    def version_signature(self, name: str, version: int) -> Signature:
        key = f"{validate_model_name(name)}/{_version(version)}/{SIGNATURE_FILE}"
        try:
            return Signature.parse(self.store.get_bytes(key))
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise RepositoryError(f"version {version} of {name!r} has no signature in {self.uri}") from exc

    def version_sample(self, name: str, version: int, which: str) -> dict[str, Any] | None:
        key = f"{validate_model_name(name)}/{_version(version)}/{which}"
        if not self.store.exists(key):
            return None
        return json.loads(self.store.get_bytes(key))

    def remove_version(self, name: str, version: int) -> None:
        self.store.delete_prefix(f"{validate_model_name(name)}/{_version(version)}/")
        self.store.delete_prefix(f"{step_model_name(name, version)}/")

    def prune(self, name: str, protect: Iterable[int] = ()) -> list[int]:
        """Keep the newest ``keep_versions`` versions (plus ``protect``); delete older ones."""
        protect = set(protect) | set(self.serving_versions(name))
        versions = self.versions(name)
        keep = set(versions[-self.options.keep_versions:]) | protect
        removed = [v for v in versions if v not in keep]
        for v in removed:
            self.remove_version(name, v)
        return removed

    def models(self) -> list[str]:
        """Model names that have a config in the repository."""
        names = set()
        for key in self.store.list(""):
            parts = key.split("/")
            if len(parts) == 2 and parts[1] == CONFIG_FILE and not is_step_model(parts[0]):
                names.add(parts[0])
        return sorted(names)

    # -- storage helpers --------------------------------------------------
    def _put(self, key: str, data: bytes) -> str:
        try:
            return self.store.put_bytes(key, data)
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise RepositoryError(f"cannot write {key} to the model repository {self.uri}: {exc}") from exc

    def _put_file(self, key: str, path) -> str:
        try:
            return self.store.put_file(key, path)
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise RepositoryError(f"cannot write {key} to the model repository {self.uri}: {exc}") from exc


def backend_model_source() -> bytes:
    """The Triton Python-backend model shipped in this package (copied into each version)."""
    return resources.files("serving.backend").joinpath("model.py").read_bytes()
