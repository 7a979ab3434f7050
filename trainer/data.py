"""Input normalisation, label encoding and the train/val/test split.

The split never depends on the training seed: a row's split is a function of
its content (see :func:`split_indices` for the exact rule), so a seed change
cannot move the test set, every later version of a dataset keeps its old rows
where they were, and champion and challenger are judged on rows that neither
trained on. With a time column the newest rows are the test split, which is
how the model will be used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

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

    @property
    def pixels(self) -> np.ndarray:
        """``images`` of an image dataset, where it is always set."""
        assert self.images is not None, "not an image dataset"
        return self.images


@dataclass(frozen=True)
class Split:
    """Row positions of each split, sorted ascending."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    strategy: str  # "time" or "content-hash"

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


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BUCKETS = float(2 ** 53)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: every output bit depends on every input bit, so buckets are uniform."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _column_hash(series: pd.Series) -> np.ndarray:
    """Hash of each value in a canonical form: numbers (and booleans) as float64, everything else as text.

    So ``3``, ``3.0`` and ``True``/``1`` of a column hash alike whatever dtype a
    version was written with; missing values (None, NaN, NaT) all hash alike.
    """
    missing = series.isna().to_numpy()
    numeric = not isinstance(series.dtype, pd.CategoricalDtype) and (
        pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series)
        # object columns of booleans or numbers with nulls (how Arrow hands them over) hash like their values
        or pd.api.types.infer_dtype(series, skipna=True) in ("boolean", "integer", "floating", "mixed-integer-float"))
    if numeric:
        values = pd.to_numeric(series.where(~series.isna(), np.nan).astype("float64"),
                               errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(missing, 0.0, values) + 0.0   # +0.0 folds -0.0 into 0.0
        h = pd.util.hash_array(values, categorize=False)
    else:
        h = pd.util.hash_array(np.where(missing, "", series.astype(str).to_numpy()).astype(object))
    return np.where(missing, _GOLDEN, h)


def _image_hash(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in flat],
                    dtype=np.uint64)


def row_hashes(table: Table, info: DatasetInfo) -> np.ndarray:
    """64-bit content hash of each row: its label and feature values, columns in name order.

    Only the label and the declared features enter, so a version that adds an
    unrelated column (or reorders columns) keeps every row's hash. Identical
    rows hash alike, which is what keeps duplicates out of two splits.
    """
    h = np.zeros(len(table), dtype=np.uint64)
    columns = sorted({info.label_column, *info.feature_columns} - ({info.feature_columns[0]} if info.is_image
                                                                    else set()))
    with np.errstate(over="ignore"):
        for col in columns:
            name = np.uint64(int.from_bytes(hashlib.blake2b(col.encode(), digest_size=8).digest(), "little"))
            h = _mix((h ^ _column_hash(table.frame[col]) ^ name) * np.uint64(0x100000001B3))
        if info.is_image:
            h = _mix((h ^ _image_hash(table.pixels)) * np.uint64(0x100000001B3))
    return _mix(h)


def row_ids(hashes: np.ndarray) -> np.ndarray:
    """Row ids as 16 hex digits (the id test predictions and the gate use to pair rows)."""
    return np.array([f"{int(v):016x}" for v in hashes], dtype=object)


def split_indices(table: Table, info: DatasetInfo, y: np.ndarray, *, val_fraction: float,
                  test_fraction: float) -> Split:
    """Train/val/test positions, from the rows' content (never the training seed).

    The rule, exactly: ``u = (row_hashes(row) >> 11) / 2**53`` is a number in
    [0, 1) fixed by the row's label and feature values; ``u < test_fraction``
    puts the row in test, ``u < test_fraction + val_fraction`` in validation,
    anything else in train. Consequences: adding rows never moves existing
    rows (v2's test rows that were in v1 were in v1's test split); duplicates
    share a split; and because the label is part of the hash, each class is
    split in the stated fractions in expectation (stratified in expectation,
    not by quota, which would move rows when others are added).

    Only when the buckets leave a split empty (tiny data) are the rows ranked
    by ``u`` and the split filled from its end of the ranking (still content-
    only). With ``info.time_column`` the split is by time: the newest rows are
    the test split, the next newest validation.
    """
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
    u = (row_hashes(table, info) >> np.uint64(11)).astype(np.float64) / _BUCKETS
    which = np.where(u < test_fraction, 0, np.where(u < test_fraction + val_fraction, 1, 2))
    if np.bincount(which, minlength=3).min() == 0:
        order = np.argsort(u, kind="stable")
        which = np.full(n, 2)
        which[order[:n_test]] = 0
        which[order[n_test:n_test + n_val]] = 1
    idx = np.arange(n)
    return Split(idx[which == 2], idx[which == 1], idx[which == 0], "content-hash")
