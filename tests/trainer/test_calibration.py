"""Label-free quality estimates (CBPE): calibrated on the validation split, checked on held-out rows.

The real-data test trains our default model on scikit-learn's handwritten digits (1797 real images of 8x8
pixels, shipped inside the package) and compares the accuracy estimated from the confidences of the
held-out test rows with the accuracy those rows really have. Stated tolerance: 0.05 (the realised accuracy
of ~270 test rows alone has a standard error near 0.015).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from trainer.calibration import expected_accuracy, expected_roc_auc, fit_calibration
from trainer.predictions import PREDICTIONS_FILE, read_test_predictions
from trainer.run import train_and_evaluate
from trainer.spec import DatasetInfo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOLERANCE = 0.05


def test_on_calibrated_probabilities_the_estimates_match_what_labels_say():
    """Scores that are calibrated by construction: labels drawn with the served probability."""
    rng = np.random.default_rng(0)

    def sample(n):
        p1 = rng.beta(2, 2, n)
        y = (rng.random(n) < p1).astype(int)
        return y, np.column_stack([1 - p1, p1])

    y_val, s_val = sample(20_000)          # large, so sampling noise (SE ~0.005 on the difference) stays small
    cal = fit_calibration("binary", y_val, s_val)
    y, s = sample(20_000)
    realised = float((s.argmax(axis=1) == y).mean())
    assert expected_accuracy(cal, s) == pytest.approx(realised, abs=0.02)
    from sklearn.metrics import roc_auc_score

    assert expected_roc_auc(cal, s) == pytest.approx(roc_auc_score(y, s[:, 1]), abs=0.02)


def test_overconfident_scores_are_corrected_by_the_validation_fit():
    rng = np.random.default_rng(1)
    p1 = rng.beta(2, 2, 6000)
    y = (rng.random(6000) < p1).astype(int)
    sharp = np.clip(0.5 + 1.8 * (p1 - 0.5), 0.01, 0.99)          # the model claims more than it knows
    scores = np.column_stack([1 - sharp, sharp])
    cal = fit_calibration("binary", y[:3000], scores[:3000])
    realised = float((scores[3000:].argmax(axis=1) == y[3000:]).mean())
    naive = float(scores[3000:].max(axis=1).mean())
    assert abs(naive - realised) > 0.1                              # raw confidence would mislead
    assert expected_accuracy(cal, scores[3000:]) == pytest.approx(realised, abs=0.02)


def test_no_calibration_for_regression_or_too_few_rows():
    assert fit_calibration("regression", np.zeros(100), np.zeros((100, 1))) is None
    assert fit_calibration("binary", np.zeros(5), np.full((5, 2), 0.5)) is None


def test_our_model_on_real_digits_estimates_held_out_accuracy_within_tolerance(tmp_path, fast):
    digits = load_digits()
    frame = pd.DataFrame(digits.data, columns=[f"px{i}" for i in range(64)])
    frame["digit"] = [str(d) for d in digits.target]
    info = DatasetInfo(task="multiclass", label_column="digit", feature_columns=tuple(frame.columns[:-1]),
                       name="digits", version="v1")
    result = train_and_evaluate(frame, info, fast(epochs=15, hidden_sizes=(64,), batch_size=64), tmp_path)
    assert result.calibration is not None and result.calibration["n"] > 200
    _, labels, outputs, _ = read_test_predictions(tmp_path / PREDICTIONS_FILE)
    scores = outputs["candidate"]
    realised = float((scores.argmax(axis=1) == labels.astype(int)).mean())
    estimated = expected_accuracy(result.calibration, scores)
    assert abs(estimated - realised) <= TOLERANCE, (estimated, realised)
