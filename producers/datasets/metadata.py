"""A version's metadata JSON and the DatasetCreated event built from it (one source of truth for both)."""

from __future__ import annotations

from typing import Any, Mapping

from producers.datasets import canonical
from producers.datasets.report import ValidationReport
from producers.datasets.spec import DatasetSpec
from producers.datasets.store import utc_now
from schemas.types import ColumnStats, DatasetCreated, EventHeader

METADATA_FORMAT = 1
EVENT_TYPE = "DatasetCreated"


def build_metadata(*, spec: DatasetSpec, version: str, checksum: str, size_bytes: int, row_count: int,
                   schema: dict[str, str], columns: list[str], feature_columns: list[str],
                   image_shape: tuple[int, ...] | None, statistics: list[dict[str, Any]],
                   report: ValidationReport, label_info: dict[str, Any], source: str,
                   parent_version: str | None, uri: str, metadata_uri: str, data_key: str) -> dict[str, Any]:
    return {
        "format_version": METADATA_FORMAT,
        "name": spec.name,
        "version": version,
        "checksum": checksum,
        "created_at": utc_now(),
        "uri": uri,
        "metadata_uri": metadata_uri,
        "format": "parquet",
        "data_files": [{"key": data_key, "sha256": checksum, "size_bytes": size_bytes}],
        "size_bytes": size_bytes,
        "row_count": row_count,
        "schema": schema,
        "columns": columns,
        "task": label_info.get("task") or spec.task,
        "label_column": spec.label,
        "label_classes": label_info.get("classes", []),
        "feature_columns": feature_columns,
        "slice_columns": list(spec.slice_by),
        "time_column": spec.time_column,
        "image_shape": list(image_shape or []),
        "statistics": statistics,
        "warnings": report.warning_lines(),
        "validation": report.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "tags": dict(spec.tags),
        "source": source,
        "parent_version": parent_version,
        "canonical": canonical.describe(),
    }


def dataset_created_event(meta: dict[str, Any], header: EventHeader) -> DatasetCreated:
    """The DatasetCreated record (every schema field filled) for a committed version's metadata."""
    return {
        "header": header,
        "name": meta["name"],
        "version": meta["version"],
        "uri": meta["uri"],
        "metadata_uri": meta["metadata_uri"],
        "format": meta.get("format", "parquet"),
        "task": meta["task"],
        "label_column": meta["label_column"],
        "feature_columns": list(meta["feature_columns"]),
        "slice_columns": list(meta["slice_columns"]),
        "time_column": meta.get("time_column"),
        "image_shape": [int(d) for d in meta.get("image_shape", [])],
        "schema": dict(meta["schema"]),
        "row_count": int(meta["row_count"]),
        "size_bytes": int(meta["size_bytes"]),
        "checksum": meta["checksum"],
        "statistics": [_column_stats(s) for s in meta["statistics"]],
        "warnings": list(meta.get("warnings", [])),
        "source": meta.get("source", ""),
        "parent_version": meta.get("parent_version"),
        "tags": {str(k): str(v) for k, v in meta.get("tags", {}).items()},
    }


def _column_stats(s: Mapping[str, Any]) -> ColumnStats:
    """Every ColumnStats field of a statistics entry of the metadata (``stats.ColumnAccumulator.result`` writes
    them all). Only the nullable ones may be absent: a None in any other would not encode."""
    return {"name": s["name"], "dtype": s["dtype"], "kind": s["kind"], "count": s["count"],
            "null_count": s["null_count"], "mean": s.get("mean"), "std": s.get("std"), "min": s.get("min"),
            "max": s.get("max"), "bin_edges": s["bin_edges"], "bin_counts": s["bin_counts"],
            "categories": s["categories"], "category_counts": s["category_counts"],
            "distinct_count": s.get("distinct_count")}
