"""Where a model came from: code version and runtime environment.

Carried in TrainingRunUpdated and ModelRegistered so that any registered model
can be traced to the exact code and software stack that produced it.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import sklearn
import torch

_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<git commit or 'unknown'> modelbus-<package version>``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        version = metadata.version("modelbus")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"{commit} modelbus-{version}"


def environment(device: torch.device, world_size: int = 1) -> dict[str, str]:
    """String map of the software and hardware a run used."""
    env = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "sklearn": sklearn.__version__, "device": str(device), "cuda": torch.version.cuda or "none",
        "host": socket.gethostname(), "platform": platform.platform(), "world_size": str(world_size),
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
