"""64-bit row and column hashes for duplicate and uniqueness checks over streamed blocks.

Only 8 bytes per row are kept (not the rows), so duplicates are found across a
file larger than memory; two different rows colliding has probability ~n²/2⁶⁵.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_PRIME = np.uint64(0x100000001B3)
_NULL = np.uint64(0x9E3779B97F4A7C15)


class RowHasher:
    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.encoded: dict[str, pa.DictionaryArray] = {}  # last block's dictionary encoding of text columns
        rng = np.random.default_rng(0x5EED)
        self._weights = {f.name: rng.integers(1, 2**63, size=f.type.list_size, dtype=np.uint64) | np.uint64(1)
                         for f in schema if pa.types.is_fixed_size_list(f.type)}

    def hash_column(self, arr: pa.Array, name: str) -> np.ndarray:
        """One hash per row of ``arr``; nulls hash to a fixed value."""
        n, t = len(arr), arr.type
        if pa.types.is_fixed_size_list(t):
            flat = arr.flatten().to_numpy(zero_copy_only=False) if arr.null_count == 0 else \
                pc.fill_null(arr, pa.scalar([0] * t.list_size, t)).flatten().to_numpy(zero_copy_only=False)
            bits = flat.view(np.uint32) if flat.dtype == np.float32 else flat
            h = bits.reshape(n, t.list_size).astype(np.uint64) @ self._weights[name]
        elif pa.types.is_string(t) or pa.types.is_boolean(t):
            enc = self.encoded[name] = pc.dictionary_encode(arr)  # reused for category counts
            values = enc.dictionary.to_numpy(zero_copy_only=False).astype(object)
            dict_h = pd.util.hash_array(values, categorize=False) if len(values) else np.empty(0, np.uint64)
            idx = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
            h = dict_h[idx] if len(dict_h) else np.zeros(n, np.uint64)
        else:
            if pa.types.is_timestamp(t):
                arr = pc.cast(arr, pa.int64())
            values = (pc.fill_null(arr, 0) if arr.null_count else arr).to_numpy(zero_copy_only=False)
            h = pd.util.hash_array(values, categorize=False)
        if arr.null_count:
            h = np.where(arr.is_null().to_numpy(zero_copy_only=False), _NULL, h)
        return h

    def column_hashes(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """Per-column row hashes of one batch, computed once and shared by every check and statistic."""
        self.encoded = {}
        return {f.name: self.hash_column(batch.column(f.name), f.name) for f in self.schema}

    def combine(self, hashes: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Whole-row hashes from the column hashes (schema order)."""
        h = np.zeros(n, dtype=np.uint64)
        for f in self.schema:
            h ^= hashes[f.name]
            h *= _PRIME
        return h

    def hash_rows(self, batch: pa.RecordBatch) -> np.ndarray:
        return self.combine(self.column_hashes(batch), batch.num_rows)


def duplicate_positions(hashes: np.ndarray, limit: int | None = None) -> tuple[int, np.ndarray]:
    """(how many rows repeat an earlier hash, sorted positions of the first ``limit`` of them).

    Sort-based so the extra memory is one sorted copy, not a hash table over every row;
    only rows whose hash repeats go through a hash table to find which copies are repeats.
    """
    if len(hashes) < 2:
        return 0, np.empty(0, dtype=np.int64)
    s = np.sort(hashes)
    same = s[1:] == s[:-1]
    count = int(same.sum())
    if not count:
        return 0, np.empty(0, dtype=np.int64)
    repeated_values = np.unique(s[1:][same])
    del s, same
    candidates = np.flatnonzero(np.isin(hashes, repeated_values))
    later = pd.Series(hashes[candidates], copy=False).duplicated(keep="first").to_numpy()
    positions = candidates[later]
    return count, positions if limit is None else positions[:limit]


class RepeatTracker:
    """Rows whose hash appeared before: exact up to ``cap`` rows, then on a hash-defined sample.

    Memory stays bounded for any file size: past ``cap`` rows only hashes below a
    threshold are kept (halving it whenever the sample outgrows ``cap / 2``), and since
    every copy of a row has the same hash, a duplicate is sampled together with its
    first occurrence. The count is then scaled back up (an unbiased estimate) and
    flagged as approximate.
    """

    def __init__(self, cap: int = 16_000_000):
        self.cap = cap
        self.level = 0
        self.rows = 0
        self._hashes: list[np.ndarray] = []
        self._positions: list[np.ndarray] | None = None  # only once sampling: positions are implicit before
        self._kept = 0

    def add(self, hashes: np.ndarray) -> None:
        offset, self.rows = self.rows, self.rows + len(hashes)
        if self._positions is None:
            self._hashes.append(hashes)
            self._kept += len(hashes)
            if self._kept > self.cap:
                pos = np.arange(offset + len(hashes), dtype=np.int64)
                self._positions, self._hashes = [pos], [np.concatenate(self._hashes)]
                self._sample_down()
            return
        keep = hashes < self._limit
        self._hashes.append(hashes[keep])
        self._positions.append(np.flatnonzero(keep) + offset)
        self._kept += int(keep.sum())
        if self._kept > self.cap // 2:
            self._sample_down()

    @property
    def _limit(self) -> np.uint64:
        return np.uint64((1 << (64 - self.level)) - 1)

    def _sample_down(self) -> None:
        assert self._positions is not None
        h, p = np.concatenate(self._hashes), np.concatenate(self._positions)
        while len(h) > self.cap // 2:
            self.level += 1
            keep = h < self._limit
            h, p = h[keep], p[keep]
        self._hashes, self._positions, self._kept = [h], [p], len(h)

    def repeats(self) -> tuple[int, np.ndarray, bool]:
        """(number of repeated rows, first few of their row numbers, whether the count is exact)."""
        if not self._hashes:
            return 0, np.empty(0, dtype=np.int64), True
        hashes = self._hashes[0] if len(self._hashes) == 1 else np.concatenate(self._hashes)
        self._hashes = [hashes]  # one copy alive, not blocks and their concatenation
        if self._positions is None:
            count, dup = duplicate_positions(hashes, limit=5)
        else:
            count, dup = duplicate_positions(hashes)
            dup = np.sort(np.concatenate(self._positions)[dup])[:5]
        return count << self.level, dup, self.level == 0
