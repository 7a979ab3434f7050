"""The deployer as a real subprocess against a real tansu broker and a real tritonserver.

Each scenario drives the deployer only through Kafka events and observes it
through Kafka topics and Triton, the way the rest of the platform sees it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from typer.testing import CliRunner

from consumers.deploy_events import DEPLOYED, decision_event_id
from consumers.deployer import ROLLBACK_TABLE, changelog_topic
from infra.app.cli.models import app as serving_cli
from infra.app.stack.process import free_port
from infra.app.stack.triton import TritonServer, settings_env
from infra.kafka import EventProducer
from infra.kafka.config import consumer_config
from infra.kafka.topics import MODELS_DEPLOYED, MODELS_REGISTERED, MODELS_REJECTED, dlq_name
from schemas.codec import AvroCodec, SerializationError
from serving.client import ModelClient
from serving.reference_model import SAMPLE, build_module, run_module

pytestmark = [pytest.mark.stack, pytest.mark.slow]

BASELINES = {"majority": {"roc_auc": 0.5}, "linear": {"roc_auc": 0.6}}


class TopicLog:
    """Every event of a topic since its beginning, decoded (a throwaway reader that keeps up)."""

    def __init__(self, settings, logical: str, *, full_name: str | None = None):
        self.name = full_name or settings.topic(logical)
        self.c = Consumer(consumer_config(settings.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
        parts = self.c.list_topics(self.name, timeout=10).topics[self.name].partitions
        self.c.assign([TopicPartition(self.name, p, OFFSET_BEGINNING) for p in parts])
        self.codec = AvroCodec()
        self.messages: list = []

    @property
    def values(self) -> list[dict]:
        out = []
        for m in self.messages:
            try:
                out.append(self.codec.decode(m.value()).value)
            except SerializationError:
                continue
        return out

    def poll(self, timeout: float = 0.3) -> None:
        self.messages += [m for m in self.c.consume(100, timeout) if m.error() is None]

    def wait(self, predicate, timeout: float = 60.0, why: str = "") -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self.values):
                return self.values
        raise AssertionError(f"{self.name}: {why or 'condition'} not met in {timeout:.0f}s; have "
                             f"{[(v.get('model_version'), v.get('action') or v.get('stage')) for v in self.values]}")

    def close(self) -> None:
        self.c.close()


class DeployerProcess:
    """``python -m consumers.deployer`` as a real child process, logging to a file."""

    def __init__(self, settings, log_path: Path):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
        self.env.update(settings_env(settings), PYTHONPATH=os.getcwd(), MODELBUS_LOG_LEVEL="INFO")
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, fault: str | None = None) -> DeployerProcess:
        env = dict(self.env, **({"MODELBUS_FAULT": fault} if fault else {}))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "consumers.deployer", "--reconcile-interval", "1"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())
        log.close()
        return self

    def log(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_exit(self, timeout: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"deployer still running after {timeout:.0f}s:\n{self.log()}") from None

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def candidate(publish_model, name: str, version: int, auc: float, *, seed: int | None = None, tamper=None) -> dict:
    """A registered model artifact (reference TorchScript model) with gate-relevant metrics."""
    value = publish_model(name, version, seed=version if seed is None else seed, tamper=tamper)
    value.update(metrics={"roc_auc": auc, "accuracy": auc - 0.1}, baseline_metrics=BASELINES,
                 slice_metrics=[{"column": "region", "value": "EU", "count": 50, "metrics": {"roc_auc": 0.8}}])
    return value


def outputs_of(seed: int) -> np.ndarray:
    return run_module(build_module(seed=seed), SAMPLE)[0]


def serves(client: ModelClient, name: str, seed: int) -> bool:
    return bool(np.allclose(client.predict(name, SAMPLE)["scores__0"], outputs_of(seed), rtol=1e-5))


def rewind(settings, group: str, topic: str) -> None:
    """Commit offset 0 on every partition for ``group``: its next start replays the topic from the beginning."""
    c = Consumer(consumer_config(settings.kafka, group))
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.commit(offsets=[TopicPartition(topic, p, 0) for p in parts], asynchronous=False)
    assert all(tp.offset == 0 for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10))
    c.close()


def wait_until(predicate, timeout: float, why: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - e.g. Triton still starting
            pass
        time.sleep(0.3)
    raise AssertionError(f"{why} not reached in {timeout:.0f}s")


def test_gate_deploy_duplicates_crash_after_load_and_restart(deployer_settings, publish_model, model_client,
                                                              tmp_path):
    s = deployer_settings
    name = f"dep-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(s, name="tests")
    registered_topic = s.topic(MODELS_REGISTERED)

    def register(value) -> None:
        producer.publish(registered_topic, "ModelRegistered", value, key=name)

    deployed, rejected = TopicLog(s, MODELS_DEPLOYED), TopicLog(s, MODELS_REJECTED)
    proc = DeployerProcess(s, tmp_path / "deployer.log")
    try:
        # 1. Killed between loading v1 into Triton and announcing it.
        v1 = candidate(publish_model, name, 1, 0.80)
        register(v1)
        assert proc.start(fault="deployer.after_load").wait_exit() == -signal.SIGKILL, proc.log()
        assert model_client.is_ready(name, 1)
        deployed.poll(1.0)
        assert deployed.values == []

        # 2. The restarted deployer announces it exactly once, with every gate check and its numbers.
        proc.start()
        (ev,) = deployed.wait(lambda vs: len(vs) >= 1, why="v1 announced")
        assert str(ev["header"]["event_id"]) == decision_event_id(name, 1, DEPLOYED)
        assert (ev["model_version"], ev["action"], ev["previous_version"]) == (1, "promote", None)
        assert ev["metric_value"] == pytest.approx(0.80) and ev["champion_metric"] is None
        assert ev["checksum"] == v1["checksum"] and ev["metrics"]["roc_auc"] == pytest.approx(0.80)
        assert str(ev["header"]["parent_event_ids"][0]) == v1["header"]["event_id"]
        checks = {c["name"]: c for c in ev["checks"]}
        linear = checks["beats_baseline:linear"]
        assert linear["passed"] and (linear["reference_value"], linear["rule"]) == (0.6, "non_inferiority")
        assert linear["threshold"] == pytest.approx(0.59)   # unpaired: this hand-made event has no test predictions
        assert serves(model_client, name, seed=1)

        # 3. A worse candidate is rejected at the gate with the failing numbers; v1 keeps serving.
        register(candidate(publish_model, name, 2, 0.75))
        rej = rejected.wait(lambda vs: len(vs) >= 1, why="v2 rejected")[0]
        assert (rej["model_version"], rej["stage"], rej["champion_version"]) == (2, "gate", 1)
        failed = [c for c in rej["checks"] if not c["passed"]]
        assert [c["name"] for c in failed] == ["beats_champion"]
        # threshold: 0.80 - margin
        assert failed[0]["value"] == pytest.approx(0.75) and failed[0]["threshold"] == pytest.approx(0.79)
        assert "beats_champion" in rej["reason"] and "0.75" in rej["reason"]
        assert serves(model_client, name, seed=1) and not model_client.is_ready(name, 2)

        # 4. A better candidate with a corrupt artifact never serves.
        corrupt = candidate(publish_model, name, 3, 0.85, tamper=lambda d: (d / "model.pt").write_bytes(b"junk"))
        register(corrupt)
        rej = rejected.wait(lambda vs: len(vs) >= 2, why="v3 rejected")[1]
        assert (rej["model_version"], rej["stage"], rej["champion_version"]) == (3, "artifact", 1)
        assert "checksum mismatch" in rej["reason"] and all(c["passed"] for c in rej["checks"])
        assert serves(model_client, name, seed=1)

        # 5. The same event twice more and poison; a sentinel behind them (same key: same partition, in order).
        register(v1)
        register(v1)
        producer.send_raw(registered_topic, b"\x00not avro", name.encode())
        producer.flush()
        register(candidate(publish_model, name, 4, 0.70))
        rejected.wait(lambda vs: len(vs) >= 3, why="sentinel v4 rejected")
        deployed.poll(1.0)
        assert [v["model_version"] for v in deployed.values] == [1]
        assert [v["model_version"] for v in rejected.values] == [2, 3, 4]
        dlq = TopicLog(s, "", full_name=dlq_name(registered_topic))
        dlq.wait(lambda _: len(dlq.messages) >= 1, why="poison dead-lettered")
        dlq.close()

        # 6. Restart as a full replay (group offsets back to 0) with v1 gone from Triton: reconciled at start,
        #    champion recovered from the changelog, nothing announced twice.
        assert proc.stop() == 0, proc.log()
        rewind(s, f"{s.kafka.topic_prefix}.deployer", registered_topic)
        model_client.unload_model(name)
        wait_until(lambda: not model_client.is_ready(name, 1), 30, "v1 unloaded")
        proc.start()
        wait_until(lambda: model_client.is_ready(name, 1), 60, "v1 reloaded by reconciliation")
        assert serves(model_client, name, seed=1)
        register(candidate(publish_model, name, 5, 0.78))   # beats baselines, not the recovered champion
        rej = rejected.wait(lambda vs: len(vs) >= 4, why="v5 rejected")[3]
        assert (rej["model_version"], rej["stage"], rej["champion_version"]) == (5, "gate", 1)
        assert rej["champion_metric"] == pytest.approx(0.80)
        deployed.poll(0.5)
        assert [v["model_version"] for v in deployed.values] == [1], "reconciliation publishes no events"
        assert [v["model_version"] for v in rejected.values] == [2, 3, 4, 5], "the replay announced nothing again"
        assert "stage=reconcile" in proc.log_path.read_text()
    finally:
        proc.stop()
        deployed.close()
        rejected.close()


@pytest.fixture
def own_triton(deployer_settings, tmp_path):
    """A second tritonserver this test may kill; the session's server keeps serving other tests."""
    s = deployer_settings.with_overrides(
        stack={"data_dir": str(tmp_path / "data"), "triton_grpc_port": free_port(), "triton_http_port": free_port(),
               "triton_metrics_port": free_port()})
    server = TritonServer(s, repository=str(tmp_path / "repo"))
    server.start(timeout=60)
    yield server
    pid = server.running_pid()
    if pid:   # nothing to unload gracefully in a throwaway server: skip Triton's exit timeout
        os.killpg(pid, signal.SIGKILL)
    server.stop()


