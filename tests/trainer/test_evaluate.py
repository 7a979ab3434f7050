import numpy as np
import pandas as pd
import pytest

from trainer.evaluate import (
    classification_metrics,
    compute_metrics,
    expected_calibration_error,
    primary_metric,
    regression_metrics,
    slice_metrics,
)


def test_primary_metrics_by_task():
    assert primary_metric("binary") == ("roc_auc", True)
    assert primary_metric("multiclass") == ("macro_f1", True)
    assert primary_metric("regression") == ("rmse", False)


def test_classification_metrics_on_known_predictions():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.55, 0.45]])
    m = classification_metrics(y, proba)
    assert m["accuracy"] == 0.5
    assert m["roc_auc"] == 0.75  # one of four positive/negative pairs is misordered
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.45])))
    assert set(m) == {"accuracy", "macro_f1", "roc_auc", "log_loss", "ece"}


def test_ece_is_gap_between_confidence_and_accuracy():
    y = np.array([0, 1, 0, 1])
    proba = np.tile([0.8, 0.2], (4, 1))  # always 80% sure of class 0, right half the time
    assert expected_calibration_error(y, proba) == pytest.approx(0.3)


def test_multiclass_roc_auc_is_one_vs_rest_and_undefined_metrics_are_left_out():
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[y] * 0.9 + 0.1 / 3
    assert classification_metrics(y, proba)["roc_auc"] == 1.0
    assert "roc_auc" not in classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]))


def test_regression_metrics():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 6.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(3.0)) and m["mae"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1 - 9 / 2)
    assert "r2" not in regression_metrics(np.array([1.0]), np.array([2.0]))


def test_slices_report_counts_and_skip_metrics_of_small_slices():
    frame = pd.DataFrame({"region": ["EU"] * 6 + ["US"] * 2 + [None] * 3})
    y = np.array([0, 1] * 3 + [1, 1] + [0, 1, 0])
    proba = np.column_stack([1 - y * 0.8, y * 0.8]) + 0.1
    slices = slice_metrics("binary", frame, ["region"], y, proba, min_rows=3)
    by_value = {s["value"]: s for s in slices}
    assert {v: s["count"] for v, s in by_value.items()} == {"EU": 6, "null": 3, "US": 2}
    assert by_value["US"]["metrics"] == {}
    assert by_value["EU"]["metrics"]["accuracy"] == 1.0
    assert all(s["column"] == "region" for s in slices)
    assert compute_metrics("binary", np.array([], dtype=int), np.zeros((0, 2))) == {}
