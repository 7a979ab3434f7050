"""The embedded ClickHouse: one process owns the chdb data directory and serves ClickHouse's HTTP interface.

chdb locks its data directory, so exactly one process may open it; every other
ModelBus process (sinks, CLI, dashboard) reaches the same engine over loopback
HTTP with clickhouse-connect, exactly as it would reach a production server.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from infra.settings import Settings
from infra.stack.process import PidFile, log_tail, require_free_port, spawn, terminate, wait_until


class ChdbServer:
    name = "clickhouse"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.host = settings.stack.host
        self.port = settings.clickhouse.http_port
        self.path = settings.chdb_path
        self.log_path = settings.data_dir / "logs" / "clickhouse.log"
        self.pidfile = PidFile(settings.data_dir / "run" / "clickhouse.pid", "infra.clickhouse.server")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "infra.clickhouse.server", "--path", str(self.path), "--port", str(self.port),
                "--host", self.host]

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as r:
                return r.status == 200
        except OSError:
            return False

    def running_pid(self) -> int | None:
        return self.pidfile.alive_pid()

    def start(self, timeout: float = 60.0) -> int:
        require_free_port("clickhouse (chdb)", self.host, self.port, "MODELBUS_CLICKHOUSE__HTTP_PORT")
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.command(), self.log_path)
        self.pidfile.write(self.proc.pid)

        def detail():
            code = self.proc.poll()
            return (f"exited with code {code}; " if code is not None else "") + \
                f"log {self.log_path}:\n{log_tail(self.log_path)}"

        wait_until(lambda: self.healthy(0.5), timeout, "clickhouse (chdb)", detail,
                   alive=lambda: self.proc.poll() is None)
        return self.proc.pid

    def stop(self) -> None:
        pid = self.running_pid()
        if pid:
            terminate(pid)
        self.pidfile.remove()
