"""CloudEvents Kafka headers (binary content mode) on every record ModelBus writes, read back from a real broker."""

from __future__ import annotations

import datetime as dt

import pytest

from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka import cloudevents as CE
from infra.kafka.topics import CATALOGUE, INFERENCE_TELEMETRY, MONITORING_DRIFT, dlq_name
from schemas import catalog
from tests.event_samples import samples

from .conftest import read_all, wait_for


def _event_time_us(when: str) -> int:
    parsed = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None and when.endswith("Z")
    return (parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def assert_cloudevent(msg, event_type: str, value: dict) -> None:
    """The record's headers describe the event in its value, as the binding's binary mode says."""
    h = {k: v.decode() for k, v in msg.headers()}
    header = value["header"]
    assert h["ce_specversion"] == "1.0"
    assert h["ce_id"] == str(header["event_id"])
    assert h["ce_type"] == f"modelbus.events.{event_type}"
    assert h["ce_source"] == f"/modelbus/{header['producer']}"
    assert _event_time_us(h["ce_time"]) == header["event_time"]
    assert h["content-type"] == "application/avro"
    assert h["ce_avrofingerprint"] == catalog().get(event_type).fingerprint.hex() == msg.value()[2:10].hex()


def test_rfc3339_is_utc_with_microseconds():
    assert CE.rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert CE.rfc3339(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"
    assert CE.rfc3339(dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == \
        "2024-01-02T01:04:05.000006Z"


@pytest.mark.stack
def test_every_catalogue_topic_carries_cloudevents_headers(isolated_settings):
    s = isolated_settings
    producer = EventProducer(s, name="tests")
    sent = {}
    for spec in CATALOGUE:
        for event_type in spec.events:
            value = samples(event_type, 1)[0]
            producer.send(s.topic(spec.name), event_type, value, key="k")
            sent[s.topic(spec.name)] = (event_type, value)
    producer.flush()
    for topic, (event_type, value) in sent.items():
        (msg,) = read_all(s, topic, 1)
        assert_cloudevent(msg, event_type, value)


@pytest.mark.stack
def test_in_model_telemetry_carries_cloudevents_headers(isolated_settings):
    from serving.telemetry import TelemetryEmitter, telemetry_event

    s = isolated_settings
    event = telemetry_event(request_id="r-ce", model_name="churn", model_version=1, received_at=1_700_000_000_000_000,
                            completed_at=1_700_000_000_000_450, stages={"model": 400}, batch_size=1)
    em = TelemetryEmitter(s, "ce", buffer_size=10)
    em.emit(event)
    assert em.close(timeout=15.0)["delivered"] == 1
    (msg,) = read_all(s, s.topic(INFERENCE_TELEMETRY), 1)
    assert_cloudevent(msg, "InferenceTelemetry", event)


@pytest.mark.stack
def test_dead_letters_are_cloudevents_that_keep_the_original_reachable(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    misrouted = samples("ModelDeployed", 1)[0]
    runner = ConsumerRunner(s, group_id="g-ce", topics=[topic], handler=lambda env: None, name="ce")
    with runner_thread(runner):
        producer.send(topic, "ModelDeployed", misrouted, key="m")
        producer.send_raw(topic, b"\x00garbage", b"m")
        producer.flush()
        assert wait_for(lambda: runner.stats.dead_lettered == 2)
    dead = {m.value(): {k: v.decode() for k, v in m.headers()} for m in read_all(s, dlq_name(topic), 2)}
    assert len(dead) == 2
    for h in dead.values():
        assert h["ce_specversion"] == "1.0" and h["ce_type"] == "modelbus.deadletter"
        assert h["ce_source"] == "/modelbus/g-ce" and h["ce_id"] and _event_time_us(h["ce_time"]) > 0
    typed = next(h for v, h in dead.items() if v != b"\x00garbage")
    assert typed["modelbus.dlq.reason"] == "unexpected_type"
    assert typed["ce_originalid"] == misrouted["header"]["event_id"]
    assert typed["ce_originaltype"] == "modelbus.events.ModelDeployed"
    assert typed["content-type"] == "application/avro"
    assert typed["ce_avrofingerprint"] == catalog().get("ModelDeployed").fingerprint.hex()
    garbage = dead[b"\x00garbage"]
    assert garbage["content-type"] == "application/octet-stream" and "ce_originalid" not in garbage
    assert typed["ce_id"] != garbage["ce_id"]
