"""The per-row test predictions of a run: what makes every later comparison paired.

One Parquet row per test row: ``row_id`` (the content hash of
``trainer.data.row_hashes``), ``label`` (class index or target), the model's
output as ``out:candidate`` and every baseline's as ``out:<name>``
(probabilities as lists, regression predictions as numbers), and each slice
column's value as ``slice:<column>``. The gate pairs the champion's outputs with
these rows by row id, so nobody has to re-derive the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PREDICTIONS_FILE = "test_predictions.parquet"
OUT, SLICE = "out:", "slice:"


def write_test_predictions(path: str | Path, row_ids: np.ndarray, y: np.ndarray, outputs: Mapping[str, np.ndarray],
                           slices: Mapping[str, np.ndarray]) -> Path:
    cols: dict[str, pa.Array] = {"row_id": pa.array([str(r) for r in row_ids], pa.string()),
                                 "label": pa.array(np.asarray(y))}
    for name, out in outputs.items():
        arr = np.asarray(out, dtype=np.float64)
        cols[OUT + name] = pa.array(arr.tolist(), pa.list_(pa.float64())) if arr.ndim == 2 else pa.array(arr)
    for col, values in slices.items():
        cols[SLICE + col] = pa.array([str(v) for v in values], pa.string())
    path = Path(path)
    pq.write_table(pa.table(cols), path)
    return path


def read_test_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray],
                                                     dict[str, np.ndarray]]:
    """(row ids, labels, outputs by model name, slice values by column)."""
    t = pq.read_table(path)
    outputs, slices = {}, {}
    for name in t.column_names:
        if name.startswith(OUT):
            col = t.column(name)
            outputs[name[len(OUT):]] = (np.array(col.to_pylist(), dtype=np.float64) if pa.types.is_list(col.type)
                                        else col.to_numpy().astype(np.float64))
        elif name.startswith(SLICE):
            slices[name[len(SLICE):]] = np.array(t.column(name).to_pylist(), dtype=object)
    return (np.array(t.column("row_id").to_pylist(), dtype=object), t.column("label").to_numpy(), outputs, slices)
