"""Every accepted input becomes a stream of Arrow record batches, or a clear refusal.

Files are streamed (CSV in blocks, Parquet by batches) so a file larger than
memory pushes with bounded memory; in-memory inputs are sliced into batches of
the same shape. Bad files are refused here with a message that names the
problem (empty, corrupt, truncated, not UTF-8, binary), before any checks run.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from producers.datasets.spec import IMAGE_COLUMN
from producers.errors import DatasetInputError

CSV_BLOCK_BYTES = 16 << 20      # the sample that decides inferred types; large enough to see real values
CSV_STREAM_BYTES = 4 << 20      # blocks while streaming: pyarrow reads up to 32 blocks ahead of a slow consumer
BATCH_ROWS = 131_072
SNIFF_BYTES = 64 << 10
PARQUET_SUFFIXES = (".parquet", ".pq")
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([\w\[\], ]+?): "
                         r"invalid value '(.*)'", re.S)
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32-LE"), (b"\x00\x00\xfe\xff", "UTF-32-BE"),
         (b"\xff\xfe", "UTF-16-LE"), (b"\xfe\xff", "UTF-16-BE"))


class NeedsWiderType(Exception):
    """A later CSV block holds a value the first block's inferred type cannot take; re-read wider."""

    def __init__(self, column: str, new_type: pa.DataType):
        super().__init__(f"column {column!r} needs {new_type}")
        self.column, self.new_type = column, new_type


@dataclass(frozen=True)
class ArrayData:
    """Numpy inputs: a feature matrix (or image tensor) plus labels and optional extra columns.

    ``features`` of shape (n,) or (n, k) become columns ``feature_names`` (default f0..fk-1);
    shape (n, *image_shape) — or (n, k) with ``image_shape`` given — becomes one image column.
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: Sequence[str] | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None


class Source:
    """An input ready to stream: ``batches()`` may be called again to re-read from the start; ``close()`` on the
    generator it returns releases the input early."""

    description: str = ""
    total: int | None = None    # progress denominator, in ``unit``
    unit: str = "rows"
    image_shape: tuple[int, ...] | None = None

    def __init__(self) -> None:
        self.done = 0

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        raise NotImplementedError


def _without_pandas_index(schema: pa.Schema, where: str) -> list[str]:
    """Columns to keep: a DataFrame's serialized index is not data (DataFrames are pushed without it)."""
    try:
        meta = schema.pandas_metadata or {}
    except ValueError as exc:   # not UTF-8 or not JSON: the file's footer is damaged
        raise DatasetInputError(f"{where}: corrupt pandas metadata in the schema ({type(exc).__name__}); "
                                "the file is damaged — write it again") from exc
    if not isinstance(meta, dict):
        raise DatasetInputError(f"{where}: corrupt pandas metadata in the schema (not a JSON object)")
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index]


class ArrowSource(Source):
    def __init__(self, table: pa.Table, description: str, image_shape: tuple[int, ...] | None = None):
        super().__init__()
        keep = _without_pandas_index(table.schema, description)
        if len(keep) != table.num_columns:
            table = table.select(keep)
        self.table, self.description, self.image_shape = table, description, image_shape
        self.total = table.num_rows

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        self.done = 0
        for batch in self.table.to_batches(max_chunksize=BATCH_ROWS):
            if batch.num_rows:
                yield batch
                self.done += batch.num_rows
        if self.table.num_rows == 0:  # keep the schema visible for structural checks
            yield pa.RecordBatch.from_pylist([], schema=self.table.schema)


class ParquetSource(Source):
    def __init__(self, path: Path):
        super().__init__()
        self.path, self.description = path, str(path)
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for every kind of damage
            raise DatasetInputError(f"{path}: not a readable Parquet file (truncated or corrupt?): {exc}") from exc
        self.total = self._file.metadata.num_rows

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        self.done = 0
        schema = self._file.schema_arrow
        keep = _without_pandas_index(schema, str(self.path))
        if len(keep) != len(schema):
            schema = pa.schema([schema.field(n) for n in keep], metadata=schema.metadata)
        try:
            it = self._file.iter_batches(batch_size=BATCH_ROWS, columns=keep)
            for batch in it:
                yield batch
                self.done += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DatasetInputError(f"{self.path}: corrupt Parquet data: {exc}") from exc
        if self.total == 0:
            yield pa.RecordBatch.from_pylist([], schema=schema)


