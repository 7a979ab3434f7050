"""Secrets never show: not in CLI output, error messages, logs, files under the data dir, or Kafka events.

A distinctive value is planted in every ``SecretStr`` setting (found by
introspection, so a secret added later is covered too) and in the S3 secret
key (read by boto3 from the standard AWS variables; ModelBus has no setting for
it), each passed the way an operator passes it: ``MODELBUS_*`` environment
variables. Then real commands, real stack processes and a small real loop run,
and every byte they wrote is searched. The embedded stack must also listen on
loopback only.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
import typing
import uuid
from pathlib import Path

import psutil
import pytest
from pydantic import BaseModel, SecretStr

from infra.app.stack.process import free_port
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODELBUS = str(Path(sys.executable).parent / "modelbus")


def secret_variables() -> list[str]:
    """``MODELBUS_<SECTION>__<FIELD>`` of every SecretStr setting."""
    out = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, sub in model.model_fields.items():
                if sub.annotation is SecretStr or SecretStr in typing.get_args(sub.annotation):
                    out.append(f"MODELBUS_{section.upper()}__{name.upper()}")
    return out


@pytest.fixture(scope="module")
def planted() -> dict[str, str]:
    names = secret_variables()
    assert {"MODELBUS_KAFKA__SASL_PASSWORD", "MODELBUS_KAFKA__SSL_KEY_PASSWORD",
            "MODELBUS_CLICKHOUSE__PASSWORD"} <= set(names)
    values = {name: f"Pl4nted-{name.split('__')[-1].lower()}-{uuid.uuid4().hex}" for name in names}
    values["AWS_SECRET_ACCESS_KEY"] = f"Pl4nted-aws-secret-{uuid.uuid4().hex}"
    return values


def leaks(data: bytes | str, planted: dict[str, str]) -> list[str]:
    """The planted values found in ``data``, as they are or base64-encoded (basic auth, dumps)."""
    raw = data.encode(errors="replace") if isinstance(data, str) else data
    found = []
    for name, value in planted.items():
        for form in (value.encode(), base64.b64encode(value.encode()), value.encode().hex().encode()):
            if form in raw:
                found.append(name)
                break
    return found


def base_env(planted: dict[str, str], data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELBUS_", "AWS_"))}
    env.update(planted)
    env.update({"AWS_ACCESS_KEY_ID": "AKIAMODELBUSTESTS", "AWS_DEFAULT_REGION": "us-east-1",
                "MODELBUS_STACK__DATA_DIR": str(data_dir), "MODELBUS_LOG_LEVEL": "DEBUG",
                "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    env.update(settings)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_commands_and_connection_errors_show_no_secret(planted, tmp_path):
    closed = free_port()
    env = base_env(planted, tmp_path / "data", **{
        "MODELBUS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "MODELBUS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MODELBUS_KAFKA__SASL_MECHANISM": "PLAIN",
        "MODELBUS_KAFKA__SASL_USERNAME": "modelbus",
        # short timeouts so failures come fast; librdkafka dumps its configuration at debug level
        "MODELBUS_KAFKA__EXTRA": json.dumps({"message.timeout.ms": "2000", "debug": "conf,security"}),
        "MODELBUS_CLICKHOUSE__URL": f"http://127.0.0.1:{closed}"})
    s3_env = {**env, "MODELBUS_ARTIFACTS__ROOT": "s3://modelbus-secrets/prefix",
              "MODELBUS_ARTIFACTS__S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}
    csv = tmp_path / "data.csv"
    csv.write_text("x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(40)))
    outcomes = {
        "status": run([MODELBUS, "status"], env),
        "topics": run([MODELBUS, "topics"], env),
        "dataset push (Kafka down)": run([MODELBUS, "dataset", "push", str(csv), "--name", "secrets", "--label", "y"],
                                         env),
        "sql (ClickHouse down)": run([MODELBUS, "sql", "SELECT 1"], env),
        "dataset list (S3 down)": run([MODELBUS, "dataset", "list"], s3_env),
        "training consumer (Kafka down)": run([sys.executable, "-m", "consumers.training", "--idle-timeout", "3"],
                                              env),
    }
    for what, res in outcomes.items():
        assert not leaks(res.stdout + res.stderr, planted), f"{what} printed a secret:\n{res.stdout}{res.stderr}"
    # The error paths really ran (and said why), so the check above is not vacuous.
    assert outcomes["status"].returncode == 1 and "stopped" in outcomes["status"].stdout
    assert outcomes["dataset push (Kafka down)"].returncode == 2
    assert "not delivered" in outcomes["dataset push (Kafka down)"].stderr
    assert outcomes["sql (ClickHouse down)"].returncode != 0
    assert outcomes["dataset list (S3 down)"].returncode == 2      # one clear line, no traceback
    assert "Could not connect to the endpoint URL" in outcomes["dataset list (S3 down)"].stderr
    consumer_log = outcomes["training consumer (Kafka down)"].stderr
    assert "sasl.password = [redacted]" in consumer_log and "Connection refused" in consumer_log
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert not [str(p) for p in written if leaks(p.read_bytes(), planted)]


# -- the embedded stack, consumers and a small loop, all with the planted secrets -----------------------

@pytest.mark.stack
@pytest.mark.slow
def test_stack_logs_files_and_events_hold_no_secret_and_the_stack_listens_on_loopback(planted, tmp_path,
                                                                                      monkeypatch):
    data_dir = tmp_path / "data"
    env = base_env(planted, data_dir, **{
        "MODELBUS_STACK__KAFKA_PORT": str(free_port()), "MODELBUS_STACK__TRITON_GRPC_PORT": str(free_port()),
        "MODELBUS_STACK__TRITON_HTTP_PORT": str(free_port()),
        "MODELBUS_STACK__TRITON_METRICS_PORT": str(free_port()), "MODELBUS_STACK__START_TIMEOUT_S": "120",
        "MODELBUS_CLICKHOUSE__HTTP_PORT": str(free_port()),
        "MODELBUS_KAFKA__SASL_USERNAME": "modelbus",   # PLAINTEXT: the broker works, the secrets ride along
        "MODELBUS_KAFKA__SESSION_TIMEOUT_MS": "2000", "MODELBUS_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "MODELBUS_KAFKA__EXTRA": json.dumps({"debug": "conf"})})
    printed = {}
    up = printed["up"] = run([MODELBUS, "up", "--only", "stack"], env, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        printed["status"] = run([MODELBUS, "status"], env)
        assert printed["status"].returncode == 0, printed["status"].stdout
        for key in [k for k in os.environ if k.startswith(("MODELBUS_", "AWS_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from infra.app.stack.supervisor import Stack
        from infra.settings import load_settings

        stack = Stack(load_settings())
        check_loopback_only(stack)
        events = run_small_loop(stack.settings, tmp_path)
    finally:
        printed["down"] = run([MODELBUS, "down"], env, timeout=120)
    assert printed["down"].returncode == 0

    for what, res in printed.items():
        assert not leaks(res.stdout + res.stderr, planted), f"`modelbus {what}` printed a secret"
    by_type: dict[str, int] = {}
    for topic, key, value, headers in events:
        where = f"an event on {topic}"
        assert not leaks(value or b"", planted), f"{where} carries a secret in its value"
        assert not leaks(key or b"", planted) and not any(leaks(v or b"", planted) for _, v in headers or []), where
        by_type[topic] = by_type.get(topic, 0) + 1
    assert by_type.get(stack.settings.topic("datasets.created"), 0) >= 1
    assert by_type.get(stack.settings.topic("inference.telemetry"), 0) >= 5
    assert by_type.get(stack.settings.topic("training.requested"), 0) >= 1

    files = [p for p in data_dir.rglob("*") if p.is_file()]
    logs = {p.name for p in files if p.parent.name == "logs" and p.stat().st_size > 0}
    assert {"tansu.log", "clickhouse.log", "triton.log", "telemetry-sink.log", "metadata-sink.log"} <= logs
    assert "sasl.password = [redacted]" in (data_dir / "logs" / "telemetry-sink.log").read_text(errors="replace")
    leaked = {str(p.relative_to(data_dir)): leaks(p.read_bytes(), planted) for p in files}
    assert not {p: names for p, names in leaked.items() if names}


def check_loopback_only(stack) -> None:
    """Every listening socket of tansu, the chdb owner, Triton and its stubs is bound to loopback (the default)."""
    assert stack.settings.stack.host == Settings().stack.host == "127.0.0.1"
    for part in stack.parts:
        pid = part.running_pid()
        assert pid, f"{part.name} is not running"
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
        listening = [c.laddr for p in procs for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening, f"{part.name} listens nowhere"
        assert all(is_loopback(addr.ip) for addr in listening), f"{part.name} listens on {listening}"


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)     # ::ffff:127.0.0.1 is IPv4 loopback too
    return (mapped or addr).is_loopback


def run_small_loop(settings: Settings, tmp_path: Path) -> list[tuple]:
    """Deploy a model, serve requests (telemetry), push a dataset, run two consumers; return every event."""
    import pandas as pd

    from bench.bench_soak import deploy_reference_model
    from infra.app.demo.procs import ConsumerGroup
    from infra.clickhouse import connect
    from producers.sdk import ModelBus
    from serving.client import ModelClient
    from serving.reference_model import SAMPLE

    deploy_reference_model(settings, tmp_path, model="secrets")
    with ModelClient(settings.triton.grpc_url) as client:
        for i in range(5):
            client.predict("secrets", SAMPLE, request_id=f"secrets-{i}")
    with ModelBus(settings) as mb:
        frame = pd.DataFrame({"x": [float(i) for i in range(40)], "y": ["a", "b"] * 20})
        mb.push_dataset(frame, name="secrets", label="y")
        mb.request_training("secrets", {"epochs": 1})      # published only: no training consumer runs here
    group = ConsumerGroup(settings)
    try:
        group.start("telemetry-sink", "consumers.telemetry_sink")
        group.start("metadata-sink", "consumers.metadata_sink")
        with connect(settings) as store:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not group.dead():
                rows = store.query_rows("SELECT (SELECT count() FROM inference_telemetry) AS t, "
                                        "(SELECT count() FROM datasets) AS d")[0]
                if rows["t"] >= 5 and rows["d"] >= 1:
                    break
                time.sleep(0.3)
            assert rows["t"] >= 5 and rows["d"] >= 1, (rows, group.dead())
    finally:
        group.stop()
    return read_every_event(settings)


def read_every_event(settings: Settings) -> list[tuple]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from infra.kafka.config import consumer_config

    c = Consumer(consumer_config(settings.kafka, f"secrets-{uuid.uuid4().hex[:8]}"))
    try:
        topics = c.list_topics(timeout=10).topics
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, md in topics.items() for p in md.partitions])
        out, idle_since = [], time.monotonic()
        while time.monotonic() - idle_since < 2.0:
            msgs = [m for m in c.consume(500, 0.3) if m.error() is None]
            if msgs:
                idle_since = time.monotonic()
            out += [(m.topic(), m.key(), m.value(), m.headers()) for m in msgs]
        return out
    finally:
        c.close()
