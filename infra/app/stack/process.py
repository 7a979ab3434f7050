"""Small process helpers shared by every embedded part: free/used ports, pid files, log tails.

These exist so each part explains a taken port, a missing binary or a stale pid
file in one line, instead of failing somewhere inside a client later.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from infra.errors import ConfigError, StackError


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def who_listens(port: int) -> str:
    """Best-effort 'pid name' of the process listening on ``port`` (for error messages)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, PermissionError):
        pass
    return "another process"


def require_free_port(part: str, host: str, port: int, setting: str) -> None:
    if port_in_use(host, port):
        raise ConfigError(f"{part}: port {host}:{port} is already in use by {who_listens(port)}; "
                          f"stop it or choose another port with {setting}")


def require_binary(part: str, path: Path, hint: str) -> Path:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigError(f"{part}: binary not found or not executable at {path} ({hint})")
    return path


class PidFile:
    """A pid file that knows whether its process is still ours and alive (stale files are detected)."""

    def __init__(self, path: Path, expect_cmd: str):
        self.path = Path(path)
        self.expect_cmd = expect_cmd

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def alive_pid(self) -> int | None:
        """The pid if it runs the expected command; a stale file (dead or reused pid) is removed."""
        pid = self.read()
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                cmd = proc.cmdline()
                # An empty command line is a process whose arguments cannot be read at this instant (it is
                # between fork and exec, or exec is finishing), not another program: keep the file.
                if not cmd or self.expect_cmd in " ".join(cmd):
                    return pid
        except psutil.Error:
            pass
        self.path.unlink(missing_ok=True)
        return None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(str(pid))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a detached child (own session, so `modelbus up` can return) logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL; returns once the process is gone."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass


def wait_until(check, timeout: float, what: str, on_fail=None, interval: float = 0.1,
               alive=lambda: True) -> None:
    """Wait for ``check``; fail at once (with ``on_fail``'s detail) when ``alive`` says the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            detail = on_fail() if on_fail else ""
            raise StackError(f"{what} failed to start{': ' + detail if detail else ''}")
        time.sleep(interval)
    detail = on_fail() if on_fail else ""
    raise StackError(f"{what} did not become ready within {timeout:.0f}s{': ' + detail if detail else ''}")
