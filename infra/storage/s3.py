"""S3 artifact store through boto3 (AWS, MinIO, or moto in tests).

Credentials come from boto3's standard chain (env, profile, instance role), so
no secret passes through ModelBus settings unless the operator puts one there.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

from infra.storage.base import ArtifactStore, StorageError, validate_key
from infra.storage.errors import StorageUnavailable, s3_code_is_transient, s3_is_transient


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise StorageError(f"s3 URI without a bucket: {uri!r}")
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix)
    return bucket, prefix


class S3Store(ArtifactStore):
    def __init__(self, root: str, endpoint_url: str | None = None, region: str | None = None,
                 multipart_threshold_mb: int = 64, max_attempts: int = 5):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.root = root.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(self.root)
        self._client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
        )
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold_mb << 20,
                                        multipart_chunksize=max(8, multipart_threshold_mb // 4) << 20)

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _wrap(self, key: str, exc: Exception) -> StorageError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):   # the same words as the local store: callers match one
            return StorageError(f"artifact {key!r} not found in s3://{self.bucket}/{self.prefix}")
        return self._failure(f"s3 {self.bucket}/{self._key(key)}", exc)

    @staticmethod
    def _failure(where: str, exc: BaseException) -> StorageError:
        """One error class for callers, transient exactly when botocore's standard retry mode would retry."""
        cls = StorageUnavailable if s3_is_transient(exc) else StorageError
        return cls(f"{where}: {exc}")

    def put_bytes(self, key: str, data: bytes) -> str:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:  # botocore raises many types; one error class for callers
            raise self._wrap(key, exc) from exc
        return self.uri(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:   # conditional PUT: S3 refuses it when the key exists
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self._wrap(key, exc) from exc
        except BotoCoreError as exc:
            raise self._wrap(key, exc) from exc

    def put_file(self, key: str, path: str | Path) -> str:
        try:
            self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)
        except Exception as exc:
            raise self._wrap(key, exc) from exc
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._wrap(key, exc) from exc

    def get_file(self, key: str, dest: str | Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, self._key(key), str(dest), Config=self._transfer)
        except Exception as exc:
            raise self._wrap(key, exc) from exc
        return dest

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise self._wrap(key, exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._wrap(key, exc) from exc
        except BotoCoreError as exc:   # endpoint unreachable, credentials missing
            raise self._wrap(key, exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except Exception as exc:  # an unreachable endpoint too: one error class (and one line) for callers
            raise self._failure(f"s3 {self.bucket}/{full}", exc) from exc

    def delete(self, key: str) -> None:
        try:   # S3 answers a delete of a missing key with success, as the contract asks
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # botocore raises many types; one error class for callers
            raise self._wrap(key, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key below ``prefix``, 1,000 a request (S3's limit).

        DeleteObjects answers 200 even when some keys were refused (locked, access denied): those come back in
        the response's ``Errors``, so they are checked rather than counted as deleted.
        """
        keys = [self._key(k) for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
            except Exception as exc:  # botocore raises many types; one error class for callers
                raise self._failure(f"s3 {self.bucket}/{prefix}", exc) from exc
            raise_for_refused_keys(self.bucket, response)
        return len(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def raise_for_refused_keys(bucket: str, response: dict) -> None:
    """Raise when a DeleteObjects answer lists keys S3 did not delete (the call itself succeeded)."""
    errors = response.get("Errors") or []
    if not errors:
        return
    shown = ", ".join(f"{e.get('Key')} ({e.get('Code')}: {e.get('Message', '')})" for e in errors[:5])
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    transient = all(s3_code_is_transient(e.get("Code")) for e in errors)
    cls = StorageUnavailable if transient else StorageError
    raise cls(f"s3 {bucket}: {len(errors)} key(s) were not deleted: {shown}{more}")

