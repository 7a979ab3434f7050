"""The deployer after its broker state is gone (issue 16, fault 4): real deployer process, tansu, Triton, ClickHouse.

A restarted embedded broker comes back without the deployer's changelog or announcements; to a restarted
deployer that is exactly a fresh topic prefix, while the Triton repository and ClickHouse keep what was
deployed. The deployer used to gate the next candidate against "no champion" and promote a worse model.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from consumers.metadata_sink import build_runner
from infra.app.stack.process import free_port
from infra.app.stack.supervisor import Stack
from infra.kafka import EventProducer
from infra.kafka.admin import ensure_topics
from infra.kafka.topics import MODELS_DEPLOYED, MODELS_REGISTERED, MODELS_REJECTED
from tests.clickhouse_db import migrated_store, private_settings

from .test_deployer import DeployerProcess, TopicLog, candidate, serves, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture
def with_clickhouse(deployer_settings, clickhouse_owner):
    s = private_settings(deployer_settings, clickhouse_owner.url)
    with migrated_store(s) as store:
        yield s, store


def _sink(settings, store):
    runner = build_runner(settings, store)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def test_champion_is_rebuilt_from_triton_and_clickhouse_when_the_changelog_is_gone(with_clickhouse, publish_model,
                                                                                    model_client, tmp_path):
    s, store = with_clickhouse
    name = f"champ-{uuid.uuid4().hex[:6]}"
    proc = DeployerProcess(s, tmp_path / "deployer.log")
    sink, sink_thread = _sink(s, store)
    deployed = TopicLog(s, MODELS_DEPLOYED)
    try:
        proc.start()
        EventProducer(s, name="tests").publish(s.topic(MODELS_REGISTERED), "ModelRegistered",
                                               candidate(publish_model, name, 1, 0.80), key=name)
        deployed.wait(lambda vs: [v["model_version"] for v in vs] == [1], why="v1 deployed")
        wait_until(lambda: store.query_rows("SELECT count() AS n FROM deployments WHERE model_name = {n:String}",
                                            {"n": name})[0]["n"] == 1, 30, "v1's deployment stored")
        assert proc.stop() == 0, proc.log()
    finally:
        sink.stop()
        sink_thread.join(30)
        deployed.close()
        proc.stop()

    # The broker lost everything: new, empty topics (no changelog, no announcements); Triton and ClickHouse kept.
    after = s.with_overrides(kafka={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    ensure_topics(after)
    proc = DeployerProcess(after, tmp_path / "deployer-after.log")
    rejected, deployed = TopicLog(after, MODELS_REJECTED), TopicLog(after, MODELS_DEPLOYED)
    try:
        proc.start()
        worse = candidate(publish_model, name, 2, 0.75)   # beats the baselines, not the serving v1
        EventProducer(after, name="tests").publish(after.topic(MODELS_REGISTERED), "ModelRegistered", worse, key=name)
        rej = rejected.wait(lambda vs: len(vs) >= 1, timeout=90, why="v2 rejected")[0]
        assert (rej["model_version"], rej["stage"], rej["champion_version"]) == (2, "gate", 1)
        assert rej["champion_metric"] == pytest.approx(0.80)
        deployed.poll(0.5)
        assert deployed.values == []
        assert serves(model_client, name, seed=1)
        assert "rebuilt from the Triton repository and ClickHouse: v1" in proc.log_path.read_text()
    finally:
        proc.stop()
        rejected.close()
        deployed.close()


class BrokerOnly(Stack):
    """The real supervisor, limited to its broker part (the session's Triton and ClickHouse serve the rest)."""

    @property
    def parts(self) -> list:
        return [self.kafka]


def test_deployer_survives_a_broker_restart_and_keeps_its_champion(with_clickhouse, publish_model, model_client,
                                                                    tmp_path):
    base, store = with_clickhouse
    s = base.with_overrides(stack={"data_dir": str(tmp_path / "data"), "kafka_port": free_port()},
                            kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500,
                                   "faust_recovery_stall_s": 15})
    stack = BrokerOnly(s)
    stack.up()
    s = s.with_overrides(kafka={"bootstrap_servers": stack.settings.kafka.bootstrap_servers})   # Triton: the session's
    name = f"restart-{uuid.uuid4().hex[:6]}"
    proc = DeployerProcess(s, tmp_path / "deployer.log")
    sink, sink_thread = _sink(s, store)
    try:
        proc.start()
        EventProducer(s, name="tests").publish(s.topic(MODELS_REGISTERED), "ModelRegistered",
                                               candidate(publish_model, name, 1, 0.80), key=name)
        deployed = TopicLog(s, MODELS_DEPLOYED)
        deployed.wait(lambda vs: [v["model_version"] for v in vs] == [1], why="v1 deployed")
        deployed.close()
        wait_until(lambda: store.query_rows("SELECT count() AS n FROM deployments WHERE model_name = {n:String}",
                                            {"n": name})[0]["n"] == 1, 30, "v1's deployment stored")

        stack.kafka.stop()        # the broker goes away with every topic, changelog and offset
        time.sleep(5)
        stack.up()                # same port, empty broker, catalogue created again
        time.sleep(10)            # faust rebalances and recovers its tables from the new, empty changelogs
        assert proc.proc.poll() is None, f"deployer exited:\n{proc.log()}"

        EventProducer(s, name="tests").publish(s.topic(MODELS_REGISTERED), "ModelRegistered",
                                               candidate(publish_model, name, 2, 0.75), key=name)
        rejected = TopicLog(s, MODELS_REJECTED)
        rej = rejected.wait(lambda vs: len(vs) >= 1, timeout=120, why="v2 rejected after the restart")[0]
        rejected.close()
        assert (rej["model_version"], rej["champion_version"]) == (2, 1)
        assert serves(model_client, name, seed=1) and proc.proc.poll() is None
        assert "ConsistencyError" not in proc.log_path.read_text()

        # A second deployer joins after the restart: the group rebalances and both recover their tables from the
        # new changelogs. One partition there reports a record that no fetch returns; without the recovery
        # watchdog both deployers waited on it for good and decided nothing. The next candidate is still
        # decided, against v1.
        second = DeployerProcess(s, tmp_path / "deployer-2.log").start()
        time.sleep(10)
        EventProducer(s, name="tests").publish(s.topic(MODELS_REGISTERED), "ModelRegistered",
                                               candidate(publish_model, name, 3, 0.70), key=name)
        rejected = TopicLog(s, MODELS_REJECTED)
        rej = rejected.wait(lambda vs: 3 in [v["model_version"] for v in vs], timeout=150,
                            why="v3 decided after the rebalance")
        rejected.close()
        assert [(v["model_version"], v["champion_version"]) for v in rej if v["model_version"] == 3] == [(3, 1)]
        assert proc.proc.poll() is None and second.proc.poll() is None, (proc.log(), second.log())
        logs = proc.log_path.read_text() + second.log_path.read_text()
        assert "ConsistencyError" not in logs and "Traceback" not in logs
    finally:
        if "second" in locals():
            second.stop()
        proc.stop()
        sink.stop()
        sink_thread.join(30)
        stack.down()
