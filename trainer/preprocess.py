"""Preprocessing fitted on the training split, shipped inside the exported model.

Fitting on the training split only keeps validation and test honest (no mean or
vocabulary leaks from rows the model is judged on). The fitted statistics live
in TorchScript modules so that serving takes raw features and can never drift
from what training saw; the same modules encode the training tensors, so the
two paths cannot disagree.
"""


import keyword
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from trainer.data import Table
from trainer.errors import TrainingCheckError

NUMERIC, CATEGORICAL, IMAGE = "numeric", "categorical", "image"
OOV_INDEX = 0
MISSING_TOKEN = ""  # a missing categorical value is this string, in training and in serving
MAX_VOCAB = 10_000
MAX_NAME = 128  # serving accepts tensor names of at most 128 characters
_RESERVED = set(keyword.kwlist) | {"self", "torch", "Tensor", "List", "Tuple", "Dict", "Optional", "int", "float",
                                   "str", "bool", "len", "range", "print"}


@dataclass(frozen=True)
class InputSpec:
    """One model input: dataset column, sanitized input name, kind."""

    column: str
    name: str
    kind: str


def feature_kind(series: pd.Series) -> str:
    """Numbers and booleans are numeric; strings and categories are categorical."""
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        raise TrainingCheckError(
            f"feature {series.name!r} is a date/time column; use it as time_column or derive numeric features")
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return NUMERIC
    return CATEGORICAL


def sanitize_names(columns: Sequence[str]) -> list[str]:
    """Input names per the artifact contract: ``[A-Za-z_][A-Za-z0-9_]*``, unique.

    Python keywords and names TorchScript resolves (``torch``, ``self``...) also
    get the ``f_`` prefix because the names become parameters of generated code;
    names are cut to 128 characters, the longest tensor name serving accepts.
    """
    out: list[str] = []
    seen: set[str] = set()
    for col in columns:
        name = re.sub(r"[^A-Za-z0-9_]", "_", str(col)) or "f_"
        if name[0].isdigit() or name in _RESERVED:
            name = "f_" + name
        name = name[:MAX_NAME]
        base, k = name[:MAX_NAME - 8], 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        out.append(name)
    return out


def numeric_values(values: Any) -> np.ndarray:
    """Raw numeric column as float32; missing values become NaN."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if s.dtype == object:
        s = pd.to_numeric(s.map(lambda v: np.nan if v is None else v), errors="coerce")
    return s.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)


def categorical_values(values: Any) -> list[str]:
    """Raw categorical column as strings; missing values become ``MISSING_TOKEN``."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    s = s.astype(object)
    return [MISSING_TOKEN if _is_missing(v) else str(v) for v in s.to_list()]


def _is_missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # arrays and other containers are values, not missing
        return False


class TabularPreprocessor(nn.Module):
    """Standardizes numeric columns and maps categorical strings to vocabulary indices."""

    vocabs: list[dict[str, int]]
    mean: Tensor   # buffers (register_buffer)
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], vocabs: Sequence[Sequence[str]]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))
        self.vocabs = [{v: i + 1 for i, v in enumerate(vocab)} for vocab in vocabs]

    def forward(self, numeric: Tensor, categorical: list[list[str]]) -> tuple[Tensor, Tensor]:
        x = self.standardize(numeric)
        codes: list[Tensor] = []
        j = 0
        for vocab in self.vocabs:
            codes.append(torch.tensor([vocab.get(v, 0) for v in categorical[j]], dtype=torch.long,
                                      device=x.device))
            j += 1
        if len(codes) == 0:
            return x, torch.zeros((x.shape[0], 0), dtype=torch.long, device=x.device)
        return x, torch.stack(codes, dim=1)

    def standardize(self, numeric: Tensor) -> Tensor:
        x = numeric.to(torch.float32)
        x = torch.where(torch.isfinite(x), x, self.mean.expand_as(x))
        return (x - self.mean) / self.std


