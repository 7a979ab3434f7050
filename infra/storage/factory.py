"""Pick the store implementation from a root URI."""

from __future__ import annotations

from infra.storage.base import ArtifactStore


def open_store(root: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None,
               multipart_threshold_mb: int = 64) -> ArtifactStore:
    if root.startswith("s3://"):
        from infra.storage.s3 import S3Store

        return S3Store(root, endpoint_url=s3_endpoint_url, region=s3_region,
                       multipart_threshold_mb=multipart_threshold_mb)
    from infra.storage.local import LocalStore

    return LocalStore(root)


def store_from_settings(settings) -> ArtifactStore:
    a = settings.artifacts
    return open_store(settings.artifact_root, s3_endpoint_url=a.s3_endpoint_url, s3_region=a.s3_region,
                      multipart_threshold_mb=a.multipart_threshold_mb)
