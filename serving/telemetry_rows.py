"""Per-row telemetry: every served row, with its prediction, its identity and the inputs drift needs.

Split in two so the request path stays short: ``row_values`` copies what cannot
outlive ``execute()`` (inputs may sit in Triton's shared memory) as plain numpy
arrays; ``row_columns`` builds the event's ``row_*`` fields on the telemetry
thread. The rows travel as columns (one array per field) because that thread
shares the GIL with ``execute()``, and one fastavro call holds it for the
whole event: a batch of 64 rows encodes in ~50 µs as columns and ~200 µs as
64 records.

A row's prediction id is ``<request_id>:<index>`` (``prediction_id``); a client
may also name its rows with its own keys, sent as the request parameter
``modelbus_row_keys`` holding a JSON list of strings (Triton request parameters
are scalars, so the list travels as one string), and later report outcomes by
those keys.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence, TypedDict

import numpy as np

ROW_KEYS_PARAMETER = "modelbus_row_keys"
MAX_TEXT = 64            # categorical values longer than this are stored as their hash
MAX_KEY = 256            # a client row key longer than this is refused with the request


def prediction_id(request_id: str, index: int) -> str:
    return f"{request_id}:{index}"


def bounded(text: str) -> str:
    """The value itself, or ``sha256:<16 hex>`` when it is longer than MAX_TEXT characters."""
    if len(text) <= MAX_TEXT:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def row_keys(parameters_json: str, rows: int) -> list[str] | None:
    """The client's row keys from the request parameters, or None; ValueError says what is wrong with them."""
    if not parameters_json or ROW_KEYS_PARAMETER not in parameters_json:
        return None    # the hot path: no parameters, no JSON parsed
    try:
        raw = json.loads(parameters_json).get(ROW_KEYS_PARAMETER)
        keys = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, AttributeError):
        raise ValueError(f"request parameter '{ROW_KEYS_PARAMETER}' must be a JSON list of strings") from None
    if keys is None:
        return None
    if not isinstance(keys, list) or not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY for k in keys):
        raise ValueError(f"request parameter '{ROW_KEYS_PARAMETER}' must be a JSON list of non-empty strings of at "
                         f"most {MAX_KEY} characters")
    if len(keys) != rows:
        raise ValueError(f"request parameter '{ROW_KEYS_PARAMETER}' has {len(keys)} keys for {rows} rows")
    return keys


def row_values(specs: Sequence[Any], arrays: Sequence[np.ndarray], sums: Sequence[float | None], n: int
               ) -> tuple[list[tuple[str, float, np.ndarray]], list[tuple[str, list]]]:
    """Per input column: (name, request mean, each row's value) for numbers, (name, each row's value) for strings.

    A tensor input (an image) is summarised per row by the mean of its elements.
    The arrays returned are copies: safe to read after the request is answered.
    """
    numeric: list[tuple[str, float, np.ndarray]] = []
    categorical: list[tuple[str, list]] = []
    for spec, arr, total in zip(specs, arrays, sums):
        if spec.kind == "categorical":
            categorical.append((spec.column, arr.reshape(n, -1)[:, 0].tolist()))
            continue
        flat = arr.reshape(n, -1)
        if total is not None and total - total == 0:       # no NaN: the fast path
            values = flat[:, 0].astype(np.float64) if flat.shape[1] == 1 else flat.mean(axis=1, dtype=np.float64)
            numeric.append((spec.column, total / arr.size, values))
            continue
        with np.errstate(all="ignore"):                     # NaN rows the model imputes: mean of what is present
            values = np.nanmean(flat.astype(np.float64), axis=1) if flat.shape[1] > 1 else flat[:, 0].astype(
                np.float64)
            present = arr[~np.isnan(arr)]
        numeric.append((spec.column, float(present.mean()) if present.size else float("nan"), values))
    return numeric, categorical


def as_text(value: Any) -> str:
    """A categorical input value as stored: text (bytes decoded as UTF-8), bounded in length."""
    return bounded(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))


class RowColumns(TypedDict):
    """InferenceTelemetry's ``row_*`` fields: one item per served row (see the schema's docs)."""

    row_keys: list[str]
    row_predictions: list[str]
    row_values: list[float]
    row_confidences: list[float]
    row_probabilities: list[float]
    row_numeric_values: list[list[float]]
    row_categorical_values: list[list[str]]


NO_ROWS = RowColumns(row_keys=[], row_predictions=[], row_values=[], row_confidences=[], row_probabilities=[],
                     row_numeric_values=[], row_categorical_values=[])


def row_columns(signature, outs: Sequence[np.ndarray], numeric: Sequence[tuple[str, float, np.ndarray]],
                categorical: Sequence[tuple[str, list]], keys: Sequence[str] | None) -> RowColumns:
    """The event's ``row_*`` fields for the served rows (built on the telemetry thread)."""
    scores = outs[0]
    n = scores.shape[0]
    # Plain lists, not numpy: for the few rows of a typical request numpy's per-call cost dominates.
    if signature.is_classification:
        flat = scores.reshape(-1).tolist()
        index = outs[1].reshape(-1).tolist()
        labels, k = signature.labels, scores.size // max(n, 1)
        preds = [labels[i] if 0 <= i < len(labels) else str(i) for i in index]
        values = [float(i) for i in index]
        conf = [flat[r * k + i] if 0 <= i < k else 0.0 for r, i in enumerate(index)]
    else:
        values = scores.reshape(n, -1)[:, 0].tolist()
        preds = [f"{v:.6g}" for v in values]
        conf = [1.0] * n
        flat = []
    return RowColumns(row_keys=list(keys) if keys else [], row_predictions=preds, row_values=values,
                      row_confidences=conf, row_probabilities=flat,
                      row_numeric_values=[v.tolist() for _, _, v in numeric],
                      row_categorical_values=[[as_text(v) for v in column] for _, column in categorical])
