"""The canonical form: one Arrow schema and one Parquet encoding per logical content.

The version of a dataset is the sha256 of its canonical Parquet file, so the
same rows must give the same bytes whether they arrive as a CSV, a Parquet
file, a DataFrame or a pyarrow Table. The canonical form is the Arrow table
after type normalization:

* columns sorted by name (column order carries no meaning);
* integers → int64, floats → float64 with NaN stored as null, booleans → bool,
  text and dictionaries → string, dates and timestamps → timestamp[us, UTC]
  (naive values are taken as UTC; sub-microsecond precision is dropped),
  all-null columns → float64, columns declared categorical → string,
  image arrays → fixed_size_list<uint8 | float32>[prod(image_shape)];
* rows keep their order (it may carry meaning, e.g. time);
* no schema metadata (pandas' index description, field metadata are dropped).

The Parquet encoding is pinned (zstd level 1, format 2.6, 1 MiB pages, dictionary
on, statistics on, no page index/checksums) and written in row groups of a fixed
number of rows derived from the schema alone, each from contiguous arrays, so
block boundaries of the input never show in the bytes. The file carries no
timestamp; it does carry pyarrow's ``created_by`` string, so versions are stable
for the pinned pyarrow (an upgrade re-versions identical data once).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from producers.errors import DatasetInputError

FORMAT_VERSION = 1
ROW_GROUP_BYTES = 64 << 20
PARQUET_OPTIONS = dict(
    compression="zstd", compression_level=1, use_dictionary=True, write_statistics=True, version="2.6",
    data_page_size=1 << 20, data_page_version="1.0", write_page_index=False, write_page_checksum=False,
    store_schema=True,
)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def canonical_type(t: pa.DataType, categorical: bool = False) -> pa.DataType | None:
    """The canonical type for an input type, or None when ModelBus cannot store it."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if categorical and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                        or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        return pa.string()
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return pa.float64()
    if pa.types.is_boolean(t):
        return pa.bool_()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return TIMESTAMP
    if pa.types.is_fixed_size_list(t):
        item = t.value_type
        if pa.types.is_uint8(item) or pa.types.is_boolean(item):
            return pa.list_(pa.uint8(), t.list_size)
        if pa.types.is_integer(item) or pa.types.is_floating(item):
            return pa.list_(pa.float32(), t.list_size)
    return None


def canonical_schema(schema: pa.Schema, categorical: set[str]) -> tuple[pa.Schema, dict[str, str]]:
    """Sorted, normalized schema plus {column: input type} of the columns that cannot be stored."""
    fields, unsupported = [], {}
    for f in schema:
        t = canonical_type(f.type, f.name in categorical)
        if t is None:
            unsupported[f.name] = str(f.type)
        else:
            fields.append(pa.field(f.name, t, nullable=True))
    return pa.schema(sorted(fields, key=lambda f: f.name)), unsupported


def is_image(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t)


def normalize(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """Cast one input batch to the canonical schema (raises DatasetInputError on lossy casts)."""
    arrays = []
    for f in target:
        arr = batch.column(f.name)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        try:
            if pa.types.is_timestamp(f.type):
                arr = pc.cast(arr, f.type, safe=False)  # ns → us truncation is documented
            elif arr.type != f.type:
                arr = pc.cast(arr, f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DatasetInputError(f"column {f.name!r}: cannot convert {arr.type} to {f.type}: {exc}") from exc
        if pa.types.is_floating(f.type) and arr.null_count < len(arr) and pc.any(pc.is_nan(arr)).as_py():
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, f.type), arr)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def row_group_rows(schema: pa.Schema) -> int:
    """Rows per row group, from the schema alone (never from the data or how it was chunked)."""
    width = 0
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t):
            width += t.list_size * max(1, t.value_type.bit_width // 8)
        elif pa.types.is_string(t):
            width += 24
        elif pa.types.is_boolean(t):
            width += 1
        else:
            width += 8
    rows = ROW_GROUP_BYTES // max(width, 1)
    return max(1024, min(1 << 20, rows // 1024 * 1024))


class CanonicalWriter:
    """Writes canonical batches as fixed-size row groups of contiguous arrays.

    Encoding and compression run on a background thread (pyarrow releases the GIL
    there), so writing overlaps with validation and statistics of the next block;
    the queue is short, so memory stays bounded.
    """

    QUEUE = 3

    def __init__(self, path: str | Path, schema: pa.Schema, background: bool = True):
        self.path = Path(path)
        self.schema = schema
        self.rows_per_group = row_group_rows(schema)
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(str(self.path), schema, **PARQUET_OPTIONS)
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        if background:
            self._queue = queue.Queue(maxsize=self.QUEUE)
            self._thread = threading.Thread(target=self._drain, name="canonical-writer", daemon=True)
            self._thread.start()

    def write(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        if not batch.num_rows:
            return
        if self._queue is not None:
            self._queue.put(batch)
        else:
            self._append(batch)

    def _drain(self) -> None:
        assert self._queue is not None
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._append(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer thread, which re-raises it
                    self._error = exc

    def _append(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self.rows_per_group:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._write_group(table.slice(0, self.rows_per_group))
            rest = table.slice(self.rows_per_group)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        self._writer.write_table(table.combine_chunks(), row_group_size=self.rows_per_group)
        self.rows += table.num_rows

    def _join(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def close(self) -> None:
        self._join()
        if self._error is not None:
            raise self._error
        if self._pending_rows:
            self._write_group(pa.Table.from_batches(self._pending, schema=self.schema))
        self._pending, self._pending_rows = [], 0
        self._writer.close()

    def abort(self) -> None:
        try:
            self._join()
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)


def describe() -> dict[str, object]:
    """The encoding parameters, recorded in each version's metadata."""
    return {"format_version": FORMAT_VERSION, "pyarrow": pa.__version__, "column_order": "sorted",
            "row_group_bytes": ROW_GROUP_BYTES, **{k: v for k, v in PARQUET_OPTIONS.items()}}
