"""Sink fixtures: a real tansu broker (tests/conftest.py) and the embedded ClickHouse owner as a real
subprocess, which is also our stand-in for a real ClickHouse server (none can be installed here).
Each test gets fresh topics (``isolated_settings``) and its own ClickHouse database."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from confluent_kafka import Consumer

from infra.kafka.config import consumer_config
from tests.clickhouse_db import migrated_store, private_settings


@pytest.fixture
def sink_settings(isolated_settings, clickhouse_owner):
    """Settings pointing at the session broker (fresh topics) and a test-private ClickHouse database."""
    return private_settings(isolated_settings, clickhouse_owner.url)


@pytest.fixture
def ch(sink_settings):
    with migrated_store(sink_settings) as store:
        yield store


@pytest.fixture
def sink_env(sink_settings):
    """Environment for a sink subprocess: the same settings, passed the way an operator would."""
    s = sink_settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update({
        "MODELBUS_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "MODELBUS_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
        "MODELBUS_KAFKA__SESSION_TIMEOUT_MS": str(s.kafka.session_timeout_ms),
        "MODELBUS_KAFKA__HEARTBEAT_INTERVAL_MS": str(s.kafka.heartbeat_interval_ms),
        "MODELBUS_CLICKHOUSE__URL": s.clickhouse.url,
        "MODELBUS_CLICKHOUSE__DATABASE": s.clickhouse.database,
        "MODELBUS_STACK__DATA_DIR": s.stack.data_dir,
        "PYTHONPATH": os.getcwd(),
    })
    return env


@pytest.fixture
def read_topic():
    """``read_topic(settings, topic, expect)``: messages of a topic, read by a throwaway group."""
    def read(settings, topic: str, expect: int, timeout: float = 15.0) -> list:
        c = Consumer(consumer_config(settings.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
        c.subscribe([topic])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            out += [m for m in c.consume(100, 0.5) if m.error() is None]
        c.close()
        return out
    return read


@pytest.fixture
def deployer_settings(isolated_settings, serving_settings):
    """Fresh topics (per-test prefix) + the session's Triton and artifact store."""
    return isolated_settings.with_overrides(triton=serving_settings.triton.model_dump(),
                                            artifacts=serving_settings.artifacts.model_dump())
