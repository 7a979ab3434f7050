"""Shared fixtures for the embedded stack.

Stack fixtures start the REAL parts (tansu broker here; Triton and the chdb
owner in their packages' conftest files) once per test session on free loopback
ports, so suites never clash with a developer's running `modelbus up`.
"""

from __future__ import annotations

import os
import uuid

import pytest

from infra.settings import Settings, load_settings
from infra.stack.process import free_port


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
    from infra.stack.tansu import TansuBroker

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
