"""Local-directory artifact store (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from infra.storage.base import ArtifactStore, StorageError, validate_key, validate_prefix
from infra.storage.errors import os_error


class LocalStore(ArtifactStore):
    def __init__(self, root: str | Path):
        self.root = str(Path(root).expanduser().resolve())
        Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = Path(self.root, validate_key(key))
        # Belt and braces: validate_key already forbids '..', but symlinks inside the root could still point out.
        if not p.resolve().is_relative_to(Path(self.root).resolve()) and p.exists():
            raise StorageError(f"artifact key {key!r} resolves outside the store")
        return p

    @staticmethod
    def _write_temp(dest: Path, writer) -> str:
        """A fully written, fsynced temp file beside ``dest`` (same filesystem, so it can be published atomically)."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:   # writing 'a/b' where 'a' is an artifact
            raise StorageError(f"cannot write {dest}: a parent of it is an artifact, not a prefix") from exc
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise os_error(f"cannot write {dest}", exc) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def _atomic_write(self, key: str, writer) -> str:
        dest = self._path(key)
        tmp = self._write_temp(dest, writer)
        try:
            os.replace(tmp, dest)
        except IsADirectoryError as exc:   # writing 'a' where 'a/b' exists
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"cannot write artifact {key!r}: it is a prefix of other artifacts") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(dest)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        tmp = self._write_temp(dest, lambda fh: fh.write(data))
        try:
            os.link(tmp, dest)   # fails when the name exists: exactly one winner
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._atomic_write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, path: str | Path) -> str:
        def copy(fh):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

        return self._atomic_write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:   # a prefix is no artifact
            raise StorageError(f"artifact {key!r} not found in {self.root}") from exc
        except OSError as exc:   # a stale NFS handle may heal; a failing disk does not: os_error tells which
            raise os_error(f"cannot read artifact {key!r} in {self.root}", exc) from exc

    def get_file(self, key: str, dest: str | Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"artifact {key!r} not found in {self.root}")
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise os_error(f"cannot copy artifact {key!r} to {dest}", exc) from exc
        return dest

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise StorageError(f"artifact {key!r} not found in {self.root}") from exc
        except OSError as exc:
            raise os_error(f"cannot open artifact {key!r} in {self.root}", exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        base = Path(self.root)
        start = base / prefix.rstrip("/") if prefix else base
        if not start.exists():
            return
        for dirpath, _dirs, files in os.walk(start):
            for name in sorted(files):
                if name.startswith(".tmp-"):
                    continue
                yield str(Path(dirpath, name).relative_to(base))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):   # a prefix, or below an artifact: no such key, as on S3
            pass

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        n = 0
        for key in list(self.list(prefix)):
            self._path(key).unlink(missing_ok=True)
            n += 1
        if prefix:
            shutil.rmtree(Path(self.root, prefix.rstrip("/")), ignore_errors=True)
        return n

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def local_path(self, key: str) -> Path:
        return self._path(key)
