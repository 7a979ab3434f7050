"""Trivial and linear baselines, trained on the same split and preprocessing.

A network that does not beat "predict the majority class" or a linear model on
the same features is not worth deploying; the promotion gate compares against
these numbers, so they are computed exactly like the model's.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import OneHotEncoder
from torch import Tensor

from trainer.evaluate import compute_metrics


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


def _full_proba(model, x, n_classes: int) -> np.ndarray:
    """Probabilities over all classes, zero for classes absent from the training split."""
    proba = np.zeros((x.shape[0], n_classes))
    proba[:, model.classes_.astype(int)] = model.predict_proba(x)
    return proba


def run_baselines(task: str, train_inputs: Sequence[Tensor], y_train: np.ndarray, test_inputs: Sequence[Tensor],
                  y_test: np.ndarray, *, cardinalities: Sequence[int], n_classes: int,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Test metrics of 'majority'/'mean' and 'linear' baselines."""
    x_train = design_matrix(train_inputs, cardinalities)
    x_test = design_matrix(test_inputs, cardinalities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task == "regression":
            mean = DummyRegressor(strategy="mean").fit(x_train, y_train)
            ridge = Ridge(alpha=1.0, random_state=seed).fit(x_train, y_train)
            return {"mean": compute_metrics(task, y_test, mean.predict(x_test)),
                    "linear": compute_metrics(task, y_test, ridge.predict(x_test))}
        majority = DummyClassifier(strategy="prior").fit(x_train, y_train)
        # A time split can leave one class in training; the linear model then knows no more than the prior.
        linear = (LogisticRegression(max_iter=500, random_state=seed).fit(x_train, y_train)
                  if np.unique(y_train).size > 1 else majority)
    return {"majority": compute_metrics(task, y_test, _full_proba(majority, x_test, n_classes)),
            "linear": compute_metrics(task, y_test, _full_proba(linear, x_test, n_classes))}
