"""The consumer side of `modelbus up`: which consumers run, how many, and the supervisor that owns them.

`up` starts one detached supervisor (``infra.app.stack.supervise``) and waits until
every consumer has lived through ``stack.consumer_grace_s``: a consumer that
dies before that (bad settings, a dependency it cannot reach) fails `up` with
its own last error line, and everything `up` started is stopped again. `status`
reads the supervisor's state file; `down` sends it SIGTERM and, should it not
answer, kills it and any child it left.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.app.stack.process import PidFile, spawn, terminate
from infra.app.stack.supervise import last_error_line
from infra.errors import ConfigError, StackError
from infra.settings import Settings


def consumer_modules() -> dict[str, str]:
    """Consumer name → module, from the one table of consumers (``modelbus consumer list``)."""
    from consumers.registry import CONSUMERS

    return {name: module for name, (module, _what) in CONSUMERS.items()}


def consumer_plan(settings: Settings, scale: dict[str, int] | None = None) -> dict[str, dict]:
    """Every consumer once, then ``stack.consumers`` and ``scale`` (flags) on top; 0 leaves one out."""
    modules = consumer_modules()
    counts = {name: 1 for name in modules} | dict(settings.stack.consumers) | dict(scale or {})
    unknown = sorted((set(counts) | set(settings.stack.consumer_args)) - set(modules))
    if unknown:
        raise ConfigError(f"unknown consumer(s) {', '.join(unknown)} in MODELBUS_STACK__CONSUMERS, "
                          f"MODELBUS_STACK__CONSUMER_ARGS or --scale; "
                          f"known: {', '.join(modules)}")
    bad = sorted(name for name, n in counts.items() if n < 0)
    if bad:
        raise ConfigError(f"instances of {', '.join(bad)} must be 0 or more")
    return {name: {"module": modules[name], "instances": n, "args": list(settings.stack.consumer_args.get(name, []))}
            for name, n in counts.items() if n > 0}


def parse_scale(items: list[str]) -> dict[str, int]:
    """``["training=2", "drift-monitor=0"]`` → counts (the ``--scale`` flag)."""
    out = {}
    for item in items:
        name, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise ConfigError(f"--scale {item!r}: expected NAME=COUNT, e.g. training=2")
        out[name.strip()] = int(n)
    return out


@dataclass(frozen=True)
class ProcessState:
    name: str
    consumer: str
    pid: int | None
    state: str
    restarts: int
    last_exit: int | None
    last_error: str
    log: str
    uptime_s: float | None


class ConsumerSupervisor:
    """Starts, reads and stops the detached supervisor of one data directory."""

    def __init__(self, settings: Settings):
        self.settings = settings
        run = settings.data_dir / "run"
        self.state_path = run / "supervisor.json"
        self.pidfile = PidFile(run / "supervisor.pid", "infra.app.stack.supervise")
        self.log_path = settings.data_dir / "logs" / "supervisor.log"

    def running_pid(self) -> int | None:
        return self.pidfile.alive_pid()

    def start(self, plan: dict[str, dict], env: dict[str, str]) -> int:
        self.state_path.unlink(missing_ok=True)
        proc = spawn([sys.executable, "-m", "infra.app.stack.supervise", json.dumps(plan)], self.log_path, env=env)
        self.pidfile.write(proc.pid)
        return proc.pid

    def wait_started(self, timeout: float, progress=lambda name, msg: None) -> list[ProcessState]:
        """Until every consumer lived through the grace period; one that died first fails `up`."""
        deadline = time.monotonic() + timeout
        told: set[str] = set()
        while time.monotonic() < deadline:
            supervised = self.running_pid() is not None
            procs, doc = self.processes(), self._read()
            for p, raw in zip(procs, doc.get("processes", []) if doc else []):
                if (raw["last_exit"] is not None or raw["last_error"]) and not raw["ever_ran"]:
                    how = "could not start" if p.last_exit is None else f"exited at start with code {p.last_exit}"
                    raise StackError(f"consumer {p.name} {how}: {p.last_error} (log {p.log})")
            if not supervised:   # the consumer that took it down, if one did, was named above
                why = last_error_line(self.log_path, 0)
                raise StackError(f"the consumer supervisor exited at start{': ' + why if why else ''}; "
                                 f"see {self.log_path}")
            for p in procs:
                if p.state == "running" and p.name not in told:
                    told.add(p.name)
                    progress(p.name, f"running (pid {p.pid})")
            if procs and all(p.state == "running" for p in procs):
                return procs
            time.sleep(0.25)
        slow = [p.name for p in self.processes() if p.state != "running"]
        raise StackError(f"consumers not running within {timeout:.0f}s: {', '.join(slow) or 'none reported'}")

    def _read(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def processes(self) -> list[ProcessState]:
        doc = self._read()
        if not doc:
            return []
        alive = self.running_pid() is not None
        now = time.time()
        out = []
        for p in doc["processes"]:
            state = p["state"] if alive else "stopped"
            up = now - p["started_at"] if alive and p["pid"] and p["started_at"] else None
            out.append(ProcessState(p["name"], p["consumer"], p["pid"] if alive else None, state, p["restarts"],
                                    p["last_exit"], p["last_error"], p["log"], up))
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the supervisor (it stops its children); then make sure no child outlived it."""
        pid = self.running_pid()
        children: list[psutil.Process] = []
        if pid:
            try:
                children = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                pass
            terminate(pid, timeout)
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        self.pidfile.remove()
        self.state_path.unlink(missing_ok=True)   # a later `up --only stack` has no consumers to report


def log_path(settings: Settings, name: str) -> Path:
    """The log of a process by the name `status` shows (``training-1``, ``kafka``, ``supervisor``, ...)."""
    logs = settings.data_dir / "logs"
    aliases = {"kafka": "tansu"}
    for candidate in (name, aliases.get(name, name), f"{name}-1"):
        path = logs / f"{candidate}.log"
        if path.is_file():
            return path
    known = sorted(p.stem for p in logs.glob("*.log")) if logs.is_dir() else []
    raise ConfigError(f"no log named {name!r} under {logs}; known: {', '.join(known) or 'none (run modelbus up)'}")
