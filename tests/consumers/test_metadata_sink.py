"""The metadata sink against a real tansu broker and the embedded ClickHouse owner (real processes)."""

from __future__ import annotations

import pytest

from consumers.metadata_sink import build_runner
from infra.kafka import EventProducer
from infra.kafka import dlq as D
from infra.kafka import topics as T
from schemas.events import child_header, new_header

pytestmark = pytest.mark.stack


def chain() -> list[tuple[str, str, dict]]:
    """(logical topic, event type, value): a dataset push down to a deployment, with lineage headers."""
    ds = {"header": new_header("producers.sdk"), "name": "churn", "version": "v-123", "uri": "file:///d",
          "metadata_uri": "file:///d/meta.json", "task": "binary", "label_column": "y",
          "feature_columns": ["age"], "schema": {"age": "double", "y": "int64"}, "row_count": 10,
          "checksum": "abc", "statistics": [{"name": "age", "dtype": "double", "count": 10, "mean": 3.0}]}
    run = {"header": child_header("consumers.training", ds), "run_id": "run-9", "status": "finished",
           "dataset_name": "churn", "dataset_version": "v-123", "model_name": "churn",
           "params_json": '{"lr": 0.1}', "metrics": {"test_roc_auc": 0.8}, "environment": {"device": "cpu"}}
    reg = {"header": child_header("consumers.training", run), "model_name": "churn", "model_version": 4,
           "run_id": "run-9", "dataset_name": "churn", "dataset_version": "v-123", "artifact_uri": "file:///m/4",
           "checksum": "m4", "task": "binary", "primary_metric": "roc_auc", "metrics": {"roc_auc": 0.8},
           "signature_json": "{}"}
    dep = {"header": child_header("serving.deployer", reg), "model_name": "churn", "model_version": 4,
           "artifact_uri": "file:///m/4", "checksum": "m4", "repository_uri": "file:///repo", "run_id": "run-9",
           "dataset_version": "v-123",
           "checks": [{"name": "beats_baseline:majority", "passed": True, "value": 0.8, "threshold": 0.5}]}
    return [(T.DATASETS_CREATED, "DatasetCreated", ds), (T.TRAINING_RUNS, "TrainingRunUpdated", run),
            (T.MODELS_REGISTERED, "ModelRegistered", reg), (T.MODELS_DEPLOYED, "ModelDeployed", dep)]


def test_lifecycle_events_land_in_tables_and_lineage_view(sink_settings, ch, read_topic):
    s = sink_settings
    events = chain()
    p = EventProducer(s, name="tests")
    for topic, event_type, value in events:
        p.send(s.topic(topic), event_type, value, key="churn")
    p.send(s.topic(T.MODELS_REGISTERED), "ModelRegistered", events[2][2], key="churn")   # redelivered copy
    p.send_raw(s.topic(T.DATASETS_CREATED), b"\xc3\x01garbage!!", b"churn")
    p.flush(30)

    stats = build_runner(s, ch, group_id="meta-test").run(idle_timeout=4.0)

    assert stats.processed == 5 and stats.dead_lettered == 1
    rows = ch.query_rows("SELECT * FROM v_model_lineage")
    assert len(rows) == 1
    row = rows[0]
    ds, run, reg, dep = (v for _, _, v in events)
    assert (row["model_name"], row["model_version"], row["run_id"]) == ("churn", 4, "run-9")
    assert row["deployment_event_id"] == dep["header"]["event_id"]
    assert row["model_event_id"] == reg["header"]["event_id"]
    assert row["params_json"] == '{"lr": 0.1}' and row["run_status"] == "finished"
    assert (row["dataset_version"], row["dataset_event_id"]) == ("v-123", ds["header"]["event_id"])
    assert row["correlation_id"] == ds["header"]["correlation_id"]           # one causal chain end to end
    assert ch.query_rows("SELECT count() AS n FROM models FINAL") == [{"n": 1}]
    assert ch.query_rows("SELECT column, mean FROM column_stats FINAL") == [{"column": "age", "mean": 3.0}]
    dlq = read_topic(s, T.dlq_name(s.topic(T.DATASETS_CREATED)), 1)
    assert dict(dlq[0].headers())[D.H_REASON] == b"undecodable"


