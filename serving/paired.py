"""Paired comparison of two models on the same rows: the gain in a metric and its confidence interval.

Why a paired bootstrap: the gate compares ROC AUC, macro F1 and RMSE, which
are not means of per-row scores, so McNemar (accuracy only) does not apply,
and DeLong covers ROC AUC only. Resampling *row indices* and recomputing both
models' metric on the same resampled rows keeps the pairing (the rows'
difficulty cancels out of the difference) and works for every metric. The
interval is scipy's BCa (bias-corrected and accelerated) bootstrap with a fixed
``random_state``, so a decision replays bit for bit. BCa's jackknife costs one
metric evaluation per row, so above ``BCA_MAX_ROWS`` rows the percentile
interval is used (the two agree closely at that size). Resamples are
evaluated as row-count vectors (:func:`weighted_metric`), all at once.

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
from typing import Callable, Mapping

import numpy as np
from scipy import stats

from trainer.evaluate import metric_value, normalize_proba

BOOTSTRAP_SEED = 20_240_613
N_RESAMPLES = 1000
BCA_MAX_ROWS = 2000
RULES = ("superiority", "non_inferiority")


def _auc(scores: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """ROC AUC under row weights: Mann-Whitney U with ties counted half, rows sorted once.

    A bootstrap resample is a vector of row counts, and the AUC of a resample
    with repeated rows is exactly the count-weighted U statistic.
    """
    order = np.argsort(scores, kind="stable")
    _, starts = np.unique(scores[order], return_index=True)
    pos = positive[order].astype(np.float64)

    def auc(counts: np.ndarray) -> np.ndarray:
        c = counts[:, order]
        p_g = np.add.reduceat(c * pos, starts, axis=1)
        n_g = np.add.reduceat(c * (1.0 - pos), starts, axis=1)
        below = np.cumsum(n_g, axis=1) - n_g
        p, n = p_g.sum(axis=1), n_g.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((p > 0) & (n > 0), (p_g * (below + 0.5 * n_g)).sum(axis=1) / (p * n), np.nan)

    return auc


def weighted_metric(task: str, metric: str, y: np.ndarray,
                    output: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """``counts [B, n] -> metric [B]``: the metric of B resamples given as row counts, or None if not vectorised.

    Equal to ``metric_value`` on the resampled rows (tests/serving/test_paired.py)
    and linear in the counts (matrix products), which is what makes a paired
    bootstrap of thousands of rows take well under a second.
    """
    y = np.asarray(y)
    if task == "regression":
        if metric not in ("rmse", "mae"):
            return None
        err = np.asarray(output, dtype=np.float64).reshape(-1) - y
        per_row = err ** 2 if metric == "rmse" else np.abs(err)
        if metric == "rmse":
            return lambda c: np.sqrt(c @ per_row / c.sum(axis=1))
        return lambda c: c @ per_row / c.sum(axis=1)
    proba = normalize_proba(output)
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    if metric == "accuracy":
        correct = (pred == y).astype(np.float64)
        return lambda c: c @ correct / c.sum(axis=1)
    if metric == "macro_f1":
        tp = np.stack([(pred == j) & (y == j) for j in range(k)], axis=1).astype(np.float64)
        wrong = np.stack([(pred == j) != (y == j) for j in range(k)], axis=1).astype(np.float64)

        def macro_f1(c: np.ndarray) -> np.ndarray:
            t, w = c @ tp, c @ wrong
            return np.where(2 * t + w > 0, 2 * t / np.maximum(2 * t + w, 1e-300), 0.0).mean(axis=1)

        return macro_f1
    if metric == "roc_auc":
        if k == 2:
            return _auc(proba[:, 1], y == 1)
        per_class = [_auc(proba[:, j], y == j) for j in range(k)]
        return lambda c: np.mean([f(c) for f in per_class], axis=0)
    return None


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Row index resamples [B, m] as row counts [B, n]."""
    b = idx.shape[0]
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


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

    def subset(self, mask: np.ndarray) -> PairedRows:
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

    fast = [weighted_metric(task, metric, y, out) for out in (candidate, reference)]

    def gain_on(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        one = np.ndim(idx) == 1
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        if fast[0] is not None and fast[1] is not None:
            counts = _counts(idx, len(y))
            gain = sign * (fast[0](counts) - fast[1](counts))
        else:
            gain = sign * np.array([metric_value(task, metric, y[i], candidate[i])
                                    - metric_value(task, metric, y[i], reference[i]) for i in idx])
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


RELATIVE_METRICS = frozenset({"rmse", "mae"})


def margin_in_units(metric: str, margin: float, reference_value: float | None) -> float:
    """A policy margin in the metric's own units.

    Bounded metrics (ROC AUC, accuracy, F1 in [0, 1]) take the margin as is.
    Error metrics (``RELATIVE_METRICS``) have the target's units, so a fixed
    0.01 means nothing across datasets (0.01 mpg, 0.01 of a disease score);
    there the margin is a *fraction of the reference model's value* (0.01 = 1 %
    of its RMSE), the usual way to state a non-inferiority margin for an
    unbounded error. Checks report the margin in units, so the rule replays.
    """
    if metric in RELATIVE_METRICS and reference_value is not None and math.isfinite(reference_value):
        return margin * abs(reference_value)
    return margin


def rule_bound(rule: str, margin: float) -> float:
    """The value the bound named by ``rule`` is compared with."""
    return margin if rule == "superiority" else -margin
