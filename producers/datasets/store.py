"""Where dataset versions live in the artifact store, and the commit protocol that makes them atomic.

Layout per version (``<v>`` = first 16 hex of the data's sha256)::

    datasets/<name>/<v>/data/part-00000.parquet   canonical data (content-addressed)
    datasets/<name>/<v>/metadata.json             schema, stats, validation report, spec, lineage
    datasets/<name>/<v>/_COMMITTED                written LAST: the version exists from here on
    datasets/<name>/<v>/_PUBLISHED                the DatasetCreated event was acknowledged

Each object is itself written atomically (temp file + rename locally, single
PUT or completed multipart upload on S3), so an object is either absent or
whole. Until ``_COMMITTED`` exists the version's keys are staging keys: readers
and listings ignore them, so a push that dies half-way leaves nothing visible,
and the next push of the same data rewrites the same keys and commits.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.storage import ArtifactStore, StorageError, StorageUnavailable
from producers.datasets.spec import check_dataset_name
from producers.errors import DatasetNotFoundError, ProducerError

ROOT = "datasets"
DATA_FILE = "part-00000.parquet"
METADATA = "metadata.json"
COMMITTED = "_COMMITTED"
PUBLISHED = "_PUBLISHED"
VERSION_RE = re.compile(r"^[0-9a-f]{16}\Z")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class DatasetStore:
    """Dataset versions on top of any ArtifactStore (local directory or S3)."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    # -- keys -------------------------------------------------------------
    @staticmethod
    def prefix(name: str, version: str) -> str:
        check_dataset_name(name)
        if not VERSION_RE.match(version):
            raise DatasetNotFoundError(f"invalid dataset version {version!r}: expected 16 hex characters")
        return f"{ROOT}/{name}/{version}"

    def data_key(self, name: str, version: str) -> str:
        return f"{self.prefix(name, version)}/data/{DATA_FILE}"

    def metadata_key(self, name: str, version: str) -> str:
        return f"{self.prefix(name, version)}/{METADATA}"

    def data_uri(self, name: str, version: str) -> str:
        return self.store.uri(f"{self.prefix(name, version)}/data")

    def metadata_uri(self, name: str, version: str) -> str:
        return self.store.uri(self.metadata_key(name, version))

    # -- state ------------------------------------------------------------
    def is_committed(self, name: str, version: str) -> bool:
        return self.store.exists(f"{self.prefix(name, version)}/{COMMITTED}")

    def is_published(self, name: str, version: str) -> bool:
        return self.store.exists(f"{self.prefix(name, version)}/{PUBLISHED}")

    # -- writing ----------------------------------------------------------
    def write_version(self, name: str, version: str, data_path: Path, metadata: dict[str, Any]) -> None:
        """Upload data, then metadata, then the commit marker; only the marker makes the version visible."""
        self.store.put_file(self.data_key(name, version), data_path)
        self.store.put_bytes(self.metadata_key(name, version), encode_json(metadata))
        self.commit(name, version, metadata["checksum"])

    def commit(self, name: str, version: str, checksum: str) -> None:
        marker = {"name": name, "version": version, "checksum": checksum, "committed_at": utc_now()}
        self.store.put_bytes(f"{self.prefix(name, version)}/{COMMITTED}", encode_json(marker))

    def mark_published(self, name: str, version: str, event_id: str, topic: str) -> None:
        marker = {"event_id": event_id, "topic": topic, "published_at": utc_now()}
        self.store.put_bytes(f"{self.prefix(name, version)}/{PUBLISHED}", encode_json(marker))

    # -- reading ----------------------------------------------------------
    def read_metadata(self, name: str, version: str) -> dict[str, Any]:
        if not self.is_committed(name, version):
            raise DatasetNotFoundError(f"dataset {name}@{version} not found")
        try:
            return json.loads(self.store.get_bytes(self.metadata_key(name, version)))
        except StorageUnavailable:   # the store may answer in a moment: the caller retries, it is no user error
            raise
        except (StorageError, ValueError) as exc:
            raise ProducerError(f"metadata of {name}@{version} is unreadable: {exc}") from exc

    def committed(self, name: str | None = None) -> list[tuple[str, str]]:
        """(name, version) of every committed version, optionally of one dataset."""
        prefix = f"{ROOT}/{check_dataset_name(name)}/" if name else f"{ROOT}/"
        out = []
        for key in self.store.list(prefix):
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == ROOT and parts[3] == COMMITTED and VERSION_RE.match(parts[2]):
                out.append((parts[1], parts[2]))
        return sorted(set(out))

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Metadata of the committed versions of ``name``, oldest first."""
        metas = [self.read_metadata(n, v) for n, v in self.committed(name)]
        return sorted(metas, key=lambda m: (m.get("created_at", ""), m["version"]))

    def latest(self, name: str) -> dict[str, Any] | None:
        versions = self.versions(name)
        return versions[-1] if versions else None


def encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=2, allow_nan=False, default=str).encode()