class _Counting(io.RawIOBase):
    """Counts bytes read from the raw file, for a progress bar that does not depend on the parser."""

    def __init__(self, fh):
        self._fh, self.count = fh, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        self.count += n or 0
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class CsvSource(Source):
    """UTF-8 CSV (optionally .gz/.bz2/.zst compressed), read in blocks by pyarrow's streaming reader.

    Types are inferred from a large first block, then the file streams in small blocks
    with those types fixed (pyarrow buffers up to 32 blocks ahead of a slow consumer, so
    block size bounds memory); when a later block disagrees, the read restarts with that
    column widened (int → float → string), so types never depend on block boundaries.
    Progress counts bytes read from disk, which run up to the read-ahead in front.
    """

    unit = "bytes"

    def __init__(self, path: Path, string_columns: Sequence[str] = ()):
        super().__init__()
        self.path, self.description = path, str(path)
        self.total = path.stat().st_size
        self.types: dict[str, pa.DataType] = {c: pa.string() for c in string_columns}
        self._inferred: dict[str, pa.DataType] | None = None
        self.delimiter = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz", ".tab")) else ","
        self._compression = _compression_of(path)
        _sniff_text(path, self._compression)

    def widen(self, column: str, new_type: pa.DataType) -> None:
        if self.types.get(column) == new_type:
            raise DatasetInputError(f"{self.path}: column {column!r} cannot be read as {new_type}")
        self.types[column] = new_type

    def _open(self, block_size: int, types: dict[str, pa.DataType]) -> tuple[pcsv.CSVStreamingReader, _Counting]:
        raw = _Counting(open(self.path, "rb"))
        stream: pa.NativeFile = pa.PythonFile(raw, mode="r")
        if self._compression:
            stream = pa.CompressedInputStream(stream, self._compression)
        try:
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(block_size=block_size, use_threads=True),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True),
            )
        except UnicodeDecodeError as exc:
            raw.close()
            raise DatasetInputError(f"{self.path}: header is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                                    "the file is probably latin-1/cp1252 — re-encode it as UTF-8, e.g. "
                                    "`iconv -f latin1 -t utf-8`") from exc
        except pa.ArrowException as exc:
            raw.close()
            raise self._error(exc) from exc
        return reader, raw

    def _error(self, exc: Exception) -> Exception:
        text = str(exc)
        if "Empty CSV file" in text:
            return DatasetInputError(f"{self.path}: file is empty")
        if "UTF8" in text or "UTF-8" in text:
            return DatasetInputError(f"{self.path}: not valid UTF-8 ({text.splitlines()[0]}); the file is probably "
                                     "latin-1/cp1252 — re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`")
        return DatasetInputError(f"{self.path}: not a readable CSV file (corrupt or truncated?): "
                                 f"{text.splitlines()[0][:300]}")

    def _infer(self) -> dict[str, pa.DataType]:
        """Types from one large first block, so small streaming blocks do not narrow the inference."""
        if self._inferred is None:
            reader, raw = self._open(CSV_BLOCK_BYTES, self.types)
            self._inferred = {f.name: f.type for f in reader.schema}
            del reader  # only the schema was needed; stop its read-ahead before closing the file
            raw.close()
        return self._inferred

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        self.done = 0
        types = {**self._infer(), **self.types}
        reader, raw = self._open(min(CSV_STREAM_BYTES, CSV_BLOCK_BYTES), types)
        try:
            binary = [f.name for f in reader.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
            if binary:
                raise DatasetInputError(
                    f"{self.path}: column(s) {', '.join(map(repr, binary))} hold bytes that are not valid UTF-8; "
                    "the file is probably latin-1/cp1252 — re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`")
            names = reader.schema.names
            yielded = False
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowException as exc:
                    m = _CONVERSION.search(str(exc))
                    if m and "UTF8" not in str(exc):
                        col = names[int(m.group(1))]
                        self.widen(col, _wider(m.group(2).strip(), m.group(3)))
                        raise NeedsWiderType(col, self.types[col]) from exc
                    raise self._error(exc) from exc
                self.done = raw.count
                yielded = True
                yield batch
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            self.done = self.total or raw.count
        finally:
            raw.close()


def _wider(old: str, value: str) -> pa.DataType:
    """The narrowest type holding both the first block's type and the offending value."""
    v = value.strip()
    try:
        int(v)
        if old in ("null", "bool"):
            return pa.int64()
    except ValueError:
        pass
    try:
        float(v)
        if old in ("null", "bool", "int64"):
            return pa.float64()
    except ValueError:
        pass
    return pa.string()


def _compression_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}.get(suffix)


def _sniff_text(path: Path, compression: str | None) -> None:
    """Refuse empty, binary and non-UTF-8 files from their first bytes, naming the problem."""
    try:
        with pa.input_stream(str(path), compression=compression) as fh:
            head = fh.read(SNIFF_BYTES)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetInputError(f"{path}: cannot read ({compression or 'plain'} stream corrupt?): {exc}") from exc
    if not head:
        raise DatasetInputError(f"{path}: file is empty")
    for bom, enc in _BOMS:
        if head.startswith(bom):
            raise DatasetInputError(f"{path}: file is {enc} encoded (byte-order mark {bom.hex()}); "
                                    f"CSV files must be UTF-8 — re-encode it, e.g. `iconv -f {enc[:6]} -t utf-8`")
    if b"\x00" in head:
        raise DatasetInputError(f"{path}: contains NUL bytes — binary data or UTF-16/UTF-32 text, not a UTF-8 CSV")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4 or len(head) < SNIFF_BYTES:  # not just a character cut at the sniff boundary
            line = head[:exc.start].count(b"\n") + 1
            raise DatasetInputError(
                f"{path}: not valid UTF-8 (byte 0x{head[exc.start]:02x} at offset {exc.start}, line {line}); "
                "the file is probably latin-1/cp1252 — re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
            ) from exc


