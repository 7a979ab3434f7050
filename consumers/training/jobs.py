"""From a triggering event to a training job: which data, which spec, which logical run.

A DatasetCreated trains with the default spec (settings, then the dataset's
``training_spec`` tag); a TrainingRequested lays its own spec over the same
defaults. The run id is a pure function of (dataset version, resolved spec), so
every consumer maps the same request to the same run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow.parquet as pq

from infra.errors import ModelBusError
from infra.kafka.envelope import Envelope
from infra.settings import Settings
from infra.storage import ArtifactStore
from producers.datasets.registry import ArtifactDatasetRegistry, DatasetVersion
from producers.datasets.spec import DATASET_NAME_RE as MODEL_NAME_RE
from producers.datasets.spec import check_dataset_name
from producers.errors import IntegrityError, ProducerError
from schemas.types import DatasetCreated, TrainingRequested
from trainer.errors import TrainerError
from trainer.spec import DatasetInfo, TrainingSpec, make_run_id

SPEC_TAG = "training_spec"


@dataclass(frozen=True)
class Job:
    """One training run to do, and the event that asked for it (``parent``, for lineage)."""

    parent: DatasetCreated | TrainingRequested
    reason: str
    run_id: str
    dataset_name: str
    dataset_version: str
    model_name: str
    spec: TrainingSpec | None = None
    info: DatasetInfo | None = None
    checksum: str | None = None
    request_id: str | None = None
    search_id: str | None = None
    trial_number: int | None = None

    @property
    def trigger_id(self) -> str:
        return str(self.parent["header"]["event_id"])

    @property
    def register(self) -> bool:
        return bool(self.spec is not None and self.spec.register_model)


class JobError(ModelBusError):
    """The event cannot become a run (unknown dataset, invalid spec); ``job`` holds what is known."""

    def __init__(self, message: str, job: Job):
        super().__init__(message)
        self.job = job


def resolve_spec(settings: Settings, tags: Mapping[str, str] | None, spec_json: str | None,
                 model_name: str | None = None) -> TrainingSpec:
    """Settings defaults ⊕ the dataset's ``training_spec`` tag ⊕ the request's spec (later wins)."""
    data: dict[str, Any] = {}
    if settings.training.device != "auto":
        data["device"] = settings.training.device
    data.update(settings.training.default_spec)
    for where, text in ((f"dataset tag {SPEC_TAG!r}", (tags or {}).get(SPEC_TAG)), ("spec_json", spec_json)):
        if not text:
            continue
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise TrainerError(f"invalid training spec in {where}: not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise TrainerError(f"invalid training spec in {where}: expected a JSON object")
        data.update(doc)
    if model_name:
        data["model_name"] = model_name
    return TrainingSpec.from_dict(data)


def fallback_run_id(name: str, version: str, *parts: object) -> str:
    """Run id of an event that never got a spec (its failure still needs a key)."""
    digest = hashlib.sha256("\0".join([name, version, *map(str, parts)]).encode()).hexdigest()[:15]
    return f"{name or 'unknown'}-x{digest}"


class JobResolver:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.registry = ArtifactDatasetRegistry(store)

    def resolve(self, env: Envelope) -> Job:
        if env.event_type == "DatasetCreated":
            return self._from_dataset(env.typed(DatasetCreated))
        if env.event_type == "TrainingRequested":
            return self._from_request(env.typed(TrainingRequested))
        raise TypeError(f"the training consumer does not handle {env.event_type}")

    def _from_dataset(self, v: DatasetCreated) -> Job:
        name, version = str(v.get("name", "")), str(v.get("version", ""))
        job = Job(parent=v, reason="dataset-created", run_id=fallback_run_id(name, version, v["header"]["event_id"]),
                  dataset_name=name, dataset_version=version, model_name=name, checksum=v.get("checksum"))
        try:
            check_dataset_name(name)
            info = DatasetInfo.from_event(v)
            spec = resolve_spec(self.settings, v.get("tags"), None)
            model = _model_name(spec, name)
        except (TrainerError, ProducerError) as exc:
            raise JobError(str(exc), job) from exc
        return replace(job, spec=spec, info=info, model_name=model, run_id=make_run_id(info, spec))

    def _from_request(self, v: TrainingRequested) -> Job:
        name = str(v.get("dataset_name", ""))
        job = Job(parent=v, reason=str(v.get("reason") or "manual"),
                  run_id=fallback_run_id(name, v.get("dataset_version") or "", v["request_id"]),
                  dataset_name=name, dataset_version=v.get("dataset_version") or "",
                  model_name=v.get("model_name") or name, request_id=v.get("request_id"),
                  search_id=v.get("search_id"), trial_number=v.get("trial_number"))
        try:
            found = self.registry.get(f"{name}@{v['dataset_version']}" if v.get("dataset_version") else name)
            meta = found.metadata
            job = replace(job, dataset_version=found.version, checksum=found.checksum)
            info = DatasetInfo.from_event(meta)
            spec = resolve_spec(self.settings, meta.get("tags"), v.get("spec_json"), v.get("model_name"))
            model = _model_name(spec, name)
        except (TrainerError, ProducerError) as exc:
            raise JobError(str(exc), job) from exc
        return replace(job, spec=spec, info=info, model_name=model, run_id=make_run_id(info, spec))

    def dataset(self, job: Job) -> DatasetVersion:
        return self.registry.get(f"{job.dataset_name}@{job.dataset_version}")

    def load(self, job: Job, workdir: Path) -> pd.DataFrame:
        """The version's rows, checksum verified (``IntegrityError`` when the stored copy is not what was pushed)."""
        found = self.dataset(job)
        if job.checksum and job.checksum != found.checksum:
            raise IntegrityError(f"{found.ref}: the event's checksum {job.checksum[:16]}… differs from the "
                                 f"committed version's {found.checksum[:16]}…")
        path = self.registry.pull(found.ref, workdir)
        return pq.read_table(path, memory_map=False).to_pandas()


def _model_name(spec: TrainingSpec, dataset_name: str) -> str:
    """Registered name; same rules as dataset names, so it is safe as a store key and a Triton model name."""
    name = spec.model_name or dataset_name
    if not MODEL_NAME_RE.match(name):
        raise TrainerError(f"invalid model name {name[:80]!r}: use 1-64 characters [a-z0-9_-], "
                           "starting with a letter or digit")
    return name