def test_rollback_sets_the_champion_and_a_restarted_triton_is_reconciled(own_triton, publish_model, tmp_path):
    s = own_triton.client_settings()
    name = f"rb-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(s, name="tests")
    deployed, rejected = TopicLog(s, MODELS_DEPLOYED), TopicLog(s, MODELS_REJECTED)
    client = ModelClient(own_triton.grpc_url)
    proc = DeployerProcess(s, tmp_path / "deployer.log")
    try:
        for version, auc in ((1, 0.80), (2, 0.90)):
            producer.publish(s.topic(MODELS_REGISTERED), "ModelRegistered",
                             candidate(publish_model, name, version, auc), key=name)
        proc.start()
        deployed.wait(lambda vs: len(vs) >= 2, timeout=90, why="v1 and v2 promoted")
        assert serves(client, name, seed=2)

        # `modelbus rollback` serves v1 again and announces it; the deployer takes v1 as its champion.
        res = CliRunner().invoke(serving_cli, ["rollback", name], env=settings_env(s))
        assert res.exit_code == 0, res.output
        rb = deployed.wait(lambda vs: len(vs) >= 3, why="rollback announced")[2]
        assert (rb["action"], rb["model_version"], rb["previous_version"]) == ("rollback", 1, 2)
        assert rb["metrics"]["roc_auc"] == pytest.approx(0.80) and rb["checksum"]
        assert serves(client, name, seed=1)
        table = TopicLog(s, "", full_name=changelog_topic(s, ROLLBACK_TABLE))
        table.wait(lambda _: len(table.messages) >= 1, why="deployer recorded the rollback")
        table.close()

        # The gate now measures candidates against v1: v3 loses to v1, and the rejection names v1 and its metric.
        producer.publish(s.topic(MODELS_REGISTERED), "ModelRegistered", candidate(publish_model, name, 3, 0.79),
                         key=name)
        rej = rejected.wait(lambda vs: len(vs) >= 1, why="v3 rejected")[0]
        assert (rej["model_version"], rej["stage"], rej["champion_version"]) == (3, "gate", 1)
        assert rej["champion_metric"] == pytest.approx(0.80)

        # Triton killed, the model's repository files gone: the running deployer restores the champion (v1,
        # the rollback target) from the artifact store, and publishes nothing new.
        os.killpg(own_triton.running_pid(), signal.SIGKILL)   # the server and its model stubs, no shutdown
        own_triton.stop()
        shutil.rmtree(Path(own_triton.repository) / name)
        own_triton.start(timeout=60)
        assert not client.is_ready(name)
        wait_until(lambda: serves(client, name, seed=1), 60, "v1 served again after the Triton restart")
        assert client.is_ready(name, 1) and not client.is_ready(name, 2)
        deployed.poll(0.5)
        assert len(deployed.values) == 3
        assert "stage=reconcile" in proc.log_path.read_text()
    finally:
        proc.stop()
        deployed.close()
        rejected.close()
        client.close()
