"""The one TopicReader, and the followers built on it (``train --wait``, the demo watcher), on a real broker.

Registry-framed events: no Schema Registry can run here, so the registry is confluent-kafka's own in-memory
MockSchemaRegistryClient, shared by the writer's codec and the codec the Kafka layer configures for readers
(``make_codec``, patched to use it, as settings with a registry URL would). Framing and decoding are ours.
"""

from __future__ import annotations

import time

import pytest

from infra.kafka import EventProducer
from infra.kafka import topics as T
from infra.kafka.reader import TopicReader
from schemas import AvroCodec
from schemas.codec import CONFLUENT_MAGIC
from tests.event_samples import samples

from .conftest import drift_event

pytestmark = pytest.mark.stack


@pytest.fixture
def registry_codecs(monkeypatch):
    """(the writer's codec, a reader-side codec) on one registry; readers get the latter from make_codec."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

    registry = MockSchemaRegistryClient({"url": "mock://"})
    reader_codec = AvroCodec(registry_client=registry)
    monkeypatch.setattr("infra.kafka.reader.make_codec", lambda settings: reader_codec)
    return AvroCodec(registry_client=registry), reader_codec


def _until(poll, pred, timeout: float = 20.0):
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not pred(seen):
        seen += poll()
    return seen


def test_reader_from_the_end_or_the_beginning_and_skips_what_the_topic_does_not_carry(isolated_settings):
    s = isolated_settings
    topic = s.topic(T.MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    early, late = drift_event(1), drift_event(2)
    producer.publish(topic, "DriftDetected", early, key="m")
    with TopicReader(s, [topic], start="end") as tail, TopicReader(s, [topic], start="beginning") as full:
        producer.send(topic, "ModelDeployed", samples("ModelDeployed", 1)[0], key="m")   # misrouted
        producer.publish(topic, "DriftDetected", late, key="m")
        got_tail = _until(lambda: tail.poll(100, 0.2), lambda seen: len(seen) >= 1)
        got_full = _until(lambda: full.poll(100, 0.2), lambda seen: len(seen) >= 2)
        assert [e.event_id for e in got_tail] == [late["header"]["event_id"]]
        assert [e.event_id for e in got_full] == [early["header"]["event_id"], late["header"]["event_id"]]
        assert tail.skipped == 1 and full.skipped == 1   # the misrouted one came before `late` on its partition
    from infra.errors import ModelBusError

    with pytest.raises(ModelBusError, match="does not exist"):
        TopicReader(s, [s.topic("no.such.topic")], start="end")


def test_read_to_end_returns_the_history_and_the_deployer_scans_its_announcements_with_it(isolated_settings):
    from consumers.deployer import scan_announced

    s = isolated_settings
    deployed, rejected = s.topic(T.MODELS_DEPLOYED), s.topic(T.MODELS_REJECTED)
    producer = EventProducer(s, name="tests")
    sent = samples("ModelDeployed", 3)
    for i, ev in enumerate(sent):
        producer.send(deployed, "ModelDeployed", ev, key=f"m{i}")   # several keys: several partitions
    producer.send_raw(deployed, b"\x00garbage", b"m0")              # refused, yet it counts towards the end
    producer.flush(30)
    with TopicReader(s, [deployed, rejected], start="beginning", skip_missing=True) as reader:
        got = reader.read_to_end(timeout=20)
    assert sorted(e.event_id for e in got) == sorted(ev["header"]["event_id"] for ev in sent)
    assert reader.skipped == 1
    assert scan_announced(s, timeout=20) == {ev["header"]["event_id"] for ev in sent}


def test_train_wait_and_the_demo_watcher_see_registry_framed_events(isolated_settings, registry_codecs):
    from infra.app.cli.train_follow import Follower
    from infra.app.demo.watch import EventWatcher

    s = isolated_settings
    writer_codec, _ = registry_codecs
    producer = EventProducer(s, name="tests", codec=writer_codec)
    follower = Follower(s)
    watcher = EventWatcher(s)
    try:
        update = samples("TrainingRunUpdated", 1)[0]
        producer.publish(s.topic(T.TRAINING_RUNS), "TrainingRunUpdated", update, key="run")
        events = follower.events(poll_s=0.2)
        deadline = time.monotonic() + 20
        item = None
        while item is None and time.monotonic() < deadline:
            item = next(events)
        assert item is not None and item[0] == "TrainingRunUpdated"
        assert str(item[1]["header"]["event_id"]) == update["header"]["event_id"]
        found = watcher.wait_for("the update", lambda: watcher.of("TrainingRunUpdated"), timeout=20)
        assert str(found[0]["header"]["event_id"]) == update["header"]["event_id"]
    finally:
        follower.close()
        watcher.close()
    assert writer_codec.encode("TrainingRunUpdated", update)[:1] == CONFLUENT_MAGIC   # it was registry-framed
