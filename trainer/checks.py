"""Training-time checks: fail fast, with a reason a person can act on.

These run on the whole dataset before the split. They catch what would
otherwise produce a model that looks great and is worthless (label leakage),
or a run that cannot be evaluated at all (too few rows or classes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from trainer.data import Table
from trainer.errors import TrainingCheckError
from trainer.preprocess import CATEGORICAL, categorical_values, feature_kind, numeric_values
from trainer.spec import DatasetInfo, TrainingSpec

log = logging.getLogger(__name__)
_LEAKAGE_SAMPLE = 50_000


@dataclass(frozen=True)
class CheckOutcome:
    """Features that survive the checks and the warnings worth showing."""

    features: tuple[str, ...]
    warnings: tuple[str, ...]


def run_checks(table: Table, info: DatasetInfo, y: np.ndarray, labels: list[str], spec: TrainingSpec) -> CheckOutcome:
    """Run every check; raise ``TrainingCheckError`` on the first failure."""
    check_row_count(len(table), spec.min_rows)
    if info.task != "regression":
        check_class_counts(y, labels, spec.min_rows_per_class)
    if info.is_image:
        if table.images is not None and np.nanstd(table.images) == 0:
            raise TrainingCheckError("every pixel of every image has the same value; there is nothing to learn")
        return CheckOutcome(tuple(info.feature_columns), ())
    features, warnings = drop_constant_features(table.frame, info.feature_columns)
    for col in features:
        feature_kind(table.frame[col])  # raises for unsupported types
    if spec.check_leakage:
        check_leakage(table.frame, features, info.label_column, info.task, seed=spec.seed)
    return CheckOutcome(tuple(features), tuple(warnings))


def check_row_count(n: int, min_rows: int) -> None:
    if n < min_rows:
        raise TrainingCheckError(f"the dataset has {n} rows; training needs at least {min_rows}")


def check_class_counts(y: np.ndarray, labels: list[str], min_rows_per_class: int) -> None:
    if len(labels) < 2:
        raise TrainingCheckError(f"the label has a single class ({labels[0] if labels else 'none'}); "
                                 "classification needs at least two")
    counts = np.bincount(y, minlength=len(labels))
    small = [f"{labels[i]!r} ({c} rows)" for i, c in enumerate(counts) if c < min_rows_per_class]
    if small:
        raise TrainingCheckError(f"too few rows per class (minimum {min_rows_per_class}): {', '.join(small)}")


def drop_constant_features(frame: pd.DataFrame, features: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """Drop features with a single value (missing counts as a value); fail when none is left."""
    constant = [c for c in features if frame[c].nunique(dropna=False) <= 1]
    if len(constant) == len(features):
        raise TrainingCheckError(f"every feature is constant ({', '.join(map(repr, constant))}); "
                                 "there is nothing to learn from")
    warnings = [f"feature {c!r} is constant and was dropped" for c in constant]
    for w in warnings:
        log.warning(w)
    return [c for c in features if c not in constant], warnings


def check_leakage(frame: pd.DataFrame, features: list[str], label: str, task: str, *, seed: int = 0) -> None:
    """Fail when one feature alone determines the label.

    A feature leaks when it equals the label, when each of its (few) values maps
    to a single label value, or (numeric) when one split per class separates the
    classes perfectly / it is a monotone function of a regression label.
    """
    if len(frame) > _LEAKAGE_SAMPLE:
        frame = frame.sample(_LEAKAGE_SAMPLE, random_state=seed)
    target = frame[label]
    target_str = pd.Series(categorical_values(target), index=frame.index)
    n = len(frame)
    for col in features:
        s = frame[col]
        kind = feature_kind(s)
        as_str = pd.Series(categorical_values(s), index=frame.index)
        if (as_str == target_str).all() or _numerically_equal(s, target):
            raise TrainingCheckError(f"label leakage: feature {col!r} is identical to the label {label!r}; "
                                     "remove it from feature_columns (or set check_leakage=false)")
        distinct = as_str.nunique()
        if distinct <= max(2, n // 5) and (target_str.groupby(as_str).nunique() == 1).all():
            raise TrainingCheckError(
                f"label leakage: each value of feature {col!r} maps to a single value of {label!r} "
                f"({distinct} values); remove it from feature_columns (or set check_leakage=false)")
        if kind == CATEGORICAL or n < 10:
            continue
        x = numeric_values(s).astype(np.float64)
        if task == "regression":
            ok = np.isfinite(x)
            if ok.sum() >= 10 and np.nanstd(x[ok]) > 0:
                rho = pd.Series(x[ok]).corr(pd.Series(pd.to_numeric(target).to_numpy()[ok]), method="spearman")
                if np.isfinite(rho) and abs(rho) > 0.9999:
                    raise TrainingCheckError(
                        f"label leakage: feature {col!r} is a monotone function of the label {label!r} "
                        f"(Spearman {rho:.5f}); remove it from feature_columns (or set check_leakage=false)")
            continue
        filled = np.where(np.isfinite(x), x, np.nanmin(x[np.isfinite(x)]) - 1.0 if np.isfinite(x).any() else 0.0)
        n_classes = target_str.nunique()
        tree = DecisionTreeClassifier(max_leaf_nodes=max(2, n_classes), random_state=0)
        tree.fit(filled.reshape(-1, 1), target_str.to_numpy())
        if tree.score(filled.reshape(-1, 1), target_str.to_numpy()) == 1.0:
            raise TrainingCheckError(
                f"label leakage: thresholds on feature {col!r} alone separate every class of {label!r}; "
                "remove it from feature_columns (or set check_leakage=false)")


def _numerically_equal(a: pd.Series, b: pd.Series) -> bool:
    if not (pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b)):
        return False
    x, y = numeric_values(a), numeric_values(b)
    return bool(np.array_equal(x, y, equal_nan=True))
