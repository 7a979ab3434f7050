"""The paired bootstrap and its vectorised metrics (pure statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.paired import _counts, compare, rule_holds, weighted_metric
from trainer.evaluate import metric_value


@pytest.mark.parametrize("task,metric,k", [("binary", "roc_auc", 2), ("multiclass", "roc_auc", 3),
                                           ("multiclass", "macro_f1", 4), ("binary", "accuracy", 2),
                                           ("regression", "rmse", 0), ("regression", "mae", 0)])
def test_vectorised_metrics_of_resamples_equal_the_reported_ones(task, metric, k):
    rng = np.random.default_rng(3)
    n = 80
    if task == "regression":
        y = rng.normal(size=n)
        out = y + rng.normal(size=n)
    else:
        y = rng.integers(0, k, size=n)
        out = np.round(rng.dirichlet(np.ones(k), size=n), 1)   # ties in the scores
    idx = rng.integers(0, n, size=(6, n))                       # bootstrap resamples with repeated rows
    got = weighted_metric(task, metric, y, out)(_counts(idx, n))
    want = [metric_value(task, metric, y[i], out[i]) for i in idx]
    assert got == pytest.approx(want)


def test_one_class_resample_gives_nan_auc_like_the_reported_metric():
    y = np.array([0, 1] * 5)
    idx = np.zeros((1, 10), dtype=int)   # only row 0 (class 0), ten times
    assert np.isnan(weighted_metric("binary", "roc_auc", y, np.full((10, 2), 0.5))(_counts(idx, 10)))


def test_metrics_without_a_vectorised_form_use_the_reported_definition():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    a, b = rng.dirichlet([1, 1], 60), rng.dirichlet([1, 1], 60)
    assert weighted_metric("binary", "log_loss", y, a) is None
    c = compare("binary", "log_loss", False, y, a, b, n_resamples=200)
    assert c.difference == pytest.approx(metric_value("binary", "log_loss", y, b) - metric_value("binary", "log_loss",
                                                                                                   y, a))
    assert c.ci_low <= c.difference <= c.ci_high


def test_interval_is_deterministic_and_covers_a_real_gain():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    good = np.clip(y * 0.4 + rng.random(500) * 0.6, 0, 1)
    bad = np.clip(y * 0.1 + rng.random(500) * 0.9, 0, 1)
    p = lambda v: np.stack([1 - v, v], axis=1)  # noqa: E731
    a = compare("binary", "roc_auc", True, y, p(good), p(bad))
    b = compare("binary", "roc_auc", True, y, p(good), p(bad))
    assert a == b and a.method == "BCa" and a.n == 500
    assert 0 < a.ci_low < a.difference < a.ci_high
    flipped = compare("binary", "roc_auc", True, y, p(bad), p(good))
    assert flipped.difference == pytest.approx(-a.difference) and flipped.ci_high < 0


def test_lower_is_better_gain_is_positive_when_the_error_is_smaller():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    c = compare("regression", "rmse", False, y, y + rng.normal(0, 0.1, 300), y + rng.normal(0, 1.0, 300))
    assert c.value < c.reference_value and c.difference > 0 and c.ci_low > 0


def test_identical_models_give_a_degenerate_zero_interval():
    y = np.array([0, 1] * 30)
    out = np.stack([1 - y, y], axis=1).astype(float)
    c = compare("binary", "roc_auc", True, y, out, out)
    assert (c.difference, c.ci_low, c.ci_high, c.method) == (0.0, 0.0, 0.0, "degenerate")


def test_rules():
    assert rule_holds("non_inferiority", 0.01, 0.0) and not rule_holds("superiority", 0.0, 0.0)
    assert rule_holds("superiority", 0.01, 0.02) and not rule_holds("non_inferiority", 0.01, -0.02)
    assert rule_holds("no_regression", 0.05, -0.5, 0.3) and not rule_holds("no_regression", 0.05, -0.5, -0.06)
    with pytest.raises(ValueError):
        rule_holds("best", 0.0, 1.0)
