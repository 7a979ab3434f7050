"""Test-split metrics, overall and per slice.

Metrics come from scikit-learn; a metric that is undefined on some rows (ROC AUC
with a single class in a slice, R² of one row) is left out rather than reported
as NaN, because downstream gates compare numbers and NaN compares false with
everything.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

PRIMARY = {"binary": ("roc_auc", True), "multiclass": ("macro_f1", True), "regression": ("rmse", False)}
MAX_SLICE_VALUES = 50
MISSING_SLICE = "null"


def primary_metric(task: str) -> tuple[str, bool]:
    """Name of the metric the promotion gate compares, and whether higher is better."""
    return PRIMARY[task]


def normalize_proba(proba: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, None)
    return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: gap between confidence and accuracy, averaged over equal-width bins by weight."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(total)


CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "ece", "log_loss", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def metric_value(task: str, name: str, y: np.ndarray, output: np.ndarray) -> float:
    """One metric of ``output`` on ``y``; NaN where it is undefined (one class only, R² of constant labels).

    The one definition of every metric: the run's reports, the baselines and the
    gate's paired bootstrap all call it, so their numbers agree.
    """
    if len(y) == 0:
        return math.nan
    if task == "regression":
        y, pred = np.asarray(y, dtype=np.float64), np.asarray(output, dtype=np.float64).reshape(-1)
        if name == "rmse":
            return float(skm.root_mean_squared_error(y, pred))
        if name == "mae":
            return float(skm.mean_absolute_error(y, pred))
        if name == "r2":
            return float(skm.r2_score(y, pred)) if len(y) >= 2 and np.ptp(y) > 0 else math.nan
        raise KeyError(f"unknown regression metric {name!r}")
    proba = normalize_proba(output)
    k = proba.shape[1]
    labels = list(range(k))
    if name == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == y))
    if name == "macro_f1":
        return float(skm.f1_score(y, proba.argmax(axis=1), average="macro", labels=labels, zero_division=0))
    if name == "ece":
        return expected_calibration_error(y, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if name == "log_loss":
                return float(skm.log_loss(y, proba, labels=labels))
            if name == "roc_auc":
                if k == 2:
                    return float(skm.roc_auc_score(y, proba[:, 1]))
                return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))
        except ValueError:  # undefined here (e.g. one class only)
            return math.nan
    raise KeyError(f"unknown classification metric {name!r}")


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, macro_f1, roc_auc (binary, or one-vs-rest macro), log_loss, ece."""
    values = {name: metric_value("binary", name, y, proba) for name in CLASSIFICATION_METRICS}
    return {name: v for name, v in values.items() if math.isfinite(v)}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """rmse, mae, r2."""
    values = {name: metric_value("regression", name, y, pred) for name in REGRESSION_METRICS}
    return {name: v for name, v in values.items() if math.isfinite(v)}


def compute_metrics(task: str, y: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """``output``: class probabilities [N, K] (classification) or predictions [N] (regression)."""
    if len(y) == 0:
        return {}
    if task == "regression":
        return regression_metrics(y, output)
    return classification_metrics(y, output)


def slice_values(series: pd.Series) -> np.ndarray:
    """Slice values as strings; missing values form their own slice, 'null'."""
    return np.where(series.isna().to_numpy(), MISSING_SLICE, series.astype(str).to_numpy()).astype(object)


def slice_metrics(task: str, frame: pd.DataFrame, slice_columns: Sequence[str], y: np.ndarray,
                  output: np.ndarray, *, min_rows: int, max_values: int = MAX_SLICE_VALUES) -> list[dict[str, Any]]:
    """``SliceMetrics`` dicts for each value of each slice column (the most frequent ``max_values``).

    Slices with fewer than ``min_rows`` test rows keep their count but get no
    metrics: numbers from a handful of rows would make gates flap.
    """
    result: list[dict[str, Any]] = []
    for col in slice_columns:
        values = slice_values(frame[col])
        counts = pd.Series(values).value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_values]
        for value, count in ranked:
            mask = values == value
            m = compute_metrics(task, y[mask], output[mask]) if count >= min_rows else {}
            result.append({"column": str(col), "value": str(value), "count": int(count), "metrics": m})
    return result


def per_row_loss(task: str, y: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class (classification) or absolute error (regression), per row."""
    if task == "regression":
        return np.abs(np.asarray(output, dtype=np.float64).reshape(-1) - y)
    p = normalize_proba(output)[np.arange(len(y)), y]
    return -np.log(np.clip(p, 1e-15, 1.0))