def table_from_pandas(df: pd.DataFrame) -> pa.Table:
    """The DataFrame's columns as Arrow (index dropped); mixed-type object columns become strings.

    Mixed columns (numbers and words) are kept as text so that validation can report
    the words as non-numeric values instead of the conversion failing on the first one.
    """
    if df.columns.has_duplicates:
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        from producers.errors import InvalidNameError

        raise InvalidNameError(f"duplicate column name(s): {', '.join(map(repr, dup))}")
    df = df.rename(columns=str) if not all(isinstance(c, str) for c in df.columns) else df
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fixed = {}
    for name in df.columns:
        col = df[name]
        try:
            fixed[name] = pa.array(col, from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            fixed[name] = pa.array([None if _isna(v) else str(v) for v in col], type=pa.string())
    return pa.table(fixed)


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT


def table_from_arrays(data: ArrayData, label: str) -> tuple[pa.Table, tuple[int, ...] | None]:
    """Numpy features/labels as a table; image tensors become one fixed-size-list column."""
    x, y = np.asarray(data.features), np.asarray(data.labels)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DatasetInputError("features array is empty")
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DatasetInputError(f"labels must be one value per row, got shape {y.shape}")
    y = y.reshape(-1)
    if len(y) != x.shape[0]:
        raise DatasetInputError(f"features have {x.shape[0]} rows but labels have {len(y)}")
    cols: dict[str, pa.Array] = {}
    shape = tuple(data.image_shape) if data.image_shape else None
    if x.ndim >= 3 or shape:
        shape = shape or tuple(int(d) for d in x.shape[1:])
        width = int(np.prod(shape))
        if int(np.prod(x.shape[1:])) != width:
            raise DatasetInputError(f"features of shape {x.shape[1:]} do not hold images of shape {shape}")
        flat = x.reshape(len(x), width)
        flat = flat if flat.dtype == np.uint8 else (flat.astype(np.uint8) if flat.dtype == bool
                                                      else flat.astype(np.float32))
        cols[IMAGE_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), width)
    else:
        x2 = x.reshape(len(x), -1)
        names = list(data.feature_names or [f"f{i}" for i in range(x2.shape[1])])
        if len(names) != x2.shape[1]:
            raise DatasetInputError(f"{len(names)} feature names for {x2.shape[1]} feature columns")
        for i, n in enumerate(names):
            cols[n] = pa.array(x2[:, i], from_pandas=True)
    if label in cols:
        raise DatasetInputError(f"label column {label!r} collides with a feature name")
    cols[label] = pa.array(y, from_pandas=True)
    for n, v in data.columns.items():
        arr = np.asarray(v)
        if len(arr) != len(y):
            raise DatasetInputError(f"column {n!r} has {len(arr)} rows, features have {len(y)}")
        cols[n] = pa.array(arr, from_pandas=True)
    return pa.table(cols), shape


def open_source(data: Any, *, label: str, string_columns: Sequence[str] = (),
                description: str | None = None) -> Source:
    """Pick the reader for ``data``: a CSV/Parquet path, DataFrame, Arrow table, ArrayData or (X, y)."""
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if not path.exists():
            raise DatasetInputError(f"{path}: no such file")
        if not path.is_file():
            raise DatasetInputError(f"{path}: not a regular file")
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if path.suffix.lower() in PARQUET_SUFFIXES or magic == b"PAR1":
            if path.stat().st_size == 0:
                raise DatasetInputError(f"{path}: file is empty")
            return ParquetSource(path)
        return CsvSource(path, string_columns)
    if isinstance(data, pd.DataFrame):
        return ArrowSource(table_from_pandas(data), description or "dataframe")
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return ArrowSource(data, description or "arrow")
    if isinstance(data, tuple) and len(data) == 2:
        data = ArrayData(*data)
    if isinstance(data, ArrayData):
        table, shape = table_from_arrays(data, label)
        return ArrowSource(table, description or "numpy", image_shape=shape)
    if isinstance(data, np.ndarray):
        raise DatasetInputError("a bare array has no labels: pass (features, labels) or ArrayData")
    raise DatasetInputError(f"cannot push a {type(data).__name__}: pass a CSV/Parquet path, a pandas DataFrame, "
                            "a pyarrow Table, or (features, labels) numpy arrays")
