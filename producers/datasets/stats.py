"""Per-column statistics computed block by block: the drift reference of a dataset version.

Everything here is mergeable and bounded in memory, so a file larger than RAM
gets the same kind of statistics as a small one:

* numeric: count/mean/std (Chan's parallel update), min/max, and quantile bin
  edges — exact up to ``EXACT_VALUES`` values, beyond that from an Apache
  DataSketches KLL sketch fed a systematic 1-in-8 sample (~1 % rank error, a
  few KB per column); bin counts then come from the sketch's CDF scaled to the
  true count;
* categorical: most frequent values from a DataSketches frequent-items sketch fed
  with per-block value counts (exact below its capacity);
* distinct counts: a k-minimum-values estimate over 64-bit hashes (exact below k).

Bins follow numpy's histogram rule: [e0, e1), [e1, e2), ..., [e_{n-1}, e_n], so the
drift monitor can bin live values with ``np.histogram(values, bins=bin_edges)``.
Records match the ColumnStats Avro schema field for field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import frequent_items_error_type, frequent_strings_sketch, kll_doubles_sketch

N_BINS = 10
TOP_CATEGORIES = 50
KLL_K = 400
KMV_K = 4096
EXACT_VALUES = 200_000  # up to this many values per column, quantiles and bin counts are exact
SKETCH_STRIDE = 8       # beyond that, every 8th value feeds the quantile sketch
_U64 = float(2 ** 64)


class DistinctCounter:
    """k-minimum-values cardinality estimate over 64-bit hashes; exact while fewer than k distinct."""

    def __init__(self, k: int = KMV_K):
        self.k = k
        self._mins = np.empty(0, dtype=np.uint64)

    def update_hashes(self, hashes: np.ndarray) -> None:
        if len(self._mins) >= self.k and len(hashes):
            hashes = hashes[hashes < self._mins[-1]]  # one cheap pass; almost nothing survives once k are kept
        if not len(hashes):
            return
        if len(hashes) > self.k:
            hashes = pd.unique(hashes)  # O(n); low-cardinality columns shrink to a handful here
        if len(hashes) > self.k:
            hashes = np.partition(hashes, self.k - 1)[: self.k]
        self._mins = np.union1d(self._mins, hashes)[: self.k]

    def estimate(self) -> int:
        if len(self._mins) < self.k:
            return int(len(self._mins))
        return int(round((self.k - 1) / (float(self._mins[-1]) / _U64)))


class ColumnAccumulator:
    """Streaming statistics of one canonical column."""

    def __init__(self, name: str, dtype: pa.DataType):
        self.name, self.dtype = name, dtype
        self.kind = "categorical" if (pa.types.is_string(dtype) or pa.types.is_boolean(dtype)) else "numeric"
        self.count = self.nulls = 0
        self.distinct = DistinctCounter()
        if self.kind == "numeric":
            self.mean = self.m2 = 0.0
            self.n = 0  # values in the moments: rows, or pixels of an image column
            self.min, self.max = np.inf, -np.inf
            self.kll = kll_doubles_sketch(KLL_K)
            self._exact: list[np.ndarray] | None = []  # small columns get exact quantiles and counts
        else:
            self.freq = frequent_strings_sketch(12)

    def update(self, arr: pa.Array, hashes: np.ndarray | None = None,
               encoded: pa.DictionaryArray | None = None) -> None:
        """Fold one block in; ``hashes``/``encoded``: the column's row hashes / dictionary encoding if known."""
        self.nulls += arr.null_count
        valid = arr.drop_null() if arr.null_count else arr
        if not len(valid):
            return
        self.count += len(valid)
        if hashes is None:
            from producers.datasets.hashing import RowHasher

            hashes = RowHasher(pa.schema([pa.field(self.name, self.dtype)])).hash_column(arr, self.name)
        self.distinct.update_hashes(hashes[arr.is_valid().to_numpy(zero_copy_only=False)] if arr.null_count
                                    else hashes)
        if self.kind == "categorical":
            self._update_categorical(encoded if encoded is not None else pc.dictionary_encode(arr))
        else:
            self._update_numeric(valid)

    def _update_categorical(self, enc: pa.DictionaryArray) -> None:
        idx = enc.indices.drop_null() if enc.null_count else enc.indices
        counts = np.bincount(idx.to_numpy(zero_copy_only=False), minlength=len(enc.dictionary))
        values = enc.dictionary
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.string())
        for v, n in zip(values.to_pylist(), counts.tolist()):
            if n:
                self.freq.update(v, n)

    def _update_numeric(self, valid: pa.Array) -> None:
        """Moments (Chan's merge) and extremes in numpy; quantiles exact while small, sketched beyond.

        Infinite values make the dataset fail validation, so they need no special care here.
        """
        x = _numeric_view(valid).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore", over="ignore"):  # inf only in refused datasets
            n, mean = len(x), float(x.mean())
            m2 = float(x.var()) * n
        tot = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / tot
        self.m2 += m2 + delta * delta * self.n * n / tot
        self.n = tot
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))
        if self._exact is not None:
            self._exact.append(np.array(x, dtype=np.float64))
            if self.n > EXACT_VALUES:  # too many to keep: from here on the sketch holds the distribution
                self.kll.update(np.ascontiguousarray(np.concatenate(self._exact)[::SKETCH_STRIDE]))
                self._exact = None
        else:
            self.kll.update(np.array(x[::SKETCH_STRIDE], dtype=np.float64))  # writable, contiguous copy

    def result(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "name": self.name, "dtype": str(self.dtype), "kind": self.kind, "count": int(self.count),
            "null_count": int(self.nulls), "mean": None, "std": None, "min": None, "max": None,
            "bin_edges": [], "bin_counts": [], "categories": [], "category_counts": [],
            "distinct_count": self.distinct.estimate(),
        }
        image = pa.types.is_fixed_size_list(self.dtype)
        if self.kind == "numeric" and self._exact is not None and self.n and not image:
            rec["distinct_count"] = int(len(np.unique(np.concatenate(self._exact))))
        if self.kind == "numeric" and self.n:
            rec.update(mean=self.mean, std=float(np.sqrt(self.m2 / self.n)), min=self.min, max=self.max)
            rec["bin_edges"], rec["bin_counts"] = self._histogram()
        elif self.kind == "categorical" and self.count:
            items = self.freq.get_frequent_items(frequent_items_error_type.NO_FALSE_POSITIVES)[:TOP_CATEGORIES]
            rec["categories"] = [str(i[0]) for i in items]
            rec["category_counts"] = [int(i[1]) for i in items]
        return rec

    def _histogram(self) -> tuple[list[float], list[int]]:
        if self._exact is not None:
            values = np.concatenate(self._exact)
            with np.errstate(invalid="ignore"):  # infinities (a refused dataset) make NaN edges, not noise
                edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
            if len(edges) == 1:
                return [float(edges[0])] * 2, [int(self.n)]
            counts, _ = np.histogram(values, bins=edges)
            return [float(e) for e in edges], [int(c) for c in counts]
        qs = self.kll.get_quantiles(list(np.linspace(0, 1, N_BINS + 1)))
        edges = sorted(set([self.min, *(float(q) for q in qs[1:-1]), self.max]))
        if len(edges) == 1:
            return [edges[0], edges[0]], [int(self.n)]
        cdf = self.kll.get_cdf(edges[1:-1], inclusive=False) if len(edges) > 2 else [1.0]
        below = [0.0, *cdf[:-1], 1.0]  # fraction strictly below each edge; last edge closes the range
        counts = np.diff(np.round(np.asarray(below) * self.n)).astype(np.int64)
        return [float(e) for e in edges], [int(c) for c in counts]


def _numeric_view(arr: pa.Array) -> pa.Array:
    """A float64 Arrow array of the values: numbers, timestamps as epoch seconds, image pixels flattened."""
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        arr = arr.flatten()
        t = arr.type
    if pa.types.is_timestamp(t):
        return pc.divide(pc.cast(pc.cast(arr, pa.int64()), pa.float64()), 1e6)
    # safe=False: int64 beyond 2**53 has no exact float64, and statistics do not need one (a safe cast refuses)
    return arr if pa.types.is_float64(t) else pc.cast(arr, pa.float64(), safe=False)


class StatsCollector:
    """Statistics of every column of a canonical schema."""

    def __init__(self, schema: pa.Schema):
        self.columns = {f.name: ColumnAccumulator(f.name, f.type) for f in schema}

    def update(self, batch: pa.RecordBatch, hashes: dict[str, np.ndarray] | None = None,
               encoded: dict[str, pa.DictionaryArray] | None = None) -> None:
        for name, acc in self.columns.items():
            acc.update(batch.column(name), (hashes or {}).get(name), (encoded or {}).get(name))

    def results(self) -> list[dict[str, Any]]:
        return [acc.result() for acc in self.columns.values()]

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {acc.name: acc.result() for acc in self.columns.values()}
