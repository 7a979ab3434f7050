"""Shared fixtures for the embedded stack.

Stack fixtures start the REAL parts (tansu broker here; Triton and the chdb
owner in their packages' conftest files) once per test session on free loopback
ports, so suites never clash with a developer's running `modelbus up`.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

# Fuzz tests are derandomized by default so that CI runs are repeatable (the examples differ per test but
# not per run); `HYPOTHESIS_PROFILE=explore pytest ...` searches with fresh randomness to find new bugs.
from hypothesis import settings as _hypothesis_settings

import infra.app.stack.process as _process
from infra.settings import Settings, load_settings


def _worker_ports(worker: str) -> itertools.cycle:
    """This xdist worker's own block of ports, below the kernel's ephemeral range (32768 and up).

    Asking the kernel for a free port (bind to 0) races under xdist: another worker's server, or any client
    socket's ephemeral port, can take the number between its choice and its use. Disjoint blocks cannot.
    """
    n = int(worker.removeprefix("gw") or 0) if worker.startswith("gw") else 0
    base = 20000 + (n % 6) * 2000
    return itertools.cycle(range(base, base + 2000))


_PORTS = _worker_ports(os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
_kernel_free_port = _process.free_port


def free_port(host: str = "127.0.0.1") -> int:
    for _ in range(2000):
        port = next(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    return _kernel_free_port(host)


# Test modules import ``free_port`` from the stack package; they run after this conftest, so they get this one.
_process.free_port = free_port

_hypothesis_settings.register_profile("repeatable", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("modelbus")


@pytest.fixture(scope="session")
def base_settings(session_dir) -> Settings:
    """Settings isolated from the developer's environment and data directory."""
    for key in [k for k in os.environ if k.startswith("MODELBUS_")]:
        os.environ.pop(key)
    return load_settings(stack={"data_dir": str(session_dir / "data")})


@pytest.fixture(scope="session")
def tansu(session_dir):
    """A real tansu broker for the whole session (in-memory; restarted per test session)."""
    from infra.app.stack.tansu import TansuBroker

    broker = TansuBroker("127.0.0.1", free_port(), session_dir / "tansu")
    broker.start(timeout=30)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(base_settings, tansu) -> Settings:
    """Settings pointing at the session broker, with every catalogue topic created up front.

    Short session/heartbeat timeouts: tansu waits session.timeout.ms/2 on each group join.
    """
    from infra.kafka.admin import ensure_topics

    s = base_settings.with_overrides(kafka={
        "bootstrap_servers": tansu.bootstrap, "session_timeout_ms": 2000, "heartbeat_interval_ms": 500,
    })
    ensure_topics(s)
    return s


