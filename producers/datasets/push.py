"""Push: read → normalize → validate + profile + write canonical Parquet → commit → publish.

Order is the contract: nothing reaches the artifact store until every check
passed, and the DatasetCreated event is published only after data, metadata
and commit marker are durable. Same data again → same version → no second
event (a version committed by a push that died before publishing is published
by the next push of the same data, so an event is never lost).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import ArtifactStore
from infra.storage.base import sha256_file
from producers.datasets.canonical import CanonicalWriter, canonical_schema, is_image, normalize
from producers.datasets.metadata import EVENT_TYPE, build_metadata, dataset_created_event
from producers.datasets.report import ValidationReport
from producers.datasets.sources import NeedsWiderType, Source, open_source
from producers.datasets.spec import DatasetSpec, build_spec
from producers.datasets.stats import StatsCollector
from producers.datasets.store import DATA_FILE, DatasetStore
from producers.datasets.validate import Validator, check_structure
from producers.errors import DatasetConflictError, DatasetInputError, DatasetValidationError, IntegrityError
from schemas.events import new_header

log = logging.getLogger("modelbus.producers.push")
Progress = Callable[[int, "int | None"], None]
MAX_REREADS = 16


class Publisher(Protocol):
    """What push needs from ``infra.kafka.EventProducer``."""

    def publish(self, topic: str, event_type: str, value: Mapping[str, Any],
                key: str | bytes | None = None) -> None: ...


@dataclass(frozen=True)
class PushResult:
    """Outcome of one push; ``created`` is False when the same data was already stored under the name."""

    name: str
    version: str
    uri: str
    metadata_uri: str
    checksum: str
    row_count: int
    size_bytes: int
    task: str
    created: bool
    published: bool
    event_id: str | None
    parent_version: str | None
    warnings: tuple[str, ...] = ()
    report: ValidationReport = field(default_factory=ValidationReport)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class _Staged:
    report: ValidationReport
    path: Path | None = None
    schema: pa.Schema | None = None
    input_columns: list[str] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    label_info: dict[str, Any] = field(default_factory=dict)
    rows: int = 0


def stage(src: Source, spec: DatasetSpec, path: Path, progress: Progress | None = None) -> _Staged:
    """One pass over the input: every check, the statistics, and the canonical file at ``path``."""
    batches = src.batches()
    try:
        first = next(batches)
    except StopIteration:  # sources always yield at least an empty batch; be safe anyway
        raise DatasetInputError(f"{src.description}: no data") from None
    schema, unsupported = canonical_schema(first.schema, set(spec.categorical))
    issues = check_structure(spec, first.schema, schema, unsupported)
    if issues.has_failures():
        batches.close()
        return _Staged(ValidationReport(columns=tuple(first.schema.names), issues=issues.issues()))
    validator = Validator(spec, schema, issues)
    stats = StatsCollector(schema)
    writer = CanonicalWriter(path, schema)
    try:
        for batch in chain([first], batches):
            b = normalize(batch, schema)
            writer.write(b)  # encodes on its own thread while this one checks and profiles
            hashes = validator.row_hasher.column_hashes(b)
            validator.check_block(b, hashes)
            stats.update(b, hashes, validator.row_hasher.encoded)
            if progress:
                progress(src.done, src.total)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    pa.default_memory_pool().release_unused()  # hand streaming buffers back before the dataset-wide checks
    by_name = stats.by_name()
    report, label_info = validator.finish(by_name, lookup=lambda col, rows: _lookup(path, writer.rows_per_group,
                                                                                     col, rows))
    return _Staged(report, path, schema, list(first.schema.names), [by_name[f.name] for f in schema],
                   label_info, validator.rows)


def _lookup(path: Path, group_rows: int, column: str, rows: list[int]) -> list[Any]:
    """Values at global row numbers, read back from the staged file one row group at a time."""
    f = pq.ParquetFile(path)
    out = []
    for r in rows:
        g, i = divmod(r, group_rows)
        out.append(f.read_row_group(g, columns=[column]).column(0)[i].as_py())
    return out


def push_dataset(data: Any, spec: DatasetSpec | Mapping[str, Any], *, store: ArtifactStore,
                 publisher: Publisher | None, topic: str, source: str | None = None,
                 progress: Progress | None = None, workdir: str | Path | None = None,
                 producer: str = "producers.sdk", correlation_id: str | None = None) -> PushResult:
    """Validate ``data`` against ``spec``, store it as an immutable version, publish DatasetCreated once.

    Raises DatasetInputError (unreadable input), InvalidNameError/InvalidSpecError,
    DatasetValidationError (``.report`` lists every failed check), DatasetConflictError,
    StorageError or DeliveryError; on any of them nothing new is visible in the store.
    """
    spec = build_spec(spec)
    src = open_source(data, label=spec.label, string_columns=spec.categorical, description=source)
    described = str(Path(src.description).resolve()) if isinstance(data, (str, Path)) else src.description
    with tempfile.TemporaryDirectory(prefix="modelbus-push-", dir=workdir) as tmp:
        path = Path(tmp) / DATA_FILE
        for _ in range(MAX_REREADS):
            try:
                staged = stage(src, spec, path, progress)
                break
            except NeedsWiderType as wider:
                log.info("re-reading %s: %s", src.description, wider)
        else:
            raise DatasetInputError(f"{src.description}: column types keep changing between blocks")
        if not staged.report.ok:
            raise DatasetValidationError(spec.name, staged.report)
        return _commit_and_publish(spec, src, staged, described, DatasetStore(store), publisher, topic,
                                   producer, correlation_id)


def _commit_and_publish(spec: DatasetSpec, src: Source, staged: _Staged, source: str, ds: DatasetStore,
                        publisher: Publisher | None, topic: str, producer: str,
                        correlation_id: str | None) -> PushResult:
    assert staged.path is not None and staged.schema is not None
    checksum = sha256_file(staged.path)
    version = checksum[:16]
    name = spec.name
    if ds.is_committed(name, version):
        meta = ds.read_metadata(name, version)
        if meta["checksum"] != checksum:
            raise IntegrityError(f"{name}@{version}: stored checksum {meta['checksum']} differs from the pushed "
                                 f"data's {checksum} (a 64-bit prefix collision); push under another name")
        if meta["spec"] != spec.model_dump(mode="json") and \
                DatasetSpec(**meta["spec"]).semantics() != spec.semantics():
            raise DatasetConflictError(
                f"{name}@{version} already holds this data with a different spec; versions are immutable — "
                "push it under another name, or change the data")
        created = False
    else:
        latest = ds.latest(name)
        image_col = next((f for f in staged.schema if is_image(f.type)), None)
        image_shape = spec.image_shape or src.image_shape or ((image_col.type.list_size,) if image_col else None)
        columns = [c for c in staged.input_columns]
        meta = build_metadata(
            spec=spec, version=version, checksum=checksum, size_bytes=staged.path.stat().st_size,
            row_count=staged.rows, schema={f.name: str(f.type) for f in staged.schema}, columns=columns,
            feature_columns=spec.feature_columns(columns), image_shape=image_shape, statistics=staged.stats,
            report=staged.report, label_info=staged.label_info, source=source,
            parent_version=latest["version"] if latest else None, uri=ds.data_uri(name, version),
            metadata_uri=ds.metadata_uri(name, version), data_key=ds.data_key(name, version))
        ds.write_version(name, version, staged.path, meta)
        created = True
        log.info("committed dataset %s@%s (%d rows)", name, version, staged.rows)
    event_id, published = None, False
    if publisher is not None and not ds.is_published(name, version):
        header = new_header(producer, correlation_id=correlation_id)
        publisher.publish(topic, EVENT_TYPE, dataset_created_event(meta, header), key=name)
        event_id, published = str(header["event_id"]), True
        ds.mark_published(name, version, event_id, topic)
    report = ValidationReport.model_validate(meta["validation"]) if not created else staged.report
    return PushResult(name=name, version=version, uri=meta["uri"], metadata_uri=meta["metadata_uri"],
                      checksum=checksum, row_count=int(meta["row_count"]), size_bytes=int(meta["size_bytes"]),
                      task=meta["task"], created=created, published=published, event_id=event_id,
                      parent_version=meta.get("parent_version"), warnings=tuple(meta.get("warnings", [])),
                      report=report)
