"""A broker stalled for longer than message.timeout.ms (SIGSTOP, as a frozen VM or a GC pause would) (issue 16,
fault 1).

Events queued during the stall time out (reported, never silent). Afterwards the idempotent producer's session is
fenced: the broker answered every later event with PRODUCER_FENCED until the process restarted. Both producers
must notice it, replace their client and deliver later events, each once. Each test runs its OWN tansu on a
free port and pauses that process (never the session broker).
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from infra.app.stack.process import free_port
from infra.app.stack.tansu import TansuBroker
from infra.errors import DeliveryError
from infra.kafka import EventProducer
from infra.kafka.admin import ensure_topics
from infra.kafka.topics import INFERENCE_TELEMETRY, MONITORING_DRIFT, SERVING_METRICS

from .conftest import drift_event, read_all, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TIMEOUT_MS = 2000


@pytest.fixture
def broker(base_settings, tmp_path):
    b = TansuBroker("127.0.0.1", free_port(), tmp_path / "tansu")
    b.start(timeout=30)
    s = base_settings.with_overrides(kafka={"bootstrap_servers": b.bootstrap,
                                            "topic_prefix": f"t{uuid.uuid4().hex[:8]}"})
    ensure_topics(s)
    yield b, s
    os.kill(b.proc.pid, signal.SIGCONT)
    b.stop()


def test_event_producer_is_renewed_after_a_stall_longer_than_message_timeout(broker):
    b, s = broker
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests.stall", **{"message.timeout.ms": TIMEOUT_MS})
    producer.publish(topic, "DriftDetected", drift_event(0), key="a")
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        producer.send(topic, "DriftDetected", drift_event(1), key="a")
        with pytest.raises(DeliveryError, match="Message timed out"):
            producer.flush(TIMEOUT_MS / 1000 + 3)   # reported as failed, not silently lost
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    after = [drift_event(10 + i) for i in range(20)]
    for ev in after:
        producer.send(topic, "DriftDetected", ev, key="a")
    producer.flush(20)                                 # no PRODUCER_FENCED: every one acknowledged
    assert producer.renewals >= 1
    stored = [m for m in read_all(s, topic, 21, timeout=20)]
    ids = [str(ev["header"]["event_id"]) for ev in after]
    from schemas.codec import AvroCodec
    seen = [str(AvroCodec().decode(m.value()).value["header"]["event_id"]) for m in stored]
    assert sorted(i for i in seen if i in ids) == sorted(ids), (len(stored), seen)   # each once on the topic
    # each renewal is a metric too: a ServerMetrics sample on the metrics topic (→ server_metrics, `modelbus status`)
    reports = [AvroCodec().decode(m.value()).value for m in read_all(s, s.topic(SERVING_METRICS), producer.renewals)]
    samples = [x for r in reports if r["server"] == "producer:tests.stall" for x in r["samples"]]
    assert [x["name"] for x in samples] == ["modelbus_producer_renewals"] * producer.renewals, reports
    assert samples[0]["labels"]["process"] == "tests.stall" and samples[0]["labels"]["reason"]


def test_in_model_telemetry_producer_recovers_from_a_fencing_stall(broker):
    from serving.telemetry import TelemetryEmitter, make_telemetry_producer, telemetry_event

    b, s = broker
    emitter = TelemetryEmitter(
        s, "tests-stall", report_every_s=3600,
        producer_factory=lambda st: make_telemetry_producer(st, **{"message.timeout.ms": TIMEOUT_MS}))

    def event(i: int) -> dict:
        return telemetry_event(request_id=f"r{i}", model_name="churn", model_version=1, received_at=1, completed_at=2,
                               stages={"model": 1}, batch_size=1)

    try:
        for i in range(5):
            emitter.emit(event(i))
        assert wait_for(lambda: emitter.stats()["delivered"] == 5)
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            for i in range(5, 10):     # in flight when the broker froze: they time out
                emitter.emit(event(i))
            assert wait_for(lambda: emitter.stats()["failed"] == 5, timeout=TIMEOUT_MS / 1000 + 10)
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        for i in range(100, 200):
            emitter.emit(event(i))
        assert wait_for(lambda: emitter.stats()["queued"] == 0 and len(emitter._producer) == 0, timeout=30)
    finally:
        final = emitter.close(15)
    stored = read_all(s, s.topic(INFERENCE_TELEMETRY), 110, timeout=20)
    from schemas.codec import AvroCodec
    later = [r for r in (AvroCodec().decode(m.value()).value["request_id"] for m in stored) if int(r[1:]) >= 100]
    assert sorted(later) == sorted(f"r{i}" for i in range(100, 200)), f"{len(later)} of 100 delivered; {final}"
    assert final["renewals"] >= 1
    # the renewal is also a metric: a ServerMetrics sample of this emitter on the metrics topic (→ server_metrics)
    reports = [AvroCodec().decode(m.value()).value for m in read_all(s, s.topic(SERVING_METRICS), 1, timeout=20)]
    renewed = [x for r in reports if r["server"] == "telemetry:tests-stall" for x in r["samples"]
               if x["name"] == "modelbus_telemetry_renewals"]
    assert sum(x["value"] for x in renewed) == final["renewals"], reports
