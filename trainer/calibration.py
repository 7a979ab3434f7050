"""Calibration of a classifier's confidences on its validation split, for label-free quality estimates.

This implements the idea of confidence-based performance estimation (CBPE; NannyML,
"Estimating Model Performance without Ground Truth", 2022, and its documentation
of the method): if the probabilities a model serves are calibrated, the expected
accuracy of a batch of served rows is the mean calibrated probability of each
row's predicted class, and the expected ROC-AUC follows from the calibrated
probabilities of the positive class, with no label in sight. Calibration is
fitted here with scikit-learn's isotonic regression on the validation split
(rows the model did not train on and the gate does not test on) and shipped
with the model as two piecewise-linear maps; ClickHouse applies them to live
rows (``v_estimated_quality``). Estimates assume the relation between confidence
and correctness holds on live traffic (no concept drift); realised metrics
replace them as outcomes arrive, and the two are shown side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

MAX_POINTS = 64       # the maps are thinned to at most this many knots (they travel in ModelRegistered)
MIN_ROWS = 20         # fewer validation rows than this give no calibration (an estimate would be noise)


def _knots(x: np.ndarray, target: np.ndarray) -> tuple[list[float], list[float]]:
    """Isotonic fit of target on x, as at most MAX_POINTS (x, y) knots for linear interpolation."""
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, target)
    xs = np.unique(np.clip(np.quantile(x, np.linspace(0, 1, MAX_POINTS)), 0.0, 1.0))
    return [float(v) for v in xs], [float(v) for v in iso.predict(xs)]


def fit_calibration(task: str, y_val: np.ndarray, val_scores: np.ndarray) -> dict[str, Any] | None:
    """The calibration maps of a classifier (None for regression or too few validation rows).

    ``confidence``/``accuracy``: P(prediction correct | top-class probability);
    ``positive_score``/``positive_rate`` (two classes only): P(class 1 | its probability).
    """
    if task == "regression" or len(y_val) < MIN_ROWS or val_scores.ndim != 2:
        return None
    y = np.asarray(y_val).astype(np.int64)
    top = val_scores.max(axis=1)
    correct = (val_scores.argmax(axis=1) == y).astype(np.float64)
    conf_x, conf_y = _knots(top, correct)
    out: dict[str, Any] = {"confidence": conf_x, "accuracy": conf_y, "positive_score": [], "positive_rate": [],
                           "n": int(len(y))}
    if val_scores.shape[1] == 2 and 0 < y.sum() < len(y):
        out["positive_score"], out["positive_rate"] = _knots(val_scores[:, 1], (y == 1).astype(np.float64))
    return out


def apply(knots_x: list[float], knots_y: list[float], x: np.ndarray) -> np.ndarray:
    """The map at x (linear between knots, flat beyond them): what the SQL view computes, for tests and reports."""
    return np.interp(x, knots_x, knots_y)


def expected_accuracy(calibration: dict[str, Any], scores: np.ndarray) -> float:
    return float(apply(calibration["confidence"], calibration["accuracy"], scores.max(axis=1)).mean())


def expected_roc_auc(calibration: dict[str, Any], scores: np.ndarray) -> float | None:
    """CBPE's ROC-AUC for two classes: the expected share of (positive, negative) pairs ranked right."""
    if not calibration.get("positive_score"):
        return None
    s = scores[:, 1]
    p = apply(calibration["positive_score"], calibration["positive_rate"], s)[np.argsort(s, kind="stable")]
    below = np.cumsum(1 - p) - (1 - p)            # expected negatives ranked below each row
    pairs = p.sum() * (1 - p).sum() - (p * (1 - p)).sum()
    return float((p * below).sum() / pairs) if pairs > 0 else None
