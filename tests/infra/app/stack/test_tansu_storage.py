"""tansu with its log in S3 (``stack.kafka_storage = s3://...``) keeps topics and messages across a restart.

moto's S3 server stands in for S3/MinIO (neither can run here); tansu reaches it over real HTTP.
"""

from __future__ import annotations

import boto3
import pytest

from infra.app.stack.process import free_port
from infra.app.stack.tansu import TansuBroker
from infra.kafka import EventProducer
from infra.kafka.admin import ensure_topics
from infra.kafka.topics import MONITORING_DRIFT
from schemas.codec import AvroCodec
from tests.infra.kafka.conftest import drift_event, read_all

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.mark.parametrize("storage,survives", [("memory://tansu/", False), ("s3://tansu-log/", True)])
def test_a_restart_keeps_the_log_only_with_s3_storage(storage, survives, moto_endpoint, base_settings, tmp_path):
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="tansu-log")
    broker = TansuBroker("127.0.0.1", free_port(), tmp_path / "tansu", storage=storage, s3_endpoint_url=moto_endpoint)
    broker.start(timeout=30)
    s = base_settings.with_overrides(kafka={"bootstrap_servers": broker.bootstrap, "topic_prefix": "durable"})
    try:
        ensure_topics(s)
        sent = [drift_event(i) for i in range(10)]
        producer = EventProducer(s, name="tests.durable")
        for ev in sent:
            producer.send(s.topic(MONITORING_DRIFT), "DriftDetected", ev, key="m")
        producer.flush(20)
        broker.stop()
        broker.start(timeout=30)
        kept = read_all(s, s.topic(MONITORING_DRIFT), 10, timeout=10 if survives else 3)
        ids = {str(AvroCodec().decode(m.value()).value["header"]["event_id"]) for m in kept}
        assert ids == ({str(ev["header"]["event_id"]) for ev in sent} if survives else set())
    finally:
        broker.stop()
