"""Artifact store: immutable blobs under keys, on a local directory or S3.

Every writer in ModelBus (datasets, checkpoints, models, reports) goes through
this interface so that moving from the embedded stack to S3/MinIO is a setting.
"""

from infra.storage.base import ArtifactStore, StorageError, validate_key
from infra.storage.factory import open_store

__all__ = ["ArtifactStore", "StorageError", "open_store", "validate_key"]
