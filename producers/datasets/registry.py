"""Finding and reading dataset versions: ``list``, ``show name@version``, ``pull name@version``.

``DatasetRegistry`` is the interface; ``ArtifactDatasetRegistry`` answers from
the artifact store's committed metadata (the source of truth). A ClickHouse-backed
listing can implement the same interface for fast queries over many versions.
Reads verify the sha256 recorded at commit, so what a trainer reads is bit for bit
what was validated.
"""

from __future__ import annotations

import abc
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.storage import ArtifactStore
from infra.storage.base import sha256_file
from producers.datasets.spec import check_dataset_name
from producers.datasets.store import DatasetStore
from producers.errors import DatasetNotFoundError, IntegrityError

_VERSION_PREFIX = re.compile(r"^[0-9a-f]{4,16}\Z")


@dataclass(frozen=True)
class DatasetRef:
    """``name@version``; version None means the newest committed one."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        name, _, given = text.strip().partition("@")
        check_dataset_name(name)
        version = given.lower()
        if version in ("", "latest"):
            return cls(name, None)
        if not _VERSION_PREFIX.match(version):
            raise DatasetNotFoundError(f"invalid version {version!r} in {text!r}: expected 4-16 hex characters "
                                       "or 'latest'")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version or 'latest'}"


@dataclass(frozen=True)
class DatasetVersion:
    """One committed version and its full metadata JSON."""

    name: str
    version: str
    created_at: str
    row_count: int
    size_bytes: int
    task: str
    label_column: str
    checksum: str
    parent_version: str | None
    metadata: dict[str, Any]

    @classmethod
    def from_metadata(cls, m: dict[str, Any]) -> DatasetVersion:
        return cls(m["name"], m["version"], m.get("created_at", ""), int(m["row_count"]), int(m["size_bytes"]),
                   m["task"], m["label_column"], m["checksum"], m.get("parent_version"), m)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class DatasetRegistry(abc.ABC):
    """Read side of the dataset catalogue."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Dataset names with at least one committed version."""

    @abc.abstractmethod
    def versions(self, name: str) -> list[DatasetVersion]:
        """Committed versions of ``name``, oldest first."""

    @abc.abstractmethod
    def pull(self, ref: str | DatasetRef, dest: str | Path) -> Path:
        """Copy the version's Parquet data to ``dest`` (file, or directory), checksum verified."""

    def get(self, ref: str | DatasetRef) -> DatasetVersion:
        """Resolve ``name``, ``name@latest``, ``name@<version or unique prefix>``."""
        r = DatasetRef.parse(ref) if isinstance(ref, str) else ref
        versions = self.versions(r.name)
        if not versions:
            raise DatasetNotFoundError(f"no dataset named {r.name!r}")
        if r.version is None:
            return versions[-1]
        hits = [v for v in versions if v.version.startswith(r.version)]
        if not hits:
            raise DatasetNotFoundError(f"dataset {r.name!r} has no version {r.version!r} "
                                       f"(known: {', '.join(v.version for v in versions[-5:])})")
        if len(hits) > 1:
            raise DatasetNotFoundError(f"version prefix {r.version!r} of {r.name!r} is ambiguous: "
                                       f"{', '.join(v.version for v in hits)}")
        return hits[0]

    def read_table(self, ref: str | DatasetRef, columns: list[str] | None = None) -> pa.Table:
        """The whole version (or some ``columns``) as an Arrow table, checksum verified."""
        local = self.local_data(ref)
        if local is not None:
            return pq.read_table(local, columns=columns)
        with tempfile.TemporaryDirectory(prefix="modelbus-pull-") as tmp:
            path = self.pull(ref, Path(tmp))
            return pq.read_table(path, columns=columns, memory_map=False)

    def local_data(self, ref: str | DatasetRef) -> Path | None:
        """The verified data file in place when the store is a local directory (no copy), else None."""
        return None

    def read_pandas(self, ref: str | DatasetRef, columns: list[str] | None = None) -> pd.DataFrame:
        return self.read_table(ref, columns).to_pandas()


class ArtifactDatasetRegistry(DatasetRegistry):
    """Registry answered from ``metadata.json`` of committed versions in the artifact store."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.ds = DatasetStore(store)

    def names(self) -> list[str]:
        return sorted({n for n, _ in self.ds.committed()})

    def versions(self, name: str) -> list[DatasetVersion]:
        return [DatasetVersion.from_metadata(m) for m in self.ds.versions(name)]

    def local_data(self, ref: str | DatasetRef) -> Path | None:
        v = self.get(ref)
        path = self.store.local_path(self.ds.data_key(v.name, v.version))
        if path is None:
            return None
        if sha256_file(path) != v.checksum:
            raise IntegrityError(f"{v.ref}: data checksum mismatch; the artifact store copy is corrupt")
        return path

    def pull(self, ref: str | DatasetRef, dest: str | Path) -> Path:
        v = self.get(ref)
        dest = Path(dest).expanduser()
        if dest.is_dir() or str(dest).endswith(("/", "\\")):
            dest = dest / f"{v.name}-{v.version}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        files = v.metadata.get("data_files") or [{"key": self.ds.data_key(v.name, v.version), "sha256": v.checksum}]
        if len(files) != 1:
            raise IntegrityError(f"{v.ref}: expected one data file, metadata lists {len(files)}")
        partial = dest.with_name(dest.name + ".partial")
        try:
            self.store.get_file(files[0]["key"], partial)
            got = sha256_file(partial)
            if got != files[0]["sha256"] or got != v.checksum:
                raise IntegrityError(f"{v.ref}: data checksum mismatch (stored {v.checksum[:16]}..., read "
                                     f"{got[:16]}...); the artifact store copy is corrupt")
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest


def registry_from_settings(settings) -> DatasetRegistry:
    from infra.storage.factory import store_from_settings

    return ArtifactDatasetRegistry(store_from_settings(settings))
