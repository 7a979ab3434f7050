"""The embedded broker restarted under running clients.

Each test runs its OWN tansu on a fixed free port (never the session broker)
and restarts it the way an operator does: the broker process goes away, then
the supervisor's ``up`` starts it again on the same port and creates the
catalogue topics. The in-memory broker comes back empty (no messages, topics,
committed offsets, groups or producer ids); the producer, consumer and sink
below are the ones that were running before, untouched by the test.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import OFFSET_STORED, KafkaError

from infra.app.stack.process import free_port
from infra.app.stack.supervisor import Stack
from infra.errors import DeliveryError
from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka.admin import admin_client
from infra.kafka.topics import INFERENCE_TELEMETRY, MONITORING_DRIFT, SEARCH_INBOX

from .conftest import committed, drift_event, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]


class BrokerOnly(Stack):
    """The real supervisor, limited to its broker part (ClickHouse and Triton play no role here)."""

    @property
    def parts(self) -> list:
        return [self.kafka]


@pytest.fixture
def stack(base_settings, tmp_path):
    s = base_settings.with_overrides(stack={"data_dir": str(tmp_path / "data"), "kafka_port": free_port()},
                                     kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500})
    st = BrokerOnly(s)
    st.up()
    yield st
    st.down()


def _restart(stack: Stack) -> None:
    stack.kafka.stop()
    assert not stack.kafka.healthy(0.5)
    stack.up()


def _partitions(settings, topic: str) -> int:
    return len(admin_client(settings).list_topics(timeout=10).topics[topic].partitions)


def test_running_producer_and_consumer_resume_after_a_restart_and_failures_are_reported(stack, runner_thread):
    s = stack.settings
    topic = s.topic(MONITORING_DRIFT)
    parts = s.kafka.default_partitions
    producer = EventProducer(s, name="tests.restart", **{"message.timeout.ms": 3000})
    idle = EventProducer(s, name="tests.idle")           # sends nothing while the broker is away
    handled: list[str] = []
    runner = ConsumerRunner(s, group_id="g-restart", topics=[topic], handler=lambda env: handled.append(env.event_id),
                            name="restart")
    with runner_thread(runner) as consumer:
        before = [drift_event(i) for i in range(60)]
        for i, ev in enumerate(before):
            (producer if i % 2 else idle).send(topic, "DriftDetected", ev, key=f"k{i % 6}")
        producer.flush(10)
        idle.flush(10)
        assert wait_for(lambda: len(handled) == 60)
        assert wait_for(lambda: committed(s, "g-restart", topic, parts) == 60)

        # (b) Events sent while the broker is down are retried until message.timeout.ms, then reported.
        stack.kafka.stop()
        failures: list[KafkaError] = []
        down = [drift_event(100 + i) for i in range(5)]
        for ev in down:
            producer.send(topic, "DriftDetected", ev, key="down",
                          on_delivery=lambda err, msg: failures.append(err) if err is not None else None)
        with pytest.raises(DeliveryError, match=r"5 event\(s\) not delivered.*Message timed out"):
            producer.flush(15)
        assert [e.code() for e in failures] == [KafkaError._MSG_TIMED_OUT] * 5

        stack.up()                                       # same port, empty broker, catalogue created again
        assert _partitions(s, topic) == parts            # by the supervisor, not by a client's auto-creation
        assert _partitions(s, s.topic(SEARCH_INBOX)) == 1   # internal topics too: tansu would auto-create 4
        assert committed(s, "g-restart", topic, parts) == 0   # committed offsets died with the broker

        # (a) The same producer and consumer carry on. Fewer events per partition than the consumer had read
        # before: a consumer fetching from its old positions would wait past the new log end forever.
        after = [drift_event(200 + i) for i in range(12)]
        for i, ev in enumerate(after):
            (producer if i % 2 else idle).send(topic, "DriftDetected", ev, key=f"k{i % 6}")
        producer.flush(20)                               # acknowledged: no DeliveryError
        idle.flush(20)
        want = {ev["header"]["event_id"] for ev in after}
        assert wait_for(lambda: want <= set(handled)), f"handled after restart: {len(set(handled) & want)} of 12"
        assert consumer.error is None and consumer.thread.is_alive()
        assert wait_for(lambda: committed(s, "g-restart", topic, parts) == 12)   # nothing stale committed
    assert sorted(handled[60:]) == sorted(want)          # each once; the failed five never reached the broker
    assert producer.renewals >= 1 and idle.renewals >= 1  # each got a new producer id from the new broker


def _telemetry(i: int, run: str) -> dict:
    from schemas.events import now_us
    from serving.telemetry import telemetry_event

    t = now_us()
    return telemetry_event(request_id=f"{run}-{i}", model_name="churn", model_version=1, received_at=t - 500,
                           completed_at=t, stages={"model": 400}, batch_size=1, prediction="yes")


def test_telemetry_sink_does_not_resume_from_offsets_stored_on_the_lost_broker(stack, clickhouse_owner):
    """The sink resumes from offsets kept in ClickHouse, which outlive the broker. After the restart they
    point past the end of the new partitions, where tansu (unlike Apache Kafka) answers no
    OFFSET_OUT_OF_RANGE, so auto.offset.reset never steps in: a sink seeking there waits, then skips."""
    from consumers.telemetry_sink import TelemetrySink
    from infra.clickhouse import HttpStore
    from infra.clickhouse.migrate import migrate

    s = stack.settings.with_overrides(clickhouse={"url": clickhouse_owner.url,
                                                  "database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(s.clickhouse.url, database=s.clickhouse.database)
    migrate(store, s.clickhouse)
    topic = s.topic(INFERENCE_TELEMETRY)
    producer = EventProducer(s, name="tests.restart")
    sink = TelemetrySink(s, store, max_wait_s=0.1)
    ready, errors = threading.Event(), []
    thread = threading.Thread(target=lambda: _run(sink, ready, errors), daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        for i in range(60):
            producer.send(topic, "InferenceTelemetry", _telemetry(i, "before"), key=f"k{i % 6}")
        producer.flush(10)
        assert wait_for(lambda: _rows(store) == 60)

        _restart(stack)
        for i in range(9):
            producer.send(topic, "InferenceTelemetry", _telemetry(i, "after"), key=f"k{i % 6}")
        producer.flush(20)
        assert wait_for(lambda: _rows(store) == 69), f"{_rows(store)} rows stored of 69"
        stored = {r["request_id"] for r in store.query_rows(
            "SELECT request_id FROM inference_telemetry WHERE startsWith(request_id, 'after-')")}
        assert stored == {f"after-{i}" for i in range(9)}
        # Offsets stored on the old broker (up to ~20 per partition) were not used on the new one.
        assert set(sink.stats.resumed_from.values()) == {OFFSET_STORED}
        assert not errors and thread.is_alive()
    finally:
        sink.stop()
        thread.join(30)
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
    assert not errors


def _run(sink, ready: threading.Event, errors: list) -> None:
    try:
        sink.run(ready=ready)
    except BaseException as exc:  # noqa: BLE001 - surfaced by the test
        errors.append(exc)


def _rows(store) -> int:
    return int(store.query_rows("SELECT count() AS n FROM inference_telemetry FINAL")[0]["n"])
