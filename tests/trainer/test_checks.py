import numpy as np
import pandas as pd
import pytest

from trainer.checks import run_checks
from trainer.data import as_table, encode_labels
from trainer.errors import TrainingCheckError
from trainer.spec import DatasetInfo, TrainingSpec


def _check(df, features, task="binary", **spec):
    info = DatasetInfo(task=task, label_column="label", feature_columns=tuple(features))
    table = as_table(df, info)
    y, labels = encode_labels(table.frame["label"], task)
    return run_checks(table, info, y, labels, TrainingSpec(**spec))


@pytest.fixture
def noisy():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n)})
    df["label"] = np.where(df["x"] + rng.normal(size=n) > 0, "yes", "no")
    return df


def test_honest_features_pass(noisy):
    assert _check(noisy, ["x", "c"]).features == ("x", "c")


@pytest.mark.parametrize("make_leak, reason", [
    (lambda df: df["label"], "identical to the label"),
    (lambda df: df["label"].map({"yes": "churned: price", "no": "stayed"}), "maps to a single value"),
    (lambda df: np.where(df["label"] == "yes", 1.0, -1.0) * np.random.default_rng(1).uniform(1, 2, len(df)),
     "separate every class"),
])
def test_label_leakage_is_rejected(noisy, make_leak, reason):
    noisy["leak"] = make_leak(noisy)
    with pytest.raises(TrainingCheckError, match=reason):
        _check(noisy, ["x", "c", "leak"])
    assert _check(noisy, ["x", "c", "leak"], check_leakage=False).features == ("x", "c", "leak")


def test_regression_leakage_by_monotone_transform():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=100)})
    df["label"] = df["x"] * 2 + rng.normal(size=100)
    df["leak"] = np.exp(df["label"] / 10)
    with pytest.raises(TrainingCheckError, match="monotone"):
        _check(df, ["x", "leak"], task="regression")
    assert _check(df, ["x"], task="regression").features == ("x",)


def test_too_few_rows_overall_and_per_class(noisy):
    with pytest.raises(TrainingCheckError, match="at least 30"):
        _check(noisy.head(20), ["x"])
    rare = noisy.copy()
    rare.loc[rare.index[:3], "label"] = "maybe"
    with pytest.raises(TrainingCheckError, match="'maybe' \\(3 rows\\)"):
        _check(rare, ["x"], min_rows_per_class=5)
    assert _check(rare, ["x"], min_rows_per_class=3).features == ("x",)
    single = noisy.assign(label="yes")
    with pytest.raises(TrainingCheckError, match="single class"):
        _check(single, ["x"])


def test_constant_features_are_dropped_with_a_warning_or_fail_when_all_are(noisy):
    noisy["k"] = 7.0
    noisy["empty"] = None
    outcome = _check(noisy, ["x", "k", "empty"])
    assert outcome.features == ("x",)
    assert any("'k' is constant" in w for w in outcome.warnings)
    with pytest.raises(TrainingCheckError, match="every feature is constant"):
        _check(noisy, ["k", "empty"])


def test_constant_images_fail():
    info = DatasetInfo(task="binary", label_column="label", feature_columns=("image",), image_shape=(2, 2))
    table = as_table((np.ones((40, 2, 2)), np.array([0, 1] * 20)), info)
    y, labels = encode_labels(table.frame["label"], "binary")
    with pytest.raises(TrainingCheckError, match="same value"):
        run_checks(table, info, y, labels, TrainingSpec())
