"""Tiny synthetic datasets for trainer tests: a few hundred rows, signal plus noise.

Labels are noisy on purpose: a feature that determines the label exactly is
what the leakage check rejects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.spec import DatasetInfo, TrainingSpec


def make_tabular(n: int = 240, seed: int = 0, task: str = "binary") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income k$": rng.lognormal(3, 0.5, n),
        "city": rng.choice(["paris", "lyon", "nice"], n),
        "region": rng.choice(["EU", "US"], n),
        "ts": pd.date_range("2024-01-01", periods=n, freq="h")[rng.permutation(n)],
    })
    score = (df["age"] - 40) / 10 + np.where(df["city"] == "paris", 1.0, -0.5) + rng.normal(0, 1, n)
    if task == "binary":
        df["label"] = np.where(score > 0, "yes", "no")
    elif task == "multiclass":
        df["label"] = pd.cut(score, [-np.inf, -0.7, 0.7, np.inf], labels=["low", "mid", "high"]).astype(str)
    else:
        df["label"] = 3.0 * score + 10.0
    df.loc[df.index[::13], "age"] = np.nan
    df.loc[df.index[5::17], "city"] = None
    return df


def info_for(task: str = "binary", **kw) -> DatasetInfo:
    base = dict(task=task, label_column="label", feature_columns=("age", "income k$", "city"),
                slice_columns=("region",), name="churn", version="v1")
    base.update(kw)
    return DatasetInfo(**base)


FAST = dict(epochs=3, batch_size=64, hidden_sizes=(16,), device="cpu", min_slice_rows=5)


@pytest.fixture(autouse=True)
def _every_trainer_test_on_one_torch_thread(one_torch_thread):
    """The shared ``one_torch_thread`` fixture (tests/conftest.py), for every test here."""


@pytest.fixture
def tabular():
    """Factory: ``tabular(n=240, seed=0, task='binary')`` -> DataFrame."""
    return make_tabular


@pytest.fixture
def make_info():
    """Factory: ``make_info(task, **overrides)`` -> DatasetInfo for ``tabular`` frames."""
    return info_for


@pytest.fixture
def fast():
    """Factory: ``fast(**overrides)`` -> a TrainingSpec small enough for unit tests."""
    return lambda **kw: TrainingSpec(**{**FAST, **kw})
