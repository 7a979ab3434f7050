"""Brings the embedded stack up, reports its health, and takes it down.

Parts start in dependency order (broker, ClickHouse, Triton) and are each
checked for health before the next starts. A second ``up`` finds the running
parts through their pid files and health checks instead of clashing with them.
If any part fails, the parts this call started are stopped again.

Every ``up`` creates the catalogue topics that are missing, right after the
broker is healthy. The embedded broker keeps everything in memory, so after it
restarted (crash, ``down``/``up``) this is what brings the topics back with
their configured partitions; running producers and consumers reconnect by
themselves (see ``infra.kafka.producer``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Callable

from infra.app.stack.clickhouse import ChdbServer
from infra.app.stack.tansu import TansuBroker
from infra.app.stack.triton import TritonServer
from infra.errors import StackError
from infra.settings import Settings

log = logging.getLogger("modelbus.stack")


@dataclass(frozen=True)
class PartStatus:
    name: str
    state: str          # 'running', 'stopped', 'unhealthy', 'external'
    pid: int | None
    endpoint: str
    detail: str = ""


def embedded_settings(settings: Settings) -> Settings:
    """Settings whose clients point at the embedded parts (ports from ``settings.stack``)."""
    st = settings.stack
    overrides: dict = {
        "kafka": {"bootstrap_servers": f"{st.host}:{st.kafka_port}"},
        "triton": {"grpc_url": f"{st.host}:{st.triton_grpc_port}", "http_url": f"{st.host}:{st.triton_http_port}",
                   "metrics_url": f"http://{st.host}:{st.triton_metrics_port}/metrics"},
    }
    return settings.with_overrides(**overrides)


class Stack:
    def __init__(self, settings: Settings):
        self.settings = embedded_settings(settings)
        s = self.settings
        self.kafka = TansuBroker(s.stack.host, s.stack.kafka_port, s.data_dir, storage=s.stack.kafka_storage,
                                 s3_endpoint_url=s.artifacts.s3_endpoint_url)
        self.clickhouse = ChdbServer(s) if s.clickhouse.url is None else None
        self.triton = TritonServer(s)
        self.started: list = []   # the parts the last `up` started (not those it found running)

    @property
    def parts(self) -> list:
        return [p for p in (self.kafka, self.clickhouse, self.triton) if p is not None]

    def _endpoint(self, part) -> str:
        if part is self.kafka:
            return self.kafka.bootstrap
        if part is self.triton:
            return f"grpc {self.triton.grpc_url}, http {self.triton.http_url}"
        return part.url

    def check_disk(self) -> None:
        min_free_mb = self.settings.stack.min_free_mb
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.settings.data_dir).free >> 20
        if free < min_free_mb:
            raise StackError(f"only {free} MiB free under {self.settings.data_dir}; the stack needs {min_free_mb} MiB")

    def up(self, progress: Callable[[str, str], None] = lambda part, msg: None) -> list[PartStatus]:
        from infra.kafka.admin import ensure_topics
        from infra.storage.factory import store_from_settings

        self.check_disk()
        started = self.started = []
        timeout = self.settings.stack.start_timeout_s
        try:
            for part in self.parts:
                pid = part.running_pid()
                if pid and part.healthy():
                    progress(part.name, f"already running (pid {pid})")
                else:
                    if pid:
                        raise StackError(f"{part.name}: pid {pid} is running but not healthy; "
                                         "run `modelbus down` first")
                    progress(part.name, "starting")
                    pid = part.start(timeout)
                    started.append(part)
                    progress(part.name, f"running (pid {pid})")
                if part is self.kafka:
                    # Also when the broker was already running: one restarted by other means is empty too.
                    created = ensure_topics(self.settings)
                    progress("topics", f"{len(created)} created" if created else "present")
            store_from_settings(self.settings)   # creates the local root / checks the bucket is reachable
            progress("artifacts", self.settings.artifact_root)
        except BaseException:
            for part in reversed(started):
                part.stop()
            raise
        return self.status()

    def stop_started(self) -> None:
        """Undo the last `up` (the consumers behind it failed), leaving parts that ran before it alone."""
        for part in reversed(self.started):
            part.stop()
        self.started = []

    def status(self) -> list[PartStatus]:
        out = []
        for part in self.parts:
            pid = part.running_pid()
            if pid is None:
                out.append(PartStatus(part.name, "stopped", None, self._endpoint(part)))
            elif part.healthy():
                out.append(PartStatus(part.name, "running", pid, self._endpoint(part)))
            else:
                out.append(PartStatus(part.name, "unhealthy", pid, self._endpoint(part),
                                      getattr(part, "problem", None) or "see its log"))
        if self.clickhouse is None:
            out.append(PartStatus("clickhouse", "external", None, self.settings.clickhouse.url or ""))
        return out

    def down(self, progress: Callable[[str, str], None] = lambda part, msg: None) -> None:
        for part in reversed(self.parts):
            if part.running_pid():
                progress(part.name, "stopping")
                part.stop()
                progress(part.name, "stopped")
