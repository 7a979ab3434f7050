"""DatasetCreated and TrainingRequested reach a real tansu broker and decode with the codec."""

from __future__ import annotations

import uuid

import pytest

from infra.kafka import topics
from producers.datasets import push_dataset
from producers.errors import DatasetNotFoundError, DatasetValidationError, InvalidSpecError, ProducerError

from .conftest import SPEC, read_events, topic_size

pytestmark = pytest.mark.stack


def test_push_publishes_exactly_one_decodable_event(mb, csv_file, frame):
    first = mb.push_dataset(csv_file, **SPEC, tags={"owner": "growth"})
    again = mb.push_dataset(frame, **SPEC)  # same rows as a DataFrame: same version, no second event
    assert first.created and first.published and first.event_id
    assert again.version == first.version and not again.created and not again.published
    events = read_events(mb.settings, topics.DATASETS_CREATED, expect=1, settle=1.5)
    assert len(events) == 1
    key, event_type, value = events[0]
    assert (key, event_type) == ("churn", "DatasetCreated")
    assert str(value["header"]["event_id"]) == first.event_id
    assert value["header"]["producer"] == "producers.sdk"
    meta = mb.datasets.get(first.ref).metadata
    assert value["version"] == first.version and value["checksum"] == first.checksum
    assert value["uri"] == meta["uri"] and value["metadata_uri"] == meta["metadata_uri"]
    assert value["task"] == "binary" and value["label_column"] == "churned"
    assert value["feature_columns"] == ["age", "income", "region", "plan"]
    assert value["slice_columns"] == ["region"] and value["time_column"] is None
    assert value["row_count"] == 200 and value["size_bytes"] == meta["size_bytes"] > 0
    assert value["schema"]["income"] == "double" and value["image_shape"] == []
    assert value["source"] == str(csv_file.resolve()) and value["parent_version"] is None
    assert value["tags"] == {"owner": "growth"} and value["format"] == "parquet"
    stats = {s["name"]: s for s in value["statistics"]}
    assert set(stats) == set(frame.columns)
    assert stats["income"]["kind"] == "numeric" and len(stats["income"]["bin_edges"]) == \
        len(stats["income"]["bin_counts"]) + 1
    assert stats["plan"]["kind"] == "categorical" and sum(stats["plan"]["category_counts"]) == 200


def test_second_version_event_links_its_parent(mb, frame):
    v1 = mb.push_dataset(frame, **SPEC)
    v2 = mb.push_dataset(frame.iloc[:100], **SPEC)
    events = read_events(mb.settings, topics.DATASETS_CREATED, expect=2)
    by_version = {e[2]["version"]: e[2] for e in events}
    assert by_version[v2.version]["parent_version"] == v1.version
    assert by_version[v1.version]["parent_version"] is None


def test_refused_push_publishes_nothing(mb, frame):
    bad = frame.assign(churned="yes")
    with pytest.raises(DatasetValidationError):
        mb.push_dataset(bad, **SPEC)
    assert topic_size(mb.settings) == 0
    assert mb.datasets.names() == []


def test_committed_but_unpublished_version_is_published_by_the_next_push(mb, frame):
    """A push that died between commit and publish must not lose the event forever."""
    crashed = push_dataset(frame, SPEC, store=mb.store, publisher=None, topic="unused")
    assert crashed.created and not crashed.published
    retry = mb.push_dataset(frame, **SPEC)
    assert retry.version == crashed.version and not retry.created and retry.published
    third = mb.push_dataset(frame, **SPEC)
    assert not third.published
    assert len(read_events(mb.settings, topics.DATASETS_CREATED, expect=1, settle=1.0)) == 1


def test_failed_publish_keeps_the_version_and_the_next_push_sends_the_event(mb, frame):
    """A broker that never acknowledges: the push fails loudly, the durable version stays, the retry publishes."""
    from infra.app.stack.process import free_port
    from infra.errors import DeliveryError
    from infra.kafka import EventProducer

    dead = mb.settings.with_overrides(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    producer = EventProducer(dead, name="producers.sdk", **{"message.timeout.ms": 1500})
    with pytest.raises(DeliveryError):
        push_dataset(frame, SPEC, store=mb.store, publisher=producer, topic=mb.settings.topic(topics.DATASETS_CREATED))
    [v] = mb.datasets.versions("churn")
    assert topic_size(mb.settings) == 0
    res = mb.push_dataset(frame, **SPEC)
    assert res.version == v.version and not res.created and res.published
    assert [e[2]["version"] for e in read_events(mb.settings, topics.DATASETS_CREATED, expect=1)] == [v.version]


@pytest.mark.parametrize("spec, field", [
    ({"epocs": 3}, "epocs"),                 # a typo: the CLI refuses it too (same check_request_spec)
    ({"lr": -1.0}, "lr"),
    ({"val_fraction": 0.5, "test_fraction": 0.4}, "20%"),
    ('{"epochs": ', "not JSON"),
    ([1, 2], "expected an object"),
])
def test_an_invalid_spec_is_refused_before_anything_is_published(mb, frame, spec, field):
    mb.push_dataset(frame, **SPEC)
    before = topic_size(mb.settings, topics.TRAINING_REQUESTED)
    with pytest.raises(InvalidSpecError, match=field):
        mb.request_training("churn", spec=spec)
    assert topic_size(mb.settings, topics.TRAINING_REQUESTED) == before
    mb.request_training("churn", spec={"epochs": 2})   # the same client still publishes a valid request
    assert topic_size(mb.settings, topics.TRAINING_REQUESTED) == before + 1


def test_request_training_and_generic_publish(mb, frame):
    res = mb.push_dataset(frame, **SPEC)
    rid = mb.request_training("churn", spec={"epochs": 2}, dataset_version=res.version[:8],
                              search_space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}}, n_trials=3)
    [(key, event_type, value)] = read_events(mb.settings, topics.TRAINING_REQUESTED, expect=1)
    assert (key, event_type) == ("churn", "TrainingRequested")
    assert value["request_id"] == rid and value["dataset_version"] == res.version
    assert value["spec_json"] == '{"epochs": 2}' and value["n_trials"] == 3
    assert '"lr"' in value["search_space_json"] and value["reason"] == "manual"
    with pytest.raises(DatasetNotFoundError):
        mb.request_training("no-such-dataset")
    with pytest.raises(ProducerError, match="search_space"):
        mb.request_training("churn", n_trials=5)
    with pytest.raises(ProducerError, match="reserved for the libtorch step models"):
        mb.request_training("churn", model_name="churn__v2")
    eid = mb.publish("TrainingRequested", {"request_id": str(uuid.uuid4()), "dataset_name": "churn"}, key="churn")
    events = read_events(mb.settings, topics.TRAINING_REQUESTED, expect=2)
    assert eid in {str(v["header"]["event_id"]) for _, _, v in events}
    with pytest.raises(ProducerError, match="no topic"):
        mb.publish("NoSuchEvent", {})
