"""Fetching a registered model artifact and proving it is the one that was registered.

The checksum in ModelRegistered is the only link between the event and the
bytes in the store; it is checked on a local copy before anything reaches the
Triton repository, so a truncated upload or a swapped file never serves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.storage import ArtifactStore, StorageError, StorageUnavailable
from infra.storage.base import sha256_file
from serving.errors import ArtifactError
from serving.signature import Signature

MODEL_FILE = "model.pt"
SIGNATURE_FILE = "signature.json"
SAMPLE_INPUT = "sample_input.json"
SAMPLE_OUTPUT = "sample_output.json"
REQUIRED = (MODEL_FILE, SIGNATURE_FILE)
OPTIONAL = (SAMPLE_INPUT, SAMPLE_OUTPUT)
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Artifact:
    """A verified local copy of one model version's artifact directory."""

    dir: Path
    uri: str
    checksum: str
    signature: Signature

    @property
    def model_path(self) -> Path:
        return self.dir / MODEL_FILE

    def files(self) -> list[str]:
        return [f for f in REQUIRED + OPTIONAL if (self.dir / f).is_file()]

    def sample(self, which: str) -> dict[str, Any] | None:
        """``sample_input.json`` / ``sample_output.json`` as dicts (name → list of values), if shipped."""
        return read_sample(self.dir / which)


def read_sample(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{path.name} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        data = data["inputs"]
    elif isinstance(data, dict) and isinstance(data.get("outputs"), dict):
        data = data["outputs"]
    if not isinstance(data, dict) or not data:
        raise ArtifactError(f"{path.name} must map names to lists of values")
    return data


def verify_checksum(path: Path, expected: str) -> str:
    """sha256 of ``path`` must equal ``expected`` (lower-case hex); returns it."""
    expected = (expected or "").strip().lower()
    if not _SHA256.match(expected):
        raise ArtifactError(f"registered checksum {expected!r} is not a sha256 hex digest")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(f"{path.name} checksum mismatch: sha256 is {actual[:16]}…, "
                            f"registered {expected[:16]}… (corrupt or replaced artifact)")
    return actual


def fetch_artifact(store: ArtifactStore, artifact_uri: str, checksum: str, dest: Path) -> Artifact:
    """Copy the artifact directory to ``dest`` and verify it; raises ArtifactError with the reason."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        key = store.key_from_uri(artifact_uri.rstrip("/"))
    except StorageError as exc:
        raise ArtifactError(f"artifact {artifact_uri!r} is not in the artifact store: {exc}") from exc
    for name in REQUIRED:
        try:
            store.get_file(f"{key}/{name}", dest / name)
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise ArtifactError(f"artifact {artifact_uri} has no readable {name}: {exc}") from exc
    for name in OPTIONAL:
        try:
            if store.exists(f"{key}/{name}"):
                store.get_file(f"{key}/{name}", dest / name)
        except StorageUnavailable:   # the store may answer in a moment: retried, never a rejection
            raise
        except StorageError as exc:
            raise ArtifactError(f"artifact {artifact_uri}: cannot read {name}: {exc}") from exc
    return load_local_artifact(dest, checksum, uri=artifact_uri)


def load_local_artifact(directory: Path, checksum: str, uri: str = "") -> Artifact:
    """Verify an artifact directory already on disk (repository rollback, tests, trainer output)."""
    directory = Path(directory)
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise ArtifactError(f"artifact {uri or directory} has no {name}")
    verify_checksum(directory / MODEL_FILE, checksum)
    sig = Signature.parse((directory / SIGNATURE_FILE).read_bytes())
    for which in OPTIONAL:
        read_sample(directory / which)
    return Artifact(dir=directory, uri=uri or str(directory), checksum=checksum.lower(), signature=sig)
