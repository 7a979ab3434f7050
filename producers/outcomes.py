"""Outcomes: what really happened to a served prediction, reported by the upstream app when it is known.

An outcome names its prediction by the prediction id the client got back
(``<request_id>:<row>``) or by the client's own row key (unique per model), and
carries the true label (classification) or value (regression). Each is checked
here before anything is published, so a malformed report fails at the caller
with the reason; what only the platform can judge (is the label one of the
model's classes? does the prediction exist?) is judged by the outcome sink,
which dead-letters or counts it (``consumers/outcome_sink.py``).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from producers.errors import ProducerError
from schemas.events import new_header
from schemas.types import OutcomeObserved

PREDICTION_ID = re.compile(r"^.+:\d+$")
MAX_TEXT = 256
COLUMNS = ("model_name", "prediction_id", "key", "label", "value", "observed_at", "source")


class InvalidOutcomeError(ProducerError):
    """An outcome report that cannot be published, with the reason (and the row of a file, when from one)."""


class Outcome(BaseModel):
    """One outcome report, checked: exactly one of prediction_id / key, exactly one of label / value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    prediction_id: str | None = None
    key: str | None = None
    label: str | None = None
    value: float | None = None
    observed_at: datetime | None = None
    source: str = ""

    @field_validator("model_name", "prediction_id", "key", "label", "source")
    @classmethod
    def _bounded(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_TEXT:
            raise ValueError(f"longer than {MAX_TEXT} characters")
        return v

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _one_of_each(self) -> Outcome:
        if not self.model_name:
            raise ValueError("model_name is required")
        if (self.prediction_id is None) == (self.key is None):
            raise ValueError("give exactly one of prediction_id and key")
        if self.prediction_id is not None and not PREDICTION_ID.match(self.prediction_id):
            raise ValueError(f"prediction_id {self.prediction_id!r} is not '<request_id>:<row>'")
        if self.key == "":
            raise ValueError("key must not be empty")
        if (self.label is None) == (self.value is None):
            raise ValueError("give exactly one of label (classification) and value (regression)")
        return self

    def event(self, producer: str, correlation_id: str | None = None) -> OutcomeObserved:
        at = self.observed_at or datetime.now(UTC)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return {"header": new_header(producer, correlation_id=correlation_id), "model_name": self.model_name,
                "prediction_id": self.prediction_id, "key": self.key, "label": self.label, "value": self.value,
                "observed_at": int(at.timestamp() * 1_000_000), "source": self.source}

    @property
    def kafka_key(self) -> str:
        """One prediction's reports share a partition, so they arrive in the order they were sent."""
        return self.prediction_id if self.prediction_id is not None else f"{self.model_name}/{self.key}"


def outcome(value: Outcome | Mapping[str, Any], where: str = "") -> Outcome:
    """An Outcome from a mapping (a file row, SDK keywords); InvalidOutcomeError with the reason otherwise."""
    if isinstance(value, Outcome):
        return value
    try:
        return Outcome.model_validate({k: v for k, v in value.items() if v is not None and v == v})
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'outcome'}: {e['msg']}" for e in exc.errors())
        raise InvalidOutcomeError(f"{where}{reasons}") from None


def read_outcomes(path: str | Path, *, model_name: str | None = None, source: str | None = None) -> list[Outcome]:
    """Outcomes from a CSV or Parquet file with columns among COLUMNS (``model_name`` and ``source`` may be
    given for the whole file instead). A bad row fails the whole file, naming the row."""
    path = Path(path)
    table = _read_table(path)
    unknown = set(table.column_names) - set(COLUMNS)
    if unknown:
        raise InvalidOutcomeError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}; "
                                  f"expected some of {', '.join(COLUMNS)}")
    out = []
    for i, row in enumerate(table.to_pylist()):
        if model_name is not None:
            row.setdefault("model_name", model_name)
            row["model_name"] = row["model_name"] or model_name
        if source is not None and not row.get("source"):
            row["source"] = source
        for k in ("prediction_id", "key", "label", "model_name", "source"):
            if row.get(k) is not None and not isinstance(row[k], str):
                row[k] = str(row[k])
        out.append(outcome(row, where=f"{path.name} row {i + 1}: "))
    return out


def _read_table(path: Path) -> pa.Table:
    from pyarrow import csv, parquet

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return parquet.read_table(path)
        if path.suffix.lower() == ".csv":
            strings = {c: pa.string() for c in ("model_name", "prediction_id", "key", "label", "source")}
            return csv.read_csv(path, convert_options=csv.ConvertOptions(column_types=strings,
                                                                        strings_can_be_null=True))
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidOutcomeError(f"{path}: cannot read it: {exc}") from None
    raise InvalidOutcomeError(f"{path}: outcomes come as .csv or .parquet")


def as_outcomes(values: Iterable[Outcome | Mapping[str, Any]]) -> list[Outcome]:
    return [outcome(v, where=f"outcome {i + 1}: ") for i, v in enumerate(values)]
