"""Pure rules of the outcome sink: what a report refers to, whether it fits its model, and its stored row.

No I/O here (``consumers/outcome_sink.py`` writes; the join itself is SQL, ``consumers/outcome_join.py``),
so each rule has a plain test: ``tests/consumers/test_outcome_rows.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Mapping

from infra.errors import PoisonEvent

PREDICTION_ID = re.compile(r"^.+:\d+$")
MAX_TEXT = 256


@dataclass(frozen=True)
class ModelInfo:
    """What the sink needs of a registered model: its task and each version's class labels."""

    task: str                                  # 'binary', 'multiclass' or 'regression'
    labels: Mapping[int, tuple[str, ...]]      # version → labels by output index

    @property
    def all_labels(self) -> set[str]:
        return {label for labels in self.labels.values() for label in labels}


def ref_of(outcome: Mapping[str, Any]) -> str:
    """'id:<prediction_id>' or 'key:<row_key>'; PoisonEvent when the report names neither or both, or badly."""
    pid, key = outcome.get("prediction_id"), outcome.get("key")
    if (pid is None) == (key is None):
        raise PoisonEvent("an outcome names exactly one of prediction_id and key; this one names "
                          + ("both" if pid is not None else "neither"))
    if pid is not None:
        if len(pid) > MAX_TEXT or not PREDICTION_ID.match(pid):
            raise PoisonEvent(f"malformed prediction_id {pid[:80]!r}: expected '<request_id>:<row>'")
        return f"id:{pid}"
    if not key or len(key) > MAX_TEXT:
        raise PoisonEvent(f"malformed key: must be 1 to {MAX_TEXT} characters")
    return f"key:{key}"


def check_fits(outcome: Mapping[str, Any], model: ModelInfo) -> None:
    """PoisonEvent when the outcome's type or class does not fit the model (wrong label type, unknown class)."""
    label, value, name = outcome.get("label"), outcome.get("value"), outcome["model_name"]
    if (label is None) == (value is None):
        raise PoisonEvent("an outcome carries exactly one of label and value")
    if model.task != "regression":
        if label is None:
            raise PoisonEvent(f"model {name} is a classifier: its outcomes carry a label, not the value {value}")
        if label not in model.all_labels:
            raise PoisonEvent(f"label {label[:80]!r} is not one of model {name}'s classes "
                              f"{sorted(model.all_labels)[:20]}")
    else:
        if value is None:
            raise PoisonEvent(f"model {name} is a regressor: its outcomes carry a value, not the label {label!r}")
        if not math.isfinite(value):
            raise PoisonEvent(f"outcome value {value} is not a finite number")


def _aware(value: Any) -> datetime:
    """An aware UTC datetime from what a decoded event holds (a datetime, or epoch microseconds)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1e6, UTC)


def outcome_row(event_id: str, header: Mapping[str, Any], outcome: Mapping[str, Any], ref: str) -> dict[str, Any]:
    """The ``outcomes`` row of one report (the sink writes a batch of them as one Arrow block)."""
    return {"event_id": event_id, "event_time": _aware(header["event_time"]), "producer": header["producer"],
            "model_name": outcome["model_name"], "ref": ref, "prediction_id": outcome.get("prediction_id"),
            "row_key": outcome.get("key"), "label": outcome.get("label"), "value": outcome.get("value"),
            "observed_at": _aware(outcome["observed_at"]), "source": outcome.get("source") or ""}
