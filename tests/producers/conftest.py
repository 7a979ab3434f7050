"""Fixtures for the dataset manager: tiny frames, a local store, a moto S3 server, broker helpers."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka import topics
from infra.kafka.config import consumer_config
from infra.storage import open_store
from schemas.codec import AvroCodec


def churn_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """A small churn table: numbers exactly representable in CSV, two classes, a slice column."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "income": np.round(rng.normal(50, 10, n), 2),
        "region": rng.choice(["eu", "us", "apac"], n),
        "plan": rng.choice(["basic", "pro"], n),
        "churned": rng.choice(["yes", "no"], n, p=[0.35, 0.65]),
    })


SPEC = {"name": "churn", "label": "churned", "slice_by": ["region"]}


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "artifacts"))


@pytest.fixture
def frame() -> pd.DataFrame:
    return churn_frame()


@pytest.fixture
def csv_file(tmp_path, frame):
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def mb(isolated_settings, tmp_path):
    """SDK client on the session's real tansu broker (fresh topics) and a fresh local artifact store."""
    from producers.sdk import ModelBus

    settings = isolated_settings.with_overrides(artifacts={"root": str(tmp_path / "artifacts")})
    client = ModelBus(settings)
    yield client
    client.close()


def module_client(kafka_settings, tmp_path_factory, prefix: str):
    """An SDK client on its own topics and store, shared by one test module (cheaper than one per test)."""
    from infra.kafka.admin import ensure_topics
    from producers.sdk import ModelBus

    settings = kafka_settings.with_overrides(kafka={"topic_prefix": f"{prefix}{uuid.uuid4().hex[:8]}"},
                                             artifacts={"root": str(tmp_path_factory.mktemp(prefix) / "store")})
    ensure_topics(settings)
    return ModelBus(settings)


def topic_size(settings, logical: str = topics.DATASETS_CREATED) -> int:
    """Messages ever written to a topic (sum of high watermarks): an exact, instant 'was anything published'."""
    topic = settings.topic(logical)
    c = Consumer(consumer_config(settings.kafka, f"probe-{uuid.uuid4().hex[:8]}"))
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        c.close()


def read_events(settings, logical: str, expect: int, timeout: float = 15.0, settle: float = 0.0) -> list:
    """Decoded events of a topic read back by a throwaway consumer group (a real broker round trip).

    ``settle`` keeps reading that long after ``expect`` events arrived, to catch unexpected extras.
    """
    topic = settings.topic(logical)
    c = Consumer(consumer_config(settings.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    c.subscribe([topic])
    codec, out = AvroCodec(), []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in c.consume(100, 0.3):
                if m.error() is None:
                    d = codec.decode(m.value())
                    out.append((m.key().decode() if m.key() else None, d.event_type, d.value))
            if len(out) >= expect:
                if settle <= 0:
                    break
                deadline, settle = time.monotonic() + settle, 0
    finally:
        c.close()
    return out


@pytest.fixture
def moto_s3(moto_endpoint):
    """The shared moto S3 server with the bucket these tests write to."""
    import boto3

    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="modelbus-test")
    return moto_endpoint
