"""The consumer supervisor: one detached process that owns every consumer `modelbus up` started.

Why a process of its own: `up` returns to the shell, yet a consumer that crashes
must come back without anyone watching a terminal. This process starts each
consumer as its child (``python -m consumers.<module>``, logging to
``<data_dir>/logs/<name>.log``), restarts one that exits with a doubling backoff
(reset after a minute of good health), counts the restarts, and keeps the last
error line. It writes what it knows to ``<data_dir>/run/supervisor.json`` (read by
`modelbus status` and by `up` while it waits) and stops its children on SIGTERM
(`modelbus down`). Children are asked by the kernel to die with it
(PR_SET_PDEATHSIG), so even a SIGKILL of the supervisor leaves no consumer behind.

Run as ``python -m infra.app.stack.supervise PLAN_JSON``; settings come from the
environment, exactly as `up` built them.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

log = logging.getLogger("modelbus.supervise")

HEALTHY_RESET_S = 60.0     # up this long after a start: the next crash starts the backoff from 1 s again
STOP_GRACE_S = 5.0         # SIGTERM, then SIGKILL: `down` stays within a few seconds
_PR_SET_PDEATHSIG = 1
_PRIVATE = ("proc", "log_offset", "argv", "next_start", "first_output_at")   # not part of the state file


@dataclass
class Child:
    name: str              # e.g. 'training-2'
    consumer: str          # e.g. 'training'
    argv: list[str]
    log: str
    pid: int | None = None
    state: str = "pending"     # pending, starting, running, backoff, stopped
    restarts: int = 0
    started_at: float | None = None
    ever_ran: bool = False     # survived the grace period once (a crash before that fails `up`)
    last_exit: int | None = None
    last_error: str = ""
    next_start: float = 0.0
    backoff_s: float = 0.0
    first_output_at: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_offset: int = field(default=0, repr=False)

    def public(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _PRIVATE}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def last_error_line(log_path: Path, offset: int) -> str:
    """The most telling line a process wrote since ``offset``: its last error or exception, else its last line."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read()[-64_000:].decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line or " CRITICAL " in line or (": " in line and line.split(":", 1)[0].endswith(
                ("Error", "Exception", "Interrupt"))):
            return line[:500]
    return lines[-1][:500] if lines else ""


class Supervisor:
    def __init__(self, children: list[Child], state_path: Path, grace_s: float, backoff_max_s: float):
        self.children = children
        self.state_path = state_path
        self.grace_s = grace_s
        self.backoff_max_s = backoff_max_s
        self.stopping = threading.Event()

    def start_child(self, c: Child, now: float) -> None:
        """A start that fails (fork refused on a machine out of processes or memory) is a crash of that child,
        retried with its backoff: it must not end the supervisor and with it every other consumer."""
        Path(c.log).parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(c.log, "ab") as fh:
                c.log_offset = fh.tell()
                c.proc = subprocess.Popen(c.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent)
        except (OSError, subprocess.SubprocessError) as exc:
            c.proc, c.pid, c.last_exit, c.last_error = None, None, None, f"could not start: {exc}"[:500]
            self._backoff(c, now, up_s=0.0)
            log.error("%s: %s; retry in %.0fs", c.name, c.last_error, c.backoff_s)
            return
        c.pid, c.started_at, c.state, c.first_output_at = c.proc.pid, now, "starting", None
        log.info("%s: started pid %d", c.name, c.pid)

    def _backoff(self, c: Child, now: float, up_s: float) -> None:
        c.backoff_s = 1.0 if up_s >= HEALTHY_RESET_S or not c.backoff_s else min(c.backoff_s * 2, self.backoff_max_s)
        c.next_start, c.state = now + c.backoff_s, "backoff"

    def reap(self, c: Child, now: float) -> None:
        """A child exited: remember why and schedule its restart."""
        assert c.proc is not None, "only a started child is reaped"
        code = c.proc.poll()
        up_s = now - (c.started_at or now)
        c.last_exit, c.proc, c.pid = code, None, None
        if code is not None and code < 0:
            c.last_error = f"killed by {signal.Signals(-code).name}"
        else:
            c.last_error = last_error_line(Path(c.log), c.log_offset) or f"exited with code {code}"
        self._backoff(c, now, up_s)
        log.warning("%s: exited with code %s after %.1fs (%s); restart in %.0fs", c.name, code, up_s, c.last_error,
                    c.backoff_s)

    def tick(self) -> None:
        now = time.time()
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None:
                self.reap(c, now)
            if c.proc is None and now >= c.next_start:
                if c.state == "backoff":
                    c.restarts += 1
                self.start_child(c, now)
            if c.state == "starting" and self.settled(c, now):
                c.state, c.ever_ran = "running", True

    def settled(self, c: Child, now: float) -> bool:
        """Past the grace period, counted from the first line it logged: importing torch on a busy machine can
        take longer than the grace period, and a bad option is only refused after that."""
        if c.first_output_at is None:
            try:
                if os.path.getsize(c.log) > c.log_offset:
                    c.first_output_at = now
            except OSError:
                pass
        assert c.started_at is not None, "only a started child settles"
        if c.first_output_at is None:
            return now - c.started_at >= 4 * self.grace_s   # a consumer that never logs is not held forever
        return now - c.started_at >= self.grace_s and now - c.first_output_at >= min(self.grace_s, 2.0)

    def write_state(self, running: bool = True) -> None:
        doc = {"pid": os.getpid(), "running": running, "updated_at": time.time(),
               "processes": [c.public() for c in self.children]}
        tmp = self.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.state_path)
        except OSError as exc:   # a full disk must not take the consumers down with the supervisor
            log.error("cannot write %s: %s", self.state_path, exc)

    def stop_children(self) -> None:
        live = [(c, c.proc) for c in self.children if c.proc is not None and c.proc.poll() is None]
        for _c, proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for c, proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: no exit %.0fs after SIGTERM, killing it", c.name, STOP_GRACE_S)
                proc.kill()
                proc.wait()
        for c in self.children:
            c.proc, c.pid, c.state = None, None, "stopped"

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            while not self.stopping.is_set():
                self.tick()
                self.write_state()
                self.stopping.wait(0.25)
        finally:
            self.stop_children()
            self.write_state(running=False)


def build_children(plan: dict[str, dict], data_dir: Path) -> list[Child]:
    """``plan``: consumer name → {"module", "instances", "args"}; instance names are NAME-1, NAME-2, ..."""
    out = []
    for consumer, spec in plan.items():
        for i in range(1, spec["instances"] + 1):
            name = f"{consumer}-{i}"
            out.append(Child(name, consumer, [sys.executable, "-m", spec["module"], *spec.get("args", [])],
                             str(data_dir / "logs" / f"{name}.log")))
    return out


def main(argv: list[str] | None = None) -> None:
    from infra.logs import configure_logging
    from infra.settings import load_settings

    argv = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    configure_logging(settings.log_level)
    run_dir = settings.data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(build_children(json.loads(argv[0]), settings.data_dir), run_dir / "supervisor.json",
                     settings.stack.consumer_grace_s, settings.stack.restart_backoff_max_s)
    sup.run()


if __name__ == "__main__":
    main()