def _drift(feature: str) -> dict:
    return {"header": new_header("consumers.drift"), "model_name": "churn", "model_version": 1, "feature": feature,
            "window_start": 1, "window_end": 2, "psi": 0.4, "test": "ks", "statistic": 0.3, "p_value": 0.001,
            "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 100}


def test_an_event_type_its_topic_does_not_carry_is_dead_lettered_and_never_stored(sink_settings, ch, read_topic):
    s = sink_settings
    misrouted, routed = _drift("misrouted"), _drift("routed")
    p = EventProducer(s, name="tests")
    p.send(s.topic(T.TRAINING_REQUESTED), "DriftDetected", misrouted, key="churn")   # valid Avro, wrong topic
    p.send(s.topic(T.MONITORING_DRIFT), "DriftDetected", routed, key="churn")
    p.flush(30)

    stats = build_runner(s, ch, group_id="meta-misrouted").run(idle_timeout=4.0)

    assert stats.processed == 1 and stats.dead_lettered == 1
    assert ch.query_rows("SELECT feature FROM drift_events") == [{"feature": "routed"}]
    (dead,) = read_topic(s, s.topic(T.TRAINING_REQUESTED) + T.DLQ_SUFFIX, 1)
    h = dict(dead.headers())
    assert h[D.H_REASON] == b"unexpected_type" and h[D.H_ERROR_TYPE] == b"UnexpectedType"
    assert b"DriftDetected" in h[D.H_ERROR] and b"TrainingRequested" in h[D.H_ERROR]
    assert h["ce_type"] == b"modelbus.deadletter"
    assert h["ce_originaltype"] == b"modelbus.events.DriftDetected"
    assert h["ce_originalid"] == misrouted["header"]["event_id"].encode()


def test_events_the_apache_avro_library_wrote_land_in_their_tables(sink_settings, ch):
    """Every lifecycle event of the chain, plus a DriftDetected, single-object encoded by the Apache library
    (framed by hand from the spec) and sent by a plain Kafka producer without headers."""
    from confluent_kafka import Producer

    from infra.kafka.config import producer_config
    from schemas import AvroCodec
    from tests.event_samples import apache_single_object, normalize

    s = sink_settings
    codec = AvroCodec()
    events = [*chain(), (T.MONITORING_DRIFT, "DriftDetected", _drift("apache"))]
    p = Producer(producer_config(s.kafka))
    for topic, event_type, value in events:
        complete = normalize(codec.decode(codec.encode(event_type, value)).value)   # schema defaults filled in
        p.produce(s.topic(topic), apache_single_object(event_type, complete), b"churn")
    assert p.flush(15) == 0

    stats = build_runner(s, ch, group_id="meta-apache").run(idle_timeout=4.0)

    assert stats.processed == len(events) and stats.dead_lettered == 0
    (row,) = ch.query_rows("SELECT * FROM v_model_lineage")
    ds, run, reg, dep, _ = (v for _, _, v in events)
    assert row["deployment_event_id"] == dep["header"]["event_id"]
    assert row["model_event_id"] == reg["header"]["event_id"]
    assert (row["dataset_version"], row["dataset_event_id"]) == ("v-123", ds["header"]["event_id"])
    assert ch.query_rows("SELECT feature FROM drift_events") == [{"feature": "apache"}]


def test_a_dataset_version_is_recorded_once_and_a_conflicting_announcement_is_dead_lettered(sink_settings, ch,
                                                                                             read_topic):
    """Issue 16: a DatasetCreated re-sent under a new event id and another key added a second `datasets` row."""
    s = sink_settings
    first = chain()[0][2]
    again = {**first, "header": new_header("hand-made")}                          # same version, same content
    other = {**first, "header": new_header("hand-made"), "checksum": "not-abc"}    # same version, other content
    p = EventProducer(s, name="tests")
    p.publish(s.topic(T.DATASETS_CREATED), "DatasetCreated", first, key="churn")
    assert build_runner(s, ch, group_id="meta-dataset-once").run(idle_timeout=4.0).processed == 1
    p.send(s.topic(T.DATASETS_CREATED), "DatasetCreated", first, key="churn-2")    # the same event, re-keyed
    p.send(s.topic(T.DATASETS_CREATED), "DatasetCreated", again, key="other-key")
    p.send(s.topic(T.DATASETS_CREATED), "DatasetCreated", other, key="churn")
    p.flush(30)

    stats = build_runner(s, ch, group_id="meta-dataset-once").run(idle_timeout=4.0)

    assert (stats.skipped, stats.dead_lettered) == (2, 1), stats
    assert ch.query_rows("SELECT event_id FROM datasets") == [{"event_id": first["header"]["event_id"]}]
    (dead,) = read_topic(s, T.dlq_name(s.topic(T.DATASETS_CREATED)), 1)
    h = dict(dead.headers())
    assert h[D.H_REASON] == b"poison" and b"not-abc" in h[D.H_ERROR] and b"checksum abc" in h[D.H_ERROR]
