"""Behavioural tests (CheckList-style) of the exported model, declared in the training spec.

Aggregate metrics miss what a model does when one input changes; these tests
state it and measure it on the test split, against the exported TorchScript
model exactly as it will serve (its preprocessing included):

* ``invariance``: the prediction must not change when ``column`` is set to each
  of ``values`` (default: the column's most frequent test values). Measured:
  the share of (row, value) pairs whose predicted class (or, for regression,
  prediction beyond ``tolerance``) changed.
* ``directional``: when ``delta`` is added to numeric ``column`` the score (the
  probability of ``label``, the positive class of a binary task, or the
  regression prediction) must not move against ``expect``. Measured: the share
  of rows that moved the wrong way by more than ``tolerance``.
* ``noise``: Gaussian noise of ``sigma`` × each numeric feature's test standard
  deviation (fixed seed) must not worsen ``metric`` (accuracy, or rmse for
  regression) by more than ``max_drop``.

A test passes when its measured value is at most its threshold; failed tests
become ``behaviour:<name>`` gate checks.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.types import BehaviourTestResult
from trainer.errors import TrainingCheckError
from trainer.evaluate import metric_value, normalize_proba

NOISE_SEED = 0
DEFAULT_VALUES = 5


class BehaviouralTest(BaseModel):
    """One declared behavioural test (``TrainingSpec.behaviour_tests``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["invariance", "directional", "noise"]
    column: str | None = Field(None, description="Perturbed column (invariance, directional).")
    values: tuple[Any, ...] = Field((), description="invariance: values to substitute; default: frequent ones.")
    delta: float = Field(1.0, description="directional: added to the column.")
    expect: Literal["increase", "decrease"] = Field("increase", description="directional: the score's direction.")
    label: str | None = Field(None, description="directional: class whose probability is the score.")
    sigma: float = Field(0.1, gt=0, description="noise: standard deviations of Gaussian noise.")
    metric: str | None = Field(None, description="noise: metric (default accuracy, rmse for regression).")
    max_failure_rate: float = Field(0.0, ge=0, le=1, description="invariance/directional threshold.")
    max_drop: float = Field(0.02, ge=0, description="noise threshold, in the metric's units.")
    tolerance: float = Field(1e-6, ge=0, description="Score change below this is no change.")

    @model_validator(mode="after")
    def _column_where_needed(self) -> BehaviouralTest:
        if self.kind != "noise" and not self.column:
            raise ValueError(f"behavioural test {self.name!r}: {self.kind} needs a column")
        return self


Predict = Any  # (columns: dict[str, list]) -> (scores [N, K] or [N], labels [N])


def run_behaviour_tests(tests: Sequence[BehaviouralTest], predict: Predict, frame: pd.DataFrame,
                        inputs: Sequence[dict[str, Any]], *, task: str, labels: Sequence[str],
                        y: np.ndarray) -> list[BehaviourTestResult]:
    """``BehaviourTestResult`` records; ``predict`` runs the exported model on raw input columns."""
    columns = {i["column"]: frame[i["column"]].tolist() for i in inputs}
    kinds = {i["column"]: i["kind"] for i in inputs}
    if not tests or not len(frame):
        return []
    base_scores, base_pred = predict(columns)
    out: list[BehaviourTestResult] = []
    for t in tests:
        if t.column is not None and t.column not in columns:
            raise TrainingCheckError(f"behavioural test {t.name!r}: column {t.column!r} is not a model input")
        if t.kind == "invariance":
            value, n, detail = _invariance(t, predict, columns, base_scores, base_pred, task)
            threshold = t.max_failure_rate
        elif t.kind == "directional":
            value, n, detail = _directional(t, predict, columns, kinds, base_scores, task, labels)
            threshold = t.max_failure_rate
        else:
            value, n, detail = _noise(t, predict, columns, kinds, base_scores, task, y)
            threshold = t.max_drop
        out.append({"name": t.name, "kind": t.kind, "passed": bool(value <= threshold), "n": int(n),
                    "value": float(value), "threshold": float(threshold), "detail": detail})
    return out


def _changed(task: str, a_scores, a_pred, b_scores, b_pred, tol: float) -> np.ndarray:
    if task == "regression":
        return np.abs(np.asarray(a_scores).reshape(-1) - np.asarray(b_scores).reshape(-1)) > tol
    return np.asarray(a_pred).reshape(-1) != np.asarray(b_pred).reshape(-1)


def _invariance(t: BehaviouralTest, predict, columns, base_scores, base_pred, task):
    series = pd.Series(columns[t.column])
    values = list(t.values) or series.dropna().value_counts().index[:DEFAULT_VALUES].tolist()
    changed = []
    for v in values:
        scores, pred = predict({**columns, t.column: [v] * len(series)})
        changed.append(_changed(task, base_scores, base_pred, scores, pred, t.tolerance))
    rate = float(np.mean(np.concatenate(changed))) if changed else 0.0
    return rate, len(series), (f"prediction changed on {rate:.2%} of {len(series)} rows x {len(values)} values of "
                               f"{t.column!r} {values!r} (allowed {t.max_failure_rate:.2%})")


def _score(task: str, scores: np.ndarray, labels: Sequence[str], label: str | None) -> np.ndarray:
    if task == "regression":
        return np.asarray(scores, dtype=np.float64).reshape(-1)
    proba = normalize_proba(scores)
    if label is not None:
        if label not in labels:
            raise TrainingCheckError(f"behavioural test label {label!r} is not a class ({list(labels)})")
        return proba[:, list(labels).index(label)]
    if proba.shape[1] != 2:
        raise TrainingCheckError("a directional test of a multiclass model names the class: set 'label'")
    return proba[:, 1]


def _directional(t: BehaviouralTest, predict, columns, kinds, base_scores, task, labels):
    if kinds[t.column] != "numeric":
        raise TrainingCheckError(f"directional test {t.name!r}: column {t.column!r} is not numeric")
    shifted = (pd.to_numeric(pd.Series(columns[t.column]), errors="coerce") + t.delta).tolist()
    scores, _ = predict({**columns, t.column: shifted})
    move = _score(task, scores, labels, t.label) - _score(task, base_scores, labels, t.label)
    wrong = move < -t.tolerance if t.expect == "increase" else move > t.tolerance
    rate = float(np.mean(wrong))
    return rate, len(move), (f"score moved against '{t.expect}' on {rate:.2%} of {len(move)} rows when "
                             f"{t.column!r} += {t.delta:g} (allowed {t.max_failure_rate:.2%})")


def _noise(t: BehaviouralTest, predict, columns, kinds, base_scores, task, y):
    metric = t.metric or ("rmse" if task == "regression" else "accuracy")
    higher = metric not in ("rmse", "mae", "log_loss", "ece")
    rng = np.random.default_rng(NOISE_SEED)
    noisy = dict(columns)
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    for c in numeric:
        v = pd.to_numeric(pd.Series(columns[c]), errors="coerce").to_numpy(dtype=np.float64)
        std = float(np.nanstd(v)) if np.isfinite(v).any() else 0.0
        noisy[c] = (v + rng.normal(0.0, t.sigma * std, size=len(v))).tolist()
    scores, _ = predict(noisy)
    before, after = metric_value(task, metric, y, base_scores), metric_value(task, metric, y, scores)
    drop = (before - after) if higher else (after - before)
    return drop, len(y), (f"{metric} {before:.4g} -> {after:.4g} under Gaussian noise sigma={t.sigma:g} std on "
                          f"{len(numeric)} numeric features: drop {drop:+.4g} (allowed {t.max_drop:g})")
