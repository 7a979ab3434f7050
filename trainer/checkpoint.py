"""Per-epoch checkpoints: written atomically, read back without unpickling code.

A checkpoint holds everything needed to continue a run bit-for-bit: weights,
optimizer, scheduler, grad-scaler, the epoch, RNG states, the best weights seen
so far and the metric history. Checkpoints are loaded with ``weights_only=True``
so a tampered file cannot run code; anything unreadable is a ``CheckpointError``
that the loop reports and recovers from by starting over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainer.errors import CheckpointError

FORMAT = "modelbus.trainer.checkpoint/1"
# The loop's plain state fields (trainer.loop_state.LoopState), beside the serialised
# model/optimizer/schedule/RNG objects.
STATE_KEYS = ("epoch", "history", "best_state", "best_val_loss", "best_epoch", "bad_epochs", "done")
_REQUIRED = ("format", "fingerprint", "model", "optimizer", "scheduler", "rng", *STATE_KEYS)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbled files
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a ModelBus trainer checkpoint")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def quarantine(path: str | Path) -> Path | None:
    """Move a bad checkpoint aside (``<name>.corrupt``) so it is kept for inspection but never loaded."""
    path = Path(path)
    if not path.exists():
        return None
    dest = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, dest)
    except OSError:
        return None
    return dest