@pytest.fixture
def isolated_settings(kafka_settings) -> Settings:
    """Per-test topic prefix: each test gets fresh, empty topics on the shared broker."""
    from infra.kafka.admin import ensure_topics

    s = kafka_settings.with_overrides(kafka={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    ensure_topics(s)
    return s


@pytest.fixture(scope="session")
def clickhouse_owner(base_settings, session_dir):
    """The embedded ClickHouse owner (chdb + ClickHouse's HTTP interface) as a real subprocess.

    No real ClickHouse server can be installed here, so this process is also the
    suites' stand-in for one: clients reach it with clickhouse-connect, unchanged.
    Tests use their own databases on it (see ``tests/infra/clickhouse/conftest.py``).
    """
    from infra.app.stack.clickhouse import ChdbServer

    s = base_settings.with_overrides(stack={"data_dir": str(session_dir / "ch-owner")},
                                     clickhouse={"http_port": free_port()})
    owner = ChdbServer(s)
    owner.start(timeout=60)
    yield owner
    owner.stop()


# -- serving: ONE real tritonserver per test session, and contract-following artifacts --------------
# Triton gets the session's Kafka settings (real tansu broker above), so the telemetry emitted inside
# served models really reaches Kafka. Shared by tests/serving and tests/consumers (the deployer).

@pytest.fixture(scope="session")
def triton(kafka_settings, session_dir):
    from infra.app.stack.triton import TritonServer

    s = kafka_settings.with_overrides(
        stack={"triton_grpc_port": free_port(), "triton_http_port": free_port(), "triton_metrics_port": free_port()},
        artifacts={"root": str(session_dir / "artifacts")},
    )
    server = TritonServer(s, repository=str(session_dir / "triton-repo"))
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def serving_settings(triton):
    """Settings whose triton section points at the session server and its repository."""
    return triton.client_settings()


@pytest.fixture(scope="session")
def artifact_store(serving_settings):
    from infra.storage.factory import store_from_settings

    return store_from_settings(serving_settings)


@pytest.fixture(scope="session")
def model_client(triton):
    from serving.client import ModelClient

    client = ModelClient(triton.grpc_url)
    yield client
    client.close()


def registered_value(name: str, version: int, artifact_uri: str, checksum: str, **extra) -> dict:
    """A ModelRegistered value as the training consumer publishes it (only what serving reads varies)."""
    from schemas.events import new_header

    value = {
        "header": new_header("tests.serving"), "model_name": name, "model_version": version,
        "run_id": f"run-{name}-{version}", "dataset_name": "churn", "dataset_version": "v1",
        "artifact_uri": artifact_uri, "checksum": checksum, "task": "binary", "primary_metric": "roc_auc",
        "higher_is_better": True, "metrics": {"roc_auc": 0.8}, "baseline_metrics": {}, "slice_metrics": [],
        "reference_stats": [], "signature_json": "{}", "labels": ["no", "yes"], "params_json": "{}",
        "code_version": "", "report_uri": None,
    }
    value.update(extra)
    return value


@pytest.fixture(scope="session")
def publish_model(artifact_store, session_dir) -> Callable[..., dict]:
    """Write a reference artifact into the artifact store; return its ModelRegistered value.

    ``tamper(dir)`` may damage the files after the checksum was taken (corrupt-artifact tests).
    """
    from serving.reference_model import write_reference_artifact

    def publish(name: str, version: int, seed: int = 0, tamper: Callable[[Path], None] | None = None) -> dict:
        local = session_dir / "exports" / f"{name}-{version}-{seed}"
        checksum = write_reference_artifact(local, model_name=name, version=version, seed=seed)
        if tamper is not None:
            tamper(local)
        key = f"models/{name}/{version}"
        for f in local.iterdir():
            artifact_store.put_file(f"{key}/{f.name}", f)
        return registered_value(name, version, artifact_store.uri(key), checksum)

    return publish


# -- training consumer / search coordinator fixtures ----------------------------------------------------------------
# Real parts only: the session's tansu broker, a local artifact store in tmp_path, the real trainer.

TINY_SPEC = {"epochs": 2, "batch_size": 64, "hidden_sizes": [16], "device": "cpu", "min_slice_rows": 5}


def _churn_signal(n: int = 240, seed: int = 0):
    """A small churn table with real signal (noisy, so the trainer's leakage check passes)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "income": rng.lognormal(3, 0.5, n).round(2),
                       "region": rng.choice(["eu", "us"], n), "plan": rng.choice(["basic", "pro", "max"], n)})
    score = (df["age"] - 40) / 10 + np.where(df["plan"] == "pro", 1.0, -0.5) + rng.normal(0, 1, n)
    df["churned"] = np.where(score > 0, "yes", "no")
    return df


@pytest.fixture
def churn_data():
    """Factory: ``churn_data(n=240, seed=0)`` -> a churn DataFrame with signal (label column 'churned')."""
    return _churn_signal


@pytest.fixture
def one_torch_thread():
    """Tiny models train fastest on one thread; more only spin against other processes on a small machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def train_settings(isolated_settings, tmp_path, one_torch_thread):
    """Fresh topics, a private artifact store and checkpoint dir, a tiny default spec, short leases."""
    return isolated_settings.with_overrides(
        artifacts={"root": str(tmp_path / "artifacts")},
        training={"checkpoint_dir": str(tmp_path / "checkpoints"), "lease_s": 3.0, "default_spec": TINY_SPEC})


@pytest.fixture
def sdk(train_settings):
    """The producers SDK on the test's settings (pushes datasets, publishes DatasetCreated)."""
    from producers.sdk import ModelBus

    client = ModelBus(train_settings)
    yield client
    client.close()


class RunnerThread:
    """A training consumer running in a thread of the test process (same code as ``python -m``)."""

    def __init__(self, settings, group: str | None = None, **kw):
        from consumers.training import build_runner
        from infra.kafka import EventProducer
        from infra.storage.factory import store_from_settings

        self.producer = EventProducer(settings, name="consumers.training")
        self.runner = build_runner(settings, store_from_settings(settings), self.producer, group_id=group, **kw)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.runner.stop()
        self.thread.join(60)

    @property
    def stats(self):
        return self.runner.stats


@pytest.fixture
def training_consumer():
    """``with training_consumer(settings) as c:`` runs a training consumer for the block."""
    return RunnerThread


class EventTail:
    """Reads one topic from the start with a throwaway group; decoded values accumulate in ``events``."""

    def __init__(self, settings, logical_topic: str):
        from schemas.codec import AvroCodec

        self.codec = AvroCodec()
        from confluent_kafka import Consumer

        from infra.kafka.config import consumer_config

        self.consumer = Consumer(consumer_config(settings.kafka, f"tail-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe([settings.topic(logical_topic)])
        self.events: list[dict] = []

    def poll(self, timeout: float = 0.3) -> list[dict]:
        for m in self.consumer.consume(100, timeout):
            if m.error() is None:
                self.events.append(self.codec.decode(m.value()).value)
        return self.events

    def wait(self, pred, timeout: float = 60.0, what: str = "events") -> list[dict]:
        """Poll until ``pred(events)`` is true; fails the test with what was seen otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.poll()):
                return self.events
        summary = [(e.get("status"), e.get("run_id"), e.get("model_name"), e.get("failure_reason"))
                   for e in self.events]
        raise AssertionError(f"timed out waiting for {what}; saw {summary}")

    def close(self):
        self.consumer.close()


@pytest.fixture
def tail():
    """``tail(settings, topic)``: an EventTail closed at the end of the test."""
    made = []

    def make(settings, logical_topic):
        t = EventTail(settings, logical_topic)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


@pytest.fixture
def moto_endpoint(monkeypatch):
    """A real S3 API (moto's server) over HTTP on a free loopback port, with dummy credentials.

    moto stands in for S3/MinIO, which cannot run here; boto3 talks to it over real HTTP.
    """
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.stack)])
def store_on_each_backend(request, tmp_path):
    """The same tests against a local directory and against S3 (moto's real S3 API over HTTP)."""
    from infra.storage import open_store

    if request.param == "local":
        return open_store(str(tmp_path / "artifacts"))
    import boto3

    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = f"store-{uuid.uuid4().hex[:12]}"   # moto servers in one process share their state
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/root", s3_endpoint_url=endpoint, s3_region="us-east-1")
