"""Runs the tritonserver bundled in nvidia-pytriton as a managed child process.

The wheel ships the server, its shared libraries and the Python backend, but
not in the layout tritonserver expects: the backend directory has to be
assembled (the stub must be a real copy next to ``libtriton_python.so``), the
loader must find the bundled libraries, and the stub must find the venv's
Python first on PATH so that ``import torch`` and ``import serving`` work in
served models. One class does all of that so the stack supervisor and the test
fixtures start Triton the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from infra.app.stack.process import PidFile, log_tail, require_binary, require_free_port, spawn, terminate
from infra.errors import ConfigError, StackError
from infra.settings import Settings

_START_MARK = "=== modelbus: starting tritonserver"
PY_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonLayout:
    """Where the pieces of the bundled server live on this machine."""

    binary: Path
    libs: Path
    backend_src: Path
    stub_src: Path

    @classmethod
    def discover(cls, server_binary: str = "") -> TritonLayout:
        """Locate the nvidia-pytriton wheel's server; a configured binary overrides the bundled one."""
        try:
            import pytriton
        except ImportError as exc:
            raise ConfigError("nvidia-pytriton is not installed: it provides the tritonserver binary") from exc
        root = Path(pytriton.__file__).resolve().parent / "tritonserver"
        site = root.parent.parent
        binary = Path(server_binary).expanduser() if server_binary else root / "bin" / "tritonserver"
        return cls(
            binary=binary,
            libs=site / "nvidia_pytriton.libs",
            backend_src=root / "backends" / "python",
            stub_src=root / "python_backend_stubs" / PY_TAG / "triton_python_backend_stub",
        )

    def check(self) -> None:
        if not self.binary.is_file():
            raise ConfigError(f"tritonserver binary not found: expected it at {self.binary} "
                              "(install nvidia-pytriton or set MODELBUS_TRITON__SERVER_BINARY)")
        if not self.stub_src.is_file():
            raise ConfigError(f"Triton Python backend stub for Python {PY_TAG} not found: expected {self.stub_src}")


def _plain(value: Any) -> Any:
    """JSON form of nested settings values (e.g. ``clickhouse.server_users``), secrets revealed."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: getattr(value, k) for k in type(value).model_fields if getattr(value, k) is not None}
    raise TypeError(f"cannot pass {type(value).__name__} through the environment")


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``MODELBUS_<SECTION>__<FIELD>`` variables, secrets included.

    Served models build their own Settings from the environment (their entry
    point is Triton's stub), so the server process receives the exact settings
    of whoever started it, including overrides that never were environment
    variables (tests and the supervisor pick free ports).
    """
    env: dict[str, str] = {}
    for section, model in settings:
        if not isinstance(model, BaseModel):
            env[f"MODELBUS_{section.upper()}"] = str(model)
            continue
        for field in type(model).model_fields:
            value = getattr(model, field)
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                text = json.dumps(value, default=_plain)
            else:
                text = str(value)
            env[f"MODELBUS_{section.upper()}__{field.upper()}"] = text
    return env


