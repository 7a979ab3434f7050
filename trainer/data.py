"""Input normalisation, label encoding and the train/val/test split.

The split is a pure function of the data, the seed and the fractions, so a
retried or resumed run (and every DDP rank) sees exactly the same rows. With a
time column the newest rows are the test split, which is how the model will be
used; otherwise classification splits are stratified so rare classes appear in
every split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from trainer.errors import TrainingCheckError
from trainer.spec import DatasetInfo


@dataclass(frozen=True)
class Table:
    """A dataset in memory: scalar columns in ``frame``, image arrays apart.

    ``frame`` has a 0..n-1 RangeIndex so split indices are positions in both.
    """

    frame: pd.DataFrame
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class Split:
    """Row positions of each split, sorted ascending."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    strategy: str  # "time", "stratified" or "random"

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def as_table(data: Any, info: DatasetInfo) -> Table:
    """Accept a DataFrame, a ``{column: array}`` mapping or an ``(X, y)`` pair.

    Image datasets carry their arrays in the single feature column (one array per
    row) or as ``X`` of shape ``[N, *image_shape]``.
    """
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (np.asarray(a) if not isinstance(a, pd.Series) else a for a in data)
        if len(x) != len(y):
            raise TrainingCheckError(f"X has {len(x)} rows but y has {len(y)}")
        if info.is_image:
            frame = pd.DataFrame({info.label_column: np.asarray(y)})
            return Table(frame, _image_block(x, info))
        x2 = np.asarray(x)
        if x2.ndim != 2 or x2.shape[1] != len(info.feature_columns):
            raise TrainingCheckError(
                f"X must have shape [rows, {len(info.feature_columns)}] (one column per feature), got {x2.shape}")
        frame = pd.DataFrame(x2, columns=list(info.feature_columns))
        frame[info.label_column] = np.asarray(y)
        return Table(frame)
    if isinstance(data, Mapping):
        data = pd.DataFrame({k: (list(v) if _is_nested(v) else v) for k, v in data.items()})
    if not isinstance(data, pd.DataFrame):
        raise TrainingCheckError(f"unsupported training data of type {type(data).__name__}; "
                                 "pass a DataFrame, a {column: array} mapping or an (X, y) pair")
    needed = [info.label_column, *info.feature_columns, *info.slice_columns]
    if info.time_column:
        needed.append(info.time_column)
    missing = [c for c in dict.fromkeys(needed) if c not in data.columns]
    if missing:
        raise TrainingCheckError(f"columns missing from the data: {', '.join(map(repr, missing))}")
    frame = data.reset_index(drop=True)
    if info.is_image:
        col = info.feature_columns[0]
        images = _image_block(frame[col].to_list(), info)
        return Table(frame.drop(columns=[col]), images)
    return Table(frame)


def _is_nested(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.ndim > 1


def _image_block(x: Any, info: DatasetInfo) -> np.ndarray:
    shape = tuple(info.image_shape)
    size = int(np.prod(shape))
    try:
        if isinstance(x, np.ndarray) and x.dtype != object:
            arr = np.asarray(x, dtype=np.float32)
            return arr.reshape((arr.shape[0], *shape))
        return np.stack([np.asarray(v, dtype=np.float32).reshape(shape) for v in x]).astype(np.float32, copy=False)
    except (ValueError, TypeError) as exc:
        raise TrainingCheckError(
            f"image arrays do not match image_shape {list(shape)} ({size} values per row): {exc}") from exc


def encode_labels(series: pd.Series, task: str) -> tuple[np.ndarray, list[str]]:
    """Classification: class indices and labels (index -> label string); regression: float targets."""
    if series.isna().any():
        raise TrainingCheckError(f"label column {series.name!r} has {int(series.isna().sum())} missing values")
    if task == "regression":
        try:
            y = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise TrainingCheckError(f"regression label {series.name!r} is not numeric: {exc}") from exc
        if not np.isfinite(y).all():
            raise TrainingCheckError(f"regression label {series.name!r} has infinite values")
        return y, []
    values = series.to_numpy()
    try:
        classes, codes = np.unique(values, return_inverse=True)
    except TypeError:  # mixed types do not sort; their string forms do
        classes, codes = np.unique(values.astype(str), return_inverse=True)
    labels = [str(c) for c in classes]
    if len(set(labels)) != len(labels):
        raise TrainingCheckError(f"label values of {series.name!r} collide when written as strings")
    return codes.astype(np.int64).reshape(-1), labels


def split_indices(table: Table, info: DatasetInfo, y: np.ndarray, *, seed: int,
                  val_fraction: float, test_fraction: float) -> Split:
    """Deterministic train/val/test positions: by time, stratified, or random."""
    n = len(table)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 1:
        raise TrainingCheckError(f"{n} rows are too few to split into train/val/test")
    if info.time_column:
        order = (table.frame[info.time_column]
                 .sort_values(kind="stable", na_position="first").index.to_numpy())
        train, val, test = order[: n - n_test - n_val], order[n - n_test - n_val: n - n_test], order[n - n_test:]
        return Split(np.sort(train), np.sort(val), np.sort(test), "time")
    idx = np.arange(n)
    stratify = info.task != "regression"
    try:
        rest, test = train_test_split(idx, test_size=n_test, random_state=seed,
                                      stratify=y if stratify else None)
        train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1,
                                      stratify=y[rest] if stratify else None)
    except ValueError as exc:
        raise TrainingCheckError(f"cannot make a stratified split: {exc}") from exc
    return Split(np.sort(train), np.sort(val), np.sort(test), "stratified" if stratify else "random")
