"""Serving fixtures: the session's Triton, artifact store and ``publish_model`` live in tests/conftest.py
(the deployer's tests in tests/consumers share the same server); this file keeps serving-only state.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest


@pytest.fixture(scope="session")
def deployed_churn(serving_settings, artifact_store, publish_model, model_client):
    """Model 'churn' version 1 deployed once for the read-only tests."""
    from serving.deploy import deploy

    result = deploy(publish_model("churn", 1), serving_settings, artifact_store, client=model_client)
    assert result.ok, result.reason
    return result


@pytest.fixture(scope="session")
def telemetry_events():
    """``read(settings, model, request_ids)``: the InferenceTelemetry events of those requests, by request id.

    Reads the telemetry topic from the beginning until every id was seen (or 30 s
    passed), checking that each event is keyed by its model name.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from infra.kafka.config import consumer_config
    from infra.kafka.topics import INFERENCE_TELEMETRY
    from schemas.codec import AvroCodec

    def read(settings, model: str, want: set[str], timeout: float = 30.0) -> dict[str, dict]:
        topic = settings.topic(INFERENCE_TELEMETRY)
        consumer = Consumer(consumer_config(settings.kafka, f"tests-telemetry-{uuid.uuid4().hex[:8]}"))
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        codec, found = AvroCodec(), {}
        deadline = time.monotonic() + timeout
        try:
            while want - set(found) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                value = codec.decode(msg.value(), expected="InferenceTelemetry").value
                if value["request_id"] in want:
                    assert msg.key() == model.encode()
                    found[value["request_id"]] = value
        finally:
            consumer.close()
        return found

    return read


class Traffic:
    """Clients calling ``model`` in a loop, each answer classified by which expected output it matches."""

    def __init__(self, client, model: str, expected: dict, threads: int = 4):
        from serving.reference_model import SAMPLE

        self.seen = {key: 0 for key in (*expected, "other")}
        self.failures: list[str] = []
        self._stop = threading.Event()

        def loop():
            from serving.errors import ServingError

            while not self._stop.is_set():
                try:
                    out = client.predict(model, SAMPLE)["scores__0"]
                except ServingError as exc:
                    self.failures.append(str(exc))
                    continue
                match = [k for k, want in expected.items() if np.allclose(out, want, rtol=1e-5)]
                self.seen[match[0] if match else "other"] += 1

        self._threads = [threading.Thread(target=loop) for _ in range(threads)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture
def traffic(model_client):
    """``with traffic(model, {"v1": scores, "v2": scores}) as t:`` switch versions, then check t.seen / t.failures."""
    return lambda model, expected: Traffic(model_client, model, expected)
