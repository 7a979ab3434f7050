"""Baselines trained in the same run, on the same split: trivial, linear and gradient boosting.

A network that does not match "predict the majority class", a linear model or
gradient-boosted trees on the same features is not worth deploying. The gate
compares with these per row (their test outputs are stored next to the
model's), so they see exactly the model's training rows and test rows.

Majority/mean and linear use the model's preprocessing (standardized numbers,
one-hot categoricals). HistGradientBoosting gets what it handles natively:
raw numbers with their missing values as NaN, and categoricals as category
codes (missing or unseen as NaN), with a fixed ``random_state``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import OneHotEncoder
from torch import Tensor

BASELINES = {"regression": ("mean", "linear", "boosting"), "classification": ("majority", "linear", "boosting")}
HGB_MAX_CATEGORIES = 255   # HistGradientBoosting's limit on category codes (max_bins)


def baseline_names(task: str) -> tuple[str, ...]:
    return BASELINES["regression" if task == "regression" else "classification"]


def design_matrix(inputs: Sequence[Tensor], cardinalities: Sequence[int]):
    """Preprocessed inputs as a (sparse) matrix: numerics as is, categoricals one-hot, images flattened."""
    if len(inputs) == 1:  # image
        return inputs[0].reshape(inputs[0].shape[0], -1).numpy().astype(np.float64)
    x_num, x_cat = inputs
    blocks = [sp.csr_matrix(x_num.numpy().astype(np.float64))]
    if cardinalities:
        enc = OneHotEncoder(categories=[np.arange(c) for c in cardinalities], handle_unknown="ignore")
        blocks.append(enc.fit_transform(x_cat.numpy()))
    return sp.hstack(blocks, format="csr")


def boosting_matrix(inputs: Sequence[Tensor], raw_numeric: np.ndarray | None,
                    cardinalities: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense matrix for HistGradientBoosting and its categorical-feature mask.

    ``raw_numeric``: the numeric features before imputation (NaN = missing).
    Category code 0 (missing or unseen) becomes NaN so the trees learn where
    missing values go; categoricals with more codes than HGB allows stay
    ordinal numbers.
    """
    if len(inputs) == 1:
        return design_matrix(inputs, cardinalities), None
    x_num, x_cat = inputs
    num = raw_numeric if raw_numeric is not None else x_num.numpy()
    cat = x_cat.numpy().astype(np.float64) - 1.0
    cat[cat < 0] = np.nan
    mask = np.array([False] * num.shape[1] + [c - 1 <= HGB_MAX_CATEGORIES for c in cardinalities], dtype=bool)
    return np.hstack([np.asarray(num, dtype=np.float64), cat]), (mask if mask.any() else None)


def _full_proba(model, x, n_classes: int) -> np.ndarray:
    """Probabilities over all classes, zero for classes absent from the training split."""
    proba = np.zeros((x.shape[0], n_classes))
    proba[:, model.classes_.astype(int)] = model.predict_proba(x)
    return proba


def run_baselines(task: str, train_inputs: Sequence[Tensor], y_train: np.ndarray, test_inputs: Sequence[Tensor],
                  *, cardinalities: Sequence[int], n_classes: int, seed: int = 0,
                  raw_train: np.ndarray | None = None, raw_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Test-split outputs (probabilities [N, K] or predictions [N]) of every baseline, by name."""
    x_train = design_matrix(train_inputs, cardinalities)
    x_test = design_matrix(test_inputs, cardinalities)
    b_train, cat_mask = boosting_matrix(train_inputs, raw_train, cardinalities)
    b_test, _ = boosting_matrix(test_inputs, raw_test, cardinalities)
    hgb = dict(categorical_features=cat_mask, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task == "regression":
            mean = DummyRegressor(strategy="mean").fit(x_train, y_train)
            ridge = Ridge(alpha=1.0, random_state=seed).fit(x_train, y_train)
            boost = HistGradientBoostingRegressor(**hgb).fit(b_train, y_train)
            return {"mean": mean.predict(x_test), "linear": ridge.predict(x_test), "boosting": boost.predict(b_test)}
        majority = DummyClassifier(strategy="prior").fit(x_train, y_train)
        # A time split can leave one class in training; the other baselines then know no more than the prior.
        several = np.unique(y_train).size > 1
        linear = LogisticRegression(max_iter=500, random_state=seed).fit(x_train, y_train) if several else majority
        boost = HistGradientBoostingClassifier(**hgb).fit(b_train, y_train) if several else None
    return {"majority": _full_proba(majority, x_test, n_classes),
            "linear": _full_proba(linear, x_test, n_classes),
            "boosting": _full_proba(boost, b_test, n_classes) if boost is not None
            else _full_proba(majority, x_test, n_classes)}
