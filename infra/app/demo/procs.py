"""Runs ModelBus consumers as real child processes (as production runs them), with logs and clean stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.app.stack.process import log_tail, terminate
from infra.app.stack.triton import settings_env
from infra.settings import Settings


class ConsumerGroup:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.env = {**os.environ, **settings_env(settings), **(extra_env or {})}
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, module: str, *args: str) -> None:
        log_path = self.settings.data_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env)
        self.procs[name] = (proc, log_path)

    def dead(self) -> list[str]:
        """Consumers that exited, with the end of their log (for a clear failure message)."""
        return [f"{name} exited with code {p.returncode}:\n{log_tail(log)}"
                for name, (p, log) in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        for _name, (proc, _log) in reversed(list(self.procs.items())):
            if proc.poll() is None:
                terminate(proc.pid, timeout=20)
        self.procs.clear()
