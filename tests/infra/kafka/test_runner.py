"""The consumer runner against a real tansu broker: commits, DLQ, retries, skips, long handlers."""

from __future__ import annotations

import threading
import time

import pytest

from infra.errors import PoisonEvent, SkipEvent
from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka import dlq as D
from infra.kafka.topics import MONITORING_DRIFT, dlq_name
from tests.event_samples import legacy_framed

from .conftest import committed, drift_event, read_all, wait_for

pytestmark = pytest.mark.stack


def test_events_flow_and_garbage_goes_to_the_dlq_while_the_consumer_keeps_running(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    seen: list[str] = []
    runner = ConsumerRunner(s, group_id="g-flow", topics=[topic], handler=lambda env: seen.append(env.event_id),
                            name="flow", expected_types=["DriftDetected"])
    with runner_thread(runner):
        sent = [drift_event(i) for i in range(5)]
        for ev in sent[:2]:
            producer.send(topic, "DriftDetected", ev, key="m")
        producer.send_raw(topic, b"\x00garbage\xff", b"m")                       # undecodable framing
        producer.send_raw(topic, b"\xc3\x01" + b"\x13" * 8 + b"body", b"m")      # unknown fingerprint
        producer.send(topic, "ModelDeployed", {  # schema-valid, but the wrong event type for this topic
            "header": drift_event()["header"], "model_name": "m", "model_version": 1, "artifact_uri": "x",
            "checksum": "c", "repository_uri": "r"}, key="m")
        for ev in sent[2:]:
            producer.send(topic, "DriftDetected", ev, key="m")
        producer.flush()
        assert wait_for(lambda: len(seen) == 5 and runner.stats.dead_lettered == 3)
    assert seen == [e["header"]["event_id"] for e in sent]   # one key → one partition → order kept
    dead = read_all(s, dlq_name(topic), 3)
    assert len(dead) == 3
    reasons = sorted(dict(m.headers())[D.H_REASON] for m in dead)
    assert reasons == [b"undecodable", b"undecodable", b"unexpected_type"]
    h = dict(dead[0].headers())
    assert h[D.H_TOPIC] == topic.encode() and h[D.H_GROUP] == b"g-flow" and int(h[D.H_OFFSET]) >= 0
    assert dead[0].value() == b"\x00garbage\xff"      # the original bytes, kept as data
    assert committed(s, "g-flow", topic, s.kafka.default_partitions) == 8


def test_poison_retry_and_skip_outcomes(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    attempts: dict[str, int] = {}
    done: list[str] = []

    def handler(env):
        n = attempts[env.value["feature"]] = attempts.get(env.value["feature"], 0) + 1
        feature = env.value["feature"]
        if feature == "f1":
            raise PoisonEvent("psi is not a number we accept")
        if feature == "f2" and n < 3:
            raise ConnectionError("transient")
        if feature == "f3":
            raise SkipEvent("duplicate")
        if feature == "f4":
            raise RuntimeError("always broken")
        done.append(feature)

    runner = ConsumerRunner(s, group_id="g-out", topics=[topic], handler=handler, name="outcomes",
                            max_attempts=3, backoff_s=0.05)
    producer = EventProducer(s, name="tests")
    with runner_thread(runner):
        for i in range(6):
            producer.send(topic, "DriftDetected", drift_event(i), key="m")
        producer.flush()
        assert wait_for(lambda: runner.handled == 6)
    assert done == ["f0", "f2", "f5"]
    assert attempts["f2"] == 3 and attempts["f4"] == 3
    assert runner.stats.skipped == 1 and runner.stats.dead_lettered == 2
    dead = read_all(s, dlq_name(topic), 2)
    assert sorted(dict(m.headers())[D.H_REASON] for m in dead) == [b"poison", b"retries-exhausted"]
    assert b"psi is not a number" in dict(dead[0].headers())[D.H_ERROR] + dict(dead[1].headers())[D.H_ERROR]
    assert committed(s, "g-out", topic, s.kafka.default_partitions) == 6


def test_a_handler_longer_than_max_poll_interval_keeps_its_partition(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    finished = threading.Event()

    def slow(env):
        time.sleep(4.5)          # > max.poll.interval.ms below
        finished.set()

    runner = ConsumerRunner(s, group_id="g-slow", topics=[topic], handler=slow, name="slow", max_batch=1,
                            consumer_overrides={"max.poll.interval.ms": 3000})
    EventProducer(s, name="tests").publish(topic, "DriftDetected", drift_event(), key="m")
    with runner_thread(runner):
        rebalances_before = runner.stats.rebalances
        assert finished.wait(30)
        assert wait_for(lambda: runner.stats.commits >= 1, 10)
        assert runner.stats.rebalances == rebalances_before   # never kicked out of the group
    assert runner.stats.processed == 1
    assert committed(s, "g-slow", topic, s.kafka.default_partitions) == 1


def test_processed_log_gives_one_effect_per_event_id_across_duplicates_and_a_replay(isolated_settings, runner_thread,
                                                                                     tmp_path):
    from infra.kafka.idempotency import ProcessedLog
    from infra.storage import open_store

    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    log = ProcessedLog(open_store(str(tmp_path / "store")), "g-once")
    effects: list[str] = []
    events = [drift_event(i) for i in range(4)]
    for ev in [*events, events[1], events[3]]:          # the same event_id delivered twice
        producer.send(topic, "DriftDetected", ev, key="m")
    producer.flush()

    def runner(group: str, plog: ProcessedLog) -> ConsumerRunner:
        return ConsumerRunner(s, group_id=group, topics=[topic], handler=lambda env: effects.append(env.event_id),
                              name="once", processed=plog)

    first = runner("g-once", log)
    with runner_thread(first):
        assert wait_for(lambda: first.handled + first.stats.duplicates == 6)
    assert sorted(effects) == sorted(e["header"]["event_id"] for e in events)
    assert first.stats.duplicates == 2
    # a replay from offset 0 (new group), in a new process sharing the store: nothing happens twice
    replay = runner("g-once-replay", ProcessedLog(open_store(str(tmp_path / "store")), "g-once"))
    with runner_thread(replay):
        assert wait_for(lambda: replay.stats.duplicates == 6)
    assert len(effects) == 4 and replay.stats.processed == 0


def test_legacy_order_events_are_handled_and_counted(isolated_settings, runner_thread):
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    seen: list[str] = []
    runner = ConsumerRunner(s, group_id="g-legacy", topics=[topic], handler=lambda env: seen.append(env.event_id),
                            name="legacy")
    events = [drift_event(i) for i in range(3)]
    with runner_thread(runner):
        producer.send_raw(topic, legacy_framed("DriftDetected", events[0]), b"m")   # already on the topic
        producer.send(topic, "DriftDetected", events[1], key="m")
        producer.send_raw(topic, legacy_framed("DriftDetected", events[2]), b"m")
        producer.flush()
        assert wait_for(lambda: len(seen) == 3)
    assert seen == [e["header"]["event_id"] for e in events]
    assert runner.stats.legacy_framing == 2 and runner.stats.dead_lettered == 0


def test_a_batching_handler_commits_only_after_its_outputs_are_written(isolated_settings, runner_thread):
    """``before_commit``: False keeps batching, an exception keeps the offsets; either way nothing is committed
    ahead of the outputs, and the final commit at shutdown writes what is left."""
    s = isolated_settings
    topic = s.topic(MONITORING_DRIFT)
    buffered: list[str] = []
    written: list[str] = []
    answers = iter([False, RuntimeError("ClickHouse is down")])

    def before_commit(final: bool):
        answer = next(answers, True) if not final else True
        if isinstance(answer, Exception):
            raise answer
        if answer:
            written.extend(buffered)
            buffered.clear()
        return answer

    runner = ConsumerRunner(s, group_id="g-batch", topics=[topic], handler=lambda env: buffered.append(
        env.value["feature"]), name="batching", before_commit=before_commit)
    producer = EventProducer(s, name="tests")
    with runner_thread(runner):
        for i in range(3):
            producer.send(topic, "DriftDetected", drift_event(i), key="m")
        producer.flush()
        assert wait_for(lambda: runner.handled == 3)
        assert wait_for(lambda: written)                  # the third try wrote the outputs, then committed
        assert committed(s, "g-batch", topic, s.kafka.default_partitions) == 3
    assert sorted(written) == ["f0", "f1", "f2"] and buffered == []
