"""Artifact store: immutable blobs under keys, on a local directory or S3.

Every writer in ModelBus (datasets, checkpoints, models, reports) goes through
this interface so that moving from the embedded stack to S3/MinIO is a setting.
"""

from infra.storage.base import ArtifactStore, validate_key
from infra.storage.errors import StorageError, StorageUnavailable, is_transient
from infra.storage.factory import open_store

__all__ = ["ArtifactStore", "StorageError", "StorageUnavailable", "is_transient", "open_store", "validate_key"]
