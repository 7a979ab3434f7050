"""The upstream SDK: what an application needs to feed ModelBus, in a few lines.

    from producers.sdk import ModelBus
    with ModelBus() as mb:                                   # settings from env / MODELBUS_CONFIG
        res = mb.push_dataset(df, name="churn", label="churned", slice_by=["region"])
        mb.request_training("churn", spec={"epochs": 5})
        mb.report_outcome("churn", prediction_id=pid, label="yes")   # what really happened, when it is known

Every write goes through the artifact store and every signal through Kafka as an
Avro event, exactly like the CLI; the client only bundles settings, the store,
one idempotent producer and the dataset registry.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pydantic import BaseModel

from infra.kafka import topics
from infra.settings import Settings, load_settings
from infra.storage import ArtifactStore
from producers.datasets.push import Progress, PushResult, push_dataset
from producers.datasets.registry import ArtifactDatasetRegistry, DatasetRegistry
from producers.datasets.spec import DatasetSpec, build_spec, check_dataset_name
from producers.errors import DatasetNotFoundError, InvalidNameError, InvalidSpecError, ProducerError
from producers.outcomes import Outcome, as_outcomes
from schemas.events import new_header
from schemas.types import TrainingRequested

PRODUCER = "producers.sdk"


class ModelBus:
    """Client of one ModelBus deployment; cheap to create, close it (or use ``with``) to flush events."""

    def __init__(self, settings: Settings | None = None, *, store: ArtifactStore | None = None,
                 producer: Any | None = None, name: str = PRODUCER):
        self.settings = settings or load_settings()
        if store is None:
            from infra.storage.factory import store_from_settings

            store = store_from_settings(self.settings)
        self.store = store
        self.name = name
        self._producer = producer
        self.datasets: DatasetRegistry = ArtifactDatasetRegistry(store)

    @property
    def producer(self):
        """The idempotent Kafka producer, created on first use (pushing validates before any broker I/O)."""
        if self._producer is None:
            from infra.kafka.producer import EventProducer

            self._producer = EventProducer(self.settings, name=self.name)
        return self._producer

    def push_dataset(self, data: Any, spec: DatasetSpec | Mapping[str, Any] | None = None, *,
                     source: str | None = None, progress: Progress | None = None,
                     correlation_id: str | None = None, workdir: str | Path | None = None,
                     **fields: Any) -> PushResult:
        """Validate, store and announce a dataset version; see ``DatasetSpec`` for ``fields``.

        ``data``: CSV/Parquet path, pandas DataFrame, pyarrow Table, or ``(features, labels)``
        numpy arrays / ``ArrayData``. Raises ``DatasetValidationError`` (with ``.report``) when
        checks fail; nothing is stored or published then.
        """
        full = build_spec(spec, **fields)
        return push_dataset(data, full, store=self.store, publisher=_LazyPublisher(self), source=source,
                            topic=self.settings.topic(topics.DATASETS_CREATED), progress=progress,
                            workdir=workdir, producer=self.name, correlation_id=correlation_id)

    def request_training(self, dataset_name: str, spec: Mapping[str, Any] | BaseModel | None = None, *,
                         dataset_version: str | None = None, model_name: str | None = None,
                         search_space: Mapping[str, Any] | None = None, n_trials: int = 0,
                         reason: str = "manual", correlation_id: str | None = None) -> str:
        """Ask the trainers for a run (a hyperparameter search when ``search_space`` and ``n_trials``).

        The dataset (and version prefix, if given) must exist and ``spec`` must be a valid
        ``TrainingSpec`` (``InvalidSpecError`` otherwise, before anything is published);
        returns the request id.
        """
        from trainer.errors import TrainerError
        from trainer.spec import check_request_spec

        try:
            spec_doc = check_request_spec(spec)
        except TrainerError as exc:
            raise InvalidSpecError(str(exc)) from exc
        check_dataset_name(dataset_name)
        if dataset_version:
            version = self.datasets.get(f"{dataset_name}@{dataset_version}").version
        elif self.datasets.versions(dataset_name):
            version = None
        else:
            raise DatasetNotFoundError(f"no dataset named {dataset_name!r}; push it first")
        if model_name is not None:
            check_dataset_name(model_name, what="model")
            _check_model_name(model_name)
        if n_trials < 0 or (search_space is None and n_trials):
            raise ProducerError("n_trials needs a search_space (and must be >= 0)")
        request_id = str(uuid.uuid4())
        value: TrainingRequested = {
            "header": new_header(self.name, correlation_id=correlation_id),
            "request_id": request_id,
            "dataset_name": dataset_name,
            "dataset_version": version,
            "model_name": model_name,
            "spec_json": json.dumps(spec_doc, sort_keys=True, default=str),
            "search_space_json": _to_json(search_space),
            "n_trials": int(n_trials),
            "search_id": None,
            "trial_number": None,
            "reason": reason,
        }
        self.publish("TrainingRequested", value, key=dataset_name)
        return request_id

    def report_outcome(self, model_name: str, *, prediction_id: str | None = None, key: str | None = None,
                       label: str | None = None, value: float | None = None, observed_at: datetime | None = None,
                       source: str = "") -> str:
        """Report one prediction's true outcome (by its prediction id or your row key); returns the event id.
        For many, ``report_outcomes`` sends them in one batch."""
        return self.report_outcomes([{"model_name": model_name, "prediction_id": prediction_id, "key": key,
                                      "label": label, "value": value, "observed_at": observed_at,
                                      "source": source}])[0]

    def report_outcomes(self, outcomes: Iterable[Outcome | Mapping[str, Any]], *,
                        correlation_id: str | None = None,
                        progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Report many outcomes as one batch: all are checked first (``InvalidOutcomeError`` naming the bad one,
        nothing published), then sent and flushed once. Returns the event ids, in order."""
        checked = as_outcomes(outcomes)
        topic = self.settings.topic(topics.OUTCOMES_OBSERVED)
        ids = []
        for i, o in enumerate(checked):
            event = o.event(self.name, correlation_id)
            self.producer.send(topic, "OutcomeObserved", event, key=o.kafka_key)
            ids.append(str(event["header"]["event_id"]))
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1, len(checked))
        self.producer.flush()
        if progress is not None:
            progress(len(checked), len(checked))
        return ids

    def publish(self, event_type: str, value: Mapping[str, Any], key: str | None = None, *,
                topic: str | None = None) -> str:
        """Publish any catalogue event (header filled in when missing); waits for the broker's ack.

        The topic defaults to the catalogue topic carrying ``event_type``; returns the event id.
        """
        if topic is None:
            owners = [t.name for t in topics.CATALOGUE if event_type in t.events]
            if not owners:
                raise ProducerError(f"no topic carries {event_type!r} events; pass topic=")
            topic = self.settings.topic(owners[0])
        record = dict(value)
        record.setdefault("header", new_header(self.name))
        self.producer.publish(topic, event_type, record, key=key)
        return str(record["header"]["event_id"])

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()

    def __enter__(self) -> ModelBus:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _LazyPublisher:
    """Defers creating the Kafka producer until a validated, committed version needs announcing."""

    def __init__(self, client: ModelBus):
        self._client = client

    def publish(self, topic: str, event_type: str, value: Mapping[str, Any], key: str | bytes | None = None) -> None:
        self._client.producer.publish(topic, event_type, value, key=key)


def _to_json(value: Mapping[str, Any] | BaseModel | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, str):
        json.loads(value)  # must already be JSON
        return value
    return json.dumps(dict(value), sort_keys=True, default=str)


def _check_model_name(name: str) -> None:
    """The deployer's own rule too (reserved step-model names), so a bad name fails here, not after training."""
    from serving.errors import RepositoryError
    from serving.repository import validate_model_name

    try:
        validate_model_name(name)
    except RepositoryError as exc:
        raise InvalidNameError(str(exc)) from exc
