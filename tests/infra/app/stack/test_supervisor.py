"""`modelbus up/status/down` on real processes: tansu, the chdb owner and Triton, on free loopback ports."""

from __future__ import annotations

import socket

import pytest

from infra.app.stack.process import free_port
from infra.errors import ConfigError
from infra.settings import load_settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture
def stack_settings(tmp_path, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("MODELBUS_")]:
        monkeypatch.delenv(key)
    return load_settings(
        stack={"data_dir": str(tmp_path / "data"), "kafka_port": free_port(), "triton_grpc_port": free_port(),
               "triton_http_port": free_port(), "triton_metrics_port": free_port(), "start_timeout_s": 90},
        clickhouse={"http_port": free_port()},
        kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500},
    )


def test_up_status_second_up_and_down(stack_settings):
    from infra.app.stack.supervisor import Stack
    from infra.clickhouse import connect
    from infra.kafka import EventProducer
    from infra.kafka.admin import admin_client

    stack = Stack(stack_settings)
    try:
        statuses = {s.name: s.state for s in stack.up()}
        assert statuses == {"kafka": "running", "clickhouse": "running", "triton": "running"}
        s = stack.settings
        topics = admin_client(s).list_topics(timeout=10).topics
        assert s.topic("datasets.created") in topics and s.topic("datasets.created") + ".dlq" in topics
        EventProducer(s, name="test").publish(s.topic("monitoring.drift"), "DriftDetected", {
            "header": __import__("schemas.events", fromlist=["x"]).new_header("t"), "model_name": "m",
            "model_version": 1, "feature": "f", "window_start": 1, "window_end": 2, "psi": 0.1, "test": "ks",
            "statistic": 0.1, "p_value": 0.5, "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 1})
        with connect(s) as store:   # the migrated schema answers through the owner's HTTP interface
            assert store.query_rows("SELECT count() AS n FROM system.tables WHERE database = {d:String} "
                                    "AND name = 'inference_telemetry'", {"d": s.clickhouse.database})[0]["n"] == 1
        pids = {p.name: p.pid for p in stack.status()}
        again = Stack(stack_settings).up()          # detects the running parts instead of clashing
        assert {p.name: p.pid for p in again} == pids
    finally:
        stack.down()
    assert {p.state for p in stack.status()} == {"stopped"}


def test_port_in_use_is_explained(stack_settings):
    from infra.app.stack.supervisor import Stack

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", stack_settings.stack.kafka_port))
        blocker.listen(1)
        with pytest.raises(ConfigError, match=f"port 127.0.0.1:{stack_settings.stack.kafka_port} is already in use"):
            Stack(stack_settings).up()


def test_stale_pid_file_is_detected(stack_settings):
    from infra.app.stack.supervisor import Stack

    stack = Stack(stack_settings)
    stack.kafka.pidfile.write(999_999)          # no such process: a stale file from a crashed run
    assert stack.kafka.running_pid() is None and not stack.kafka.pidfile.path.exists()
