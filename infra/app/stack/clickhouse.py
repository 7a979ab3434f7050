"""The embedded ClickHouse: one process owns the chdb data directory and serves ClickHouse's HTTP interface.

chdb locks its data directory, so exactly one process may open it; every other
ModelBus process (sinks, CLI, dashboard) reaches the same engine over loopback
HTTP with clickhouse-connect, exactly as it would reach a production server.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from infra.app.stack.process import PidFile, log_tail, require_free_port, spawn, terminate, wait_until
from infra.app.stack.triton import settings_env
from infra.settings import Settings

# What `status` asks: a real query as the configured (writing) user, through the engine, not just /ping.
_HEALTH_QUERY = "SELECT getSetting('readonly') AS readonly, count() AS dbs FROM system.databases"


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
        self.problem: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "infra.clickhouse.server", "--path", str(self.path), "--port", str(self.port),
                "--host", self.host]

    def healthy(self, timeout: float = 1.0) -> bool:
        """/ping answers AND a query as ``clickhouse.user`` runs, read-write: what sinks need to ingest."""
        self.problem = self.check(timeout)
        return self.problem is None

    def check(self, timeout: float = 1.0) -> str | None:
        """None when healthy, otherwise what is wrong, in one line."""
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as r:
                if r.status != 200:
                    return f"/ping answered {r.status}"
        except OSError as exc:
            return f"/ping failed: {exc}"
        ch = self.settings.clickhouse
        token = base64.b64encode(f"{ch.user}:{ch.password.get_secret_value() if ch.password else ''}".encode())
        req = urllib.request.Request(f"{self.url}/?default_format=TabSeparated", data=_HEALTH_QUERY.encode(),
                                     headers={"Authorization": "Basic " + token.decode()}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=max(timeout, 2.0)) as r:
                readonly = r.read().decode().split("\t")[0]
        except urllib.error.HTTPError as exc:
            return f"queries fail: {exc.read().decode(errors='replace').strip()[:300]}"
        except OSError as exc:
            return f"queries fail: {exc}"
        if readonly != "0":
            return f"user {ch.user!r} is read-only (readonly={readonly}): sinks cannot write"
        return None

    def running_pid(self) -> int | None:
        return self.pidfile.alive_pid()

    def start(self, timeout: float = 60.0) -> int:
        require_free_port("clickhouse (chdb)", self.host, self.port, "MODELBUS_CLICKHOUSE__HTTP_PORT")
        Path(self.path).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
        env.update(settings_env(self.settings))   # users and session limits as the caller's settings say
        self.proc = spawn(self.command(), self.log_path, env=env)
        self.pidfile.write(self.proc.pid)

        def detail():
            code = self.proc.poll()
            return (f"exited with code {code}; " if code is not None else "") + \
                (f"last check: {self.problem}; " if self.problem else "") + \
                f"log {self.log_path}:\n{log_tail(self.log_path)}"

        wait_until(lambda: self.healthy(0.5), timeout, "clickhouse (chdb)", detail,
                   alive=lambda: self.proc.poll() is None)
        return self.proc.pid

    def stop(self) -> None:
        pid = self.running_pid()
        if pid:
            terminate(pid)
        self.pidfile.remove()
