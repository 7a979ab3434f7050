"""Column statistics in the shape of the ``ColumnStats`` Avro record.

These are the drift reference: the monitor bins live traffic with the same
quantile edges and compares counts (PSI, KS, chi-squared), so numeric columns
carry quantile bin edges and categorical ones their most frequent values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

NUMERIC, CATEGORICAL = "numeric", "categorical"
PREDICTION = "__prediction__"


def arrow_type(series: pd.Series) -> str:
    """Arrow type name of a column ('double', 'int64', 'string', ...); 'string' when Arrow cannot tell."""
    try:
        return str(pa.Array.from_pandas(series).type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        return "string"


def infer_kind(series: pd.Series) -> str:
    """Numbers and booleans are numeric (as the model sees them); everything else categorical."""
    if pd.api.types.is_bool_dtype(series) or (
            pd.api.types.is_numeric_dtype(series) and not isinstance(series.dtype, pd.CategoricalDtype)):
        return NUMERIC
    return CATEGORICAL


def column_stats(series: pd.Series, *, name: str | None = None, kind: str | None = None, bins: int = 10,
                 top_k: int = 20) -> dict[str, Any]:
    """A ``ColumnStats`` dict of one column.

    Numeric: mean/std/min/max and ``bins`` quantile bins (fewer when values
    repeat; edges are unique and ``len(bin_edges) == len(bin_counts) + 1``);
    non-finite values count as nulls. Categorical: the ``top_k`` most frequent
    values (ties by value) with their counts.
    """
    if not isinstance(series, pd.Series):
        series = pd.Series(series)
    kind = kind or infer_kind(series)
    out: dict[str, Any] = {
        "name": str(name if name is not None else series.name), "dtype": arrow_type(series), "kind": kind,
        "count": 0, "null_count": 0, "mean": None, "std": None, "min": None, "max": None, "bin_edges": [],
        "bin_counts": [], "categories": [], "category_counts": [], "distinct_count": None,
    }
    if kind == NUMERIC:
        values = pd.to_numeric(series.astype(float) if pd.api.types.is_bool_dtype(series) else series,
                               errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        out["count"], out["null_count"] = int(finite.size), int(values.size - finite.size)
        out["distinct_count"] = int(np.unique(finite).size)
        if finite.size:
            out.update(mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()),
                       max=float(finite.max()))
            edges, counts = quantile_histogram(finite, bins)
            out["bin_edges"], out["bin_counts"] = edges, counts
        return out
    missing = series.isna().to_numpy()
    present = series[~missing].astype(str)
    out["count"], out["null_count"] = int(present.size), int(missing.sum())
    counts = present.value_counts()
    out["distinct_count"] = int(counts.size)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    out["categories"] = [str(k) for k, _ in ranked]
    out["category_counts"] = [int(v) for _, v in ranked]
    return out


def quantile_histogram(values: np.ndarray, bins: int = 10) -> tuple[list[float], list[int]]:
    """Unique quantile edges of finite ``values`` and the count in each bin (last bin closed)."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size == 1:
        return [float(edges[0]), float(edges[0])], [int(values.size)]
    counts, _ = np.histogram(values, bins=edges)
    return [float(e) for e in edges], [int(c) for c in counts]


def reference_stats(frame: pd.DataFrame, columns: list[str], kinds: dict[str, str] | None = None,
                    predictions: pd.Series | None = None) -> list[dict[str, Any]]:
    """Stats of feature columns plus the prediction distribution as ``__prediction__``."""
    kinds = kinds or {}
    stats = [column_stats(frame[c], name=c, kind=kinds.get(c)) for c in columns]
    if predictions is not None:
        stats.append(column_stats(predictions.reset_index(drop=True), name=PREDICTION))
    return stats