class ImagePreprocessor(nn.Module):
    """Standardizes pixels with the training split's mean and std; NaN becomes the mean."""

    mean: Tensor   # buffers (register_buffer)
    std: Tensor

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))

    def forward(self, image: Tensor) -> Tensor:
        x = image.to(torch.float32)
        x = torch.where(torch.isfinite(x), x, self.mean.expand_as(x))
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class Preprocessing:
    """Fitted preprocessing of one run."""

    inputs: tuple[InputSpec, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    vocabs: tuple[tuple[str, ...], ...] = ()
    image_shape: tuple[int, ...] = ()
    image_mean: float = 0.0
    image_std: float = 1.0
    target_mean: float = 0.0
    target_std: float = 1.0
    imputed: tuple[str, ...] = ()  # numeric columns with nulls in the data: served NaN is imputed there too

    @property
    def is_image(self) -> bool:
        return bool(self.image_shape)

    @property
    def numeric(self) -> list[InputSpec]:
        return [i for i in self.inputs if i.kind == NUMERIC]

    @property
    def categorical(self) -> list[InputSpec]:
        return [i for i in self.inputs if i.kind == CATEGORICAL]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary plus the OOV index."""
        return [len(v) + 1 for v in self.vocabs]

    def module(self) -> nn.Module:
        """A fresh TorchScript-able module applying this preprocessing to raw inputs."""
        if self.is_image:
            return ImagePreprocessor(self.image_mean, self.image_std)
        return TabularPreprocessor(self.mean, self.std, self.vocabs)

    def encode(self, table: Table, rows: np.ndarray | None = None) -> tuple[Tensor, ...]:
        """Model-ready tensors of ``rows``: ``(x_num, x_cat)`` or ``(image,)``."""
        mod = self.module()
        with torch.no_grad():
            if self.is_image:
                imgs = table.pixels if rows is None else table.pixels[rows]
                return (mod(torch.from_numpy(np.ascontiguousarray(imgs))),)
            frame = table.frame if rows is None else table.frame.iloc[rows]
            return self.encode_columns({i.column: frame[i.column] for i in self.inputs}, len(frame))

    def encode_columns(self, columns: dict[str, Any], n: int) -> tuple[Tensor, Tensor]:
        """Vectorized equivalent of the TorchScript module on raw columns."""
        mod = self.module()
        assert isinstance(mod, TabularPreprocessor), "columns are encoded for a tabular model"
        num = np.stack([numeric_values(columns[i.column]) for i in self.numeric], axis=1) if self.numeric \
            else np.zeros((n, 0), dtype=np.float32)
        with torch.no_grad():
            x_num = mod.standardize(torch.from_numpy(num))
        codes = np.zeros((n, len(self.vocabs)), dtype=np.int64)
        for j, (spec, vocab) in enumerate(zip(self.categorical, self.vocabs)):
            cat = pd.Categorical(categorical_values(columns[spec.column]), categories=list(vocab))
            codes[:, j] = np.asarray(cat.codes, dtype=np.int64) + 1  # -1 (unknown) -> OOV_INDEX
        return x_num, torch.from_numpy(codes)

    def to_json(self) -> dict[str, Any]:
        """Human-readable copy written as preprocess.json."""
        doc: dict[str, Any] = {"format_version": 1, "fitted_on": "train"}
        if self.is_image:
            doc["image"] = {"column": self.inputs[0].column, "name": self.inputs[0].name,
                            "shape": list(self.image_shape), "mean": self.image_mean, "std": self.image_std,
                            "non_finite": "replaced by mean"}
        else:
            doc["numeric"] = [{"column": i.column, "name": i.name, "mean": m, "std": s, "non_finite": "mean",
                               "trained_with_missing": i.column in self.imputed}
                              for i, m, s in zip(self.numeric, self.mean, self.std)]
            doc["categorical"] = [{"column": i.column, "name": i.name, "vocabulary": list(v),
                                   "oov_index": OOV_INDEX, "missing_token": MISSING_TOKEN}
                                  for i, v in zip(self.categorical, self.vocabs)]
        if self.target_std != 1.0 or self.target_mean != 0.0:
            doc["target"] = {"mean": self.target_mean, "std": self.target_std}
        return doc


def fit_preprocessing(table: Table, features: Sequence[str], train: np.ndarray, *, image_column: str | None = None,
                      image_shape: Sequence[int] = (), y_train: np.ndarray | None = None) -> Preprocessing:
    """Fit standardization, imputation values and vocabularies on the training rows only.

    A numeric null anywhere in the dataset marks its column ``imputed``: the model
    was built for nulls there, so serving imputes them (training-split mean) under
    the default nan_policy instead of refusing rows the model was trained like.
    """
    target_mean, target_std = 0.0, 1.0
    if y_train is not None:
        target_mean, target_std = float(np.mean(y_train)), _safe_std(np.std(y_train))
    if image_column is not None:
        pix = table.pixels[train]
        finite = pix[np.isfinite(pix)]
        if finite.size == 0:
            raise TrainingCheckError("training images hold no finite pixel values")
        return Preprocessing(inputs=(InputSpec(image_column, "image", IMAGE),), image_shape=tuple(image_shape),
                             image_mean=float(finite.mean(dtype=np.float64)),
                             image_std=_safe_std(finite.std(dtype=np.float64)),
                             target_mean=target_mean, target_std=target_std)
    frame = table.frame.iloc[train]
    names = sanitize_names(features)
    inputs = tuple(InputSpec(c, n, feature_kind(table.frame[c])) for c, n in zip(features, names))
    mean, std, vocabs, imputed = [], [], [], []
    for spec in inputs:
        if spec.kind == NUMERIC:
            if not np.isfinite(numeric_values(table.frame[spec.column])).all():
                imputed.append(spec.column)
            v = numeric_values(frame[spec.column]).astype(np.float64)
            v = v[np.isfinite(v)]
            m = float(v.mean()) if v.size else 0.0
            mean.append(m)
            std.append(_safe_std(v.std()) if v.size else 1.0)
        else:
            counts = pd.Series(categorical_values(frame[spec.column])).value_counts()
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_VOCAB]
            vocabs.append(tuple(k for k, _ in ranked))
    return Preprocessing(inputs=inputs, mean=tuple(mean), std=tuple(std), vocabs=tuple(vocabs),
                         target_mean=target_mean, target_std=target_std, imputed=tuple(imputed))


def _safe_std(s: float) -> float:
    s = float(s)
    return s if np.isfinite(s) and s > 1e-12 else 1.0
