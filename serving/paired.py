"""Paired comparison of two models on the same rows: the gain in a metric and its confidence interval.

Why a paired bootstrap: the gate compares ROC AUC, macro F1 and RMSE, which
are not means of per-row scores, so McNemar (accuracy only) does not apply,
and DeLong covers ROC AUC only. Resampling *row indices* and recomputing both
models' metric on the same resampled rows keeps the pairing (the rows'
difficulty cancels out of the difference) and works for every metric. The
interval is scipy's BCa (bias-corrected and accelerated) bootstrap with a fixed
``random_state``, so a decision replays bit for bit. BCa's jackknife costs one
metric evaluation per row, so above ``BCA_MAX_ROWS`` rows the percentile
interval is used (the two agree closely at that size).

Degenerate cases are answered exactly rather than with NaN: when every
resample gives the same gain (both models perfect on every row: a tie at the
ceiling) the interval is that gain; resamples where the metric is undefined
(ROC AUC of a one-class resample) are left out of a percentile interval.

The gain is direction-corrected: positive means the candidate is better,
in the metric's units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import stats

from trainer.evaluate import metric_value, normalize_proba

BOOTSTRAP_SEED = 20_240_613
N_RESAMPLES = 1000
BCA_MAX_ROWS = 2000
RULES = ("superiority", "non_inferiority")


def _auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per row of ``scores`` [B, m] (Mann-Whitney U over average ranks, ties count half)."""
    ranks = stats.rankdata(scores, axis=-1)
    n1 = positive.sum(axis=-1).astype(np.float64)
    n0 = positive.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def batched_metric(task: str, metric: str, y: np.ndarray, output: np.ndarray) -> np.ndarray:
    """``metric_value`` of B resamples at once (``y`` [B, m], ``output`` [B, m(, K)]), for the bootstrap.

    The primary metrics are vectorised (equal to ``metric_value``, see
    tests/serving/test_paired.py); any other metric loops over ``metric_value``.
    """
    if task == "regression" and metric in ("rmse", "mae"):
        err = np.asarray(output, dtype=np.float64) - y
        return np.sqrt(np.mean(err ** 2, axis=-1)) if metric == "rmse" else np.mean(np.abs(err), axis=-1)
    if task != "regression" and metric in ("roc_auc", "macro_f1", "accuracy"):
        proba = normalize_proba(output.reshape(-1, output.shape[-1])).reshape(output.shape)
        k = proba.shape[-1]
        if metric == "roc_auc":
            if k == 2:
                return _auc(proba[..., 1], y == 1)
            return np.mean([_auc(proba[..., c], y == c) for c in range(k)], axis=0)
        pred = proba.argmax(axis=-1)
        if metric == "accuracy":
            return np.mean(pred == y, axis=-1)
        f1 = []
        for c in range(k):
            tp = np.sum((pred == c) & (y == c), axis=-1)
            wrong = np.sum((pred == c) != (y == c), axis=-1)
            denom = 2 * tp + wrong
            f1.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
        return np.mean(f1, axis=0)
    return np.array([metric_value(task, metric, yy, oo) for yy, oo in zip(y, output)])


@dataclass(frozen=True)
class PairedRows:
    """A test split with every model's output on it, row for row.

    ``outputs['candidate']`` is the candidate; baselines are named after
    themselves; the champion (when there is one) is ``'champion'``. ``slices``
    holds each slice column's value (as text) per row.
    """

    task: str
    row_ids: np.ndarray
    y: np.ndarray
    outputs: Mapping[str, np.ndarray]
    slices: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.row_ids)
        bad = [k for k, v in {"y": self.y, **self.outputs, **self.slices}.items() if len(v) != n]
        if bad:
            raise ValueError(f"paired rows: {bad} do not have one value per row ({n} rows)")

    def subset(self, mask: np.ndarray) -> "PairedRows":
        return PairedRows(self.task, self.row_ids[mask], self.y[mask], {k: v[mask] for k, v in self.outputs.items()},
                          {k: v[mask] for k, v in self.slices.items()})


@dataclass(frozen=True)
class Comparison:
    """Candidate vs reference on ``n`` shared rows; ``difference`` and the interval are the gain."""

    n: int
    value: float
    reference_value: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str

    @property
    def defined(self) -> bool:
        return all(math.isfinite(v) for v in (self.value, self.reference_value, self.ci_low, self.ci_high))


def compare(task: str, metric: str, higher_is_better: bool, y: np.ndarray, candidate: np.ndarray,
            reference: np.ndarray, *, confidence: float = 0.95, seed: int = BOOTSTRAP_SEED,
            n_resamples: int = N_RESAMPLES) -> Comparison:
    """Paired bootstrap interval of the candidate's gain over the reference on the same rows."""
    y, candidate, reference = np.asarray(y), np.asarray(candidate), np.asarray(reference)
    sign = 1.0 if higher_is_better else -1.0

    def gain_on(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        one = np.ndim(idx) == 1
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        gain = sign * (batched_metric(task, metric, y[idx], candidate[idx])
                       - batched_metric(task, metric, y[idx], reference[idx]))
        return gain[0] if one else gain

    n = len(y)
    value, ref = metric_value(task, metric, y, candidate), metric_value(task, metric, y, reference)
    diff = sign * (value - ref)
    if n < 2 or not math.isfinite(diff):
        return Comparison(n, value, ref, diff, math.nan, math.nan, confidence, "none")
    method = "BCa" if n <= BCA_MAX_ROWS else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate / NaN resamples are handled below
        res = stats.bootstrap((np.arange(n),), gain_on, vectorized=True, n_resamples=n_resamples,
                              batch=200,
                              confidence_level=confidence, method=method, random_state=seed)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        dist = dist[np.isfinite(dist)]
        if dist.size == 0:
            return Comparison(n, value, ref, diff, math.nan, math.nan, confidence, method)
        if np.ptp(dist) == 0:
            low = high = float(dist[0])
            method = "degenerate"
        else:
            alpha = (1.0 - confidence) / 2
            low, high = (float(q) for q in np.quantile(dist, [alpha, 1 - alpha]))
            method = "percentile"
    return Comparison(n, value, ref, diff, low, high, confidence, method)


def rule_holds(rule: str, margin: float, ci_low: float, ci_high: float | None = None) -> bool:
    """Whether the gain's interval satisfies ``rule``.

    superiority: the lower bound exceeds ``margin``; non_inferiority: the lower
    bound exceeds ``-margin``; no_regression: the upper bound is not below
    ``-margin`` (fails only when the candidate is credibly worse by more than the
    margin: the slice rule, where many small groups could never prove
    non-inferiority).
    """
    if rule == "superiority":
        return ci_low > margin
    if rule == "non_inferiority":
        return ci_low > -margin
    if rule == "no_regression":
        return ci_high is not None and ci_high >= -margin
    raise ValueError(f"unknown decision rule {rule!r}; use one of {RULES + ('no_regression',)}")


def rule_bound(rule: str, margin: float) -> float:
    """The value the bound named by ``rule`` is compared with."""
    return margin if rule == "superiority" else -margin