class TritonServer:
    """One tritonserver with explicit model control, bound to loopback ports from ``settings.stack``.

    Files live under ``settings.data_dir``: ``logs/triton.log``, ``run/triton.pid``
    and ``triton-backends/`` (the assembled backend directory).
    """

    name = "triton"

    def __init__(self, settings: Settings, *, repository: str | None = None, log_verbose: int = 0,
                 extra_args: Sequence[str] = (), base_env: dict[str, str] | None = None):
        self.settings = settings
        self.repository = repository or settings.triton_repository
        self.layout = TritonLayout.discover(settings.triton.server_binary)
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self._base_env = dict(os.environ if base_env is None else base_env)
        st = settings.stack
        self.host = st.host
        self.ports = {"grpc": st.triton_grpc_port, "http": st.triton_http_port, "metrics": st.triton_metrics_port}
        self.log_file = settings.data_dir / "logs" / "triton.log"
        self.pidfile = PidFile(settings.data_dir / "run" / "triton.pid", "tritonserver")
        self.backend_dir = settings.data_dir / "triton-backends"
        self._proc: subprocess.Popen | None = None

    # -- addresses ------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    def client_settings(self) -> Settings:
        """Settings whose ``triton`` section points clients at this server and its repository."""
        return self.settings.with_overrides(triton={
            "grpc_url": self.grpc_url, "http_url": self.http_url,
            "metrics_url": self.metrics_url, "repository": self.repository,
        })

    # -- preparation ----------------------------------------------------
    def prepare_backends(self) -> Path:
        """Assemble ``backends/python``: library and utils linked, the stub copied (it must not be a link)."""
        self.layout.check()
        dest = self.backend_dir / "python"
        dest.mkdir(parents=True, exist_ok=True)
        for fname in ("libtriton_python.so", "triton_python_backend_utils.py"):
            link, src = dest / fname, self.layout.backend_src / fname
            if link.is_symlink() and link.resolve() == src.resolve():
                continue
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to(src)
        stub = dest / "triton_python_backend_stub"
        src_stat = self.layout.stub_src.stat()
        if not stub.is_file() or stub.stat().st_size != src_stat.st_size:
            tmp = stub.with_suffix(".tmp")
            shutil.copy2(self.layout.stub_src, tmp)
            tmp.chmod(0o755)
            os.replace(tmp, stub)
        return self.backend_dir

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in self._base_env.items() if not k.startswith("MODELBUS_")}
        env.update(settings_env(self.settings))
        env["MODELBUS_TRITON__REPOSITORY"] = self.repository
        libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(self.layout.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libdirs if p)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + (":" + env["PATH"] if env.get("PATH") else "")
        a = self.settings.artifacts
        if self.repository.startswith("s3://") and a.s3_region:
            env.setdefault("AWS_DEFAULT_REGION", a.s3_region)
        return env

    def repository_arg(self) -> str:
        """Triton spells custom S3 endpoints inside the URI: ``s3://host:port/bucket/prefix``."""
        repo = self.repository
        endpoint = self.settings.artifacts.s3_endpoint_url
        if repo.startswith("s3://") and endpoint:
            scheme, _, hostport = endpoint.partition("://")
            return f"s3://{scheme}://{hostport.rstrip('/')}/{repo[5:]}"
        return repo

    def command(self) -> list[str]:
        return [
            str(self.layout.binary),
            f"--model-repository={self.repository_arg()}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backend_dir}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}",
            f"--http-address={self.host}", f"--http-port={self.ports['http']}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-metrics=true",
            "--disable-auto-complete-config",
            "--strict-readiness=false",  # ready = accepting requests; a candidate that failed to load is per model
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    # -- lifecycle ------------------------------------------------------
    def running_pid(self) -> int | None:
        """Pid of a live tritonserver started from this data dir (by us or another process)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return self.pidfile.alive_pid()

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def healthy(self, timeout: float = 1.0) -> bool:
        """True when ``/v2/health/ready`` answers 200."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=timeout) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float | None = None) -> int:
        """Start and wait until ready; raise one clear line (port taken, binary missing, died) on failure."""
        timeout = timeout if timeout is not None else self.settings.stack.start_timeout_s
        running = self.running_pid()
        if running:
            raise StackError(f"triton: already running (pid {running}, pid file {self.pidfile.path})")
        require_binary("triton", self.layout.binary,
                       "install nvidia-pytriton or set MODELBUS_TRITON__SERVER_BINARY")
        self.prepare_backends()
        for kind, port in self.ports.items():
            require_free_port(f"triton ({kind})", self.host, port, f"MODELBUS_STACK__TRITON_{kind.upper()}_PORT")
        if not self.repository.startswith("s3://"):
            Path(self.repository).mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n{_START_MARK} {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n".encode())
        self._proc = spawn(self.command(), self.log_file, env=self.environment())
        self.pidfile.write(self._proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                self.pidfile.remove()
                raise StackError(f"triton: tritonserver exited with code {code} during start; {self._log_hint()}")
            if self.healthy(timeout=0.5):
                return self._proc.pid
            time.sleep(0.1)
        self.stop()
        raise StackError(f"triton: not ready after {timeout:.0f}s; {self._log_hint()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Triton unloads models and ends its stubs), then SIGKILL; leftover stubs are killed too."""
        pid = self.running_pid()
        if pid is not None:
            terminate(pid, timeout)
            try:
                os.killpg(pid, signal.SIGKILL)  # the session we created: stubs orphaned by a SIGKILL
            except (ProcessLookupError, PermissionError):
                pass
        if self._proc is not None:
            try:
                self._proc.wait(1)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self.pidfile.remove()

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)

    def _log_hint(self) -> str:
        tail = self.log_tail(60).splitlines()
        marks = [i for i, ln in enumerate(tail) if ln.startswith(_START_MARK)]
        tail = [ln for ln in tail[marks[-1] + 1 if marks else 0:] if ln.strip()] or ["(no output)"]
        for ln in tail:
            if "address already in use" in ln.lower() or "failed to bind" in ln.lower():
                return f"a port is already in use: {ln.strip()} (log {self.log_file})"
        return f"last log lines ({self.log_file}):\n" + "\n".join(tail[-8:])

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
