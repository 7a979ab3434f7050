"""The store interface and the key rules shared by both backends."""

from __future__ import annotations

import abc
import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Iterator

from infra.storage.errors import StorageError, StorageUnavailable, is_transient

__all__ = ["ArtifactStore", "StorageError", "StorageUnavailable", "is_transient", "validate_key",
           "validate_prefix", "sha256_file"]

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=@+-]{0,199}\Z")


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store root or confuse S3 listings.

    Keys are relative, '/'-separated, and each segment starts with a letter,
    digit or '_' (markers such as ``_COMMITTED``), so '..', hidden files,
    absolute paths, empty segments and control characters are impossible by
    construction rather than by a deny-list.
    """
    if not isinstance(key, str) or not key:
        raise StorageError("artifact key must be a non-empty string")
    segments = key.split("/")
    for seg in segments:
        if not _SEGMENT.match(seg):
            raise StorageError(f"invalid artifact key {key!r}: segment {seg!r} is not allowed")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing or deletion prefix: '' (the whole store) or a valid key with an optional trailing '/'.

    Prefixes become directory paths on a local store, so they obey the key rules too: a
    prefix like '../x' would otherwise list, or delete, a directory outside the root.
    """
    if prefix == "":
        return prefix
    if not isinstance(prefix, str):
        raise StorageError("artifact key prefix must be a string")
    validate_key(prefix.rstrip("/"))
    return prefix


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ArtifactStore(abc.ABC):
    """Blob store keyed by validated relative keys."""

    root: str

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` atomically under ``key``; return its URI."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str | Path) -> str:
        """Upload a local file (multipart on S3 for large files); return its URI."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if no object exists there; True when this call created it.

        The one primitive that lets several consumers coordinate through the store
        (run attempts, model version numbers): exactly one concurrent caller wins.
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def get_file(self, key: str, dest: str | Path) -> Path: ...

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream (for streaming large objects)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys below ``prefix`` (a key prefix ending in '/' or empty)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one key; a key that is already gone is not an error (deletes are retried)."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key below ``prefix``; return how many were removed."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Absolute URI of ``key`` (a path for local stores, s3://… for S3)."""

    def local_path(self, key: str) -> Path | None:
        """A local filesystem path for ``key`` when the store is local, else None."""
        return None

    def key_from_uri(self, uri: str) -> str:
        """Inverse of :meth:`uri`: the key of an URI inside this store."""
        base = self.uri("x")[:-1]
        if not uri.startswith(base):
            raise StorageError(f"{uri!r} is not inside the artifact store {self.root!r}")
        return validate_key(uri[len(base):])
