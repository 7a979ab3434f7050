"""Foundation benchmark: encode+produce and consume+decode telemetry events through a real tansu broker.

ModelBus's own EventProducer / ConsumerRunner / AvroCodec against a same-run
baseline of bare fastavro (pre-parsed schema) plus bare confluent-kafka in a
tight loop. Target: ≥ 0.8× the baseline on each side.
"""

from __future__ import annotations

import io
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from fastavro import schemaless_reader, schemaless_writer

from infra.app.stack.process import free_port
from infra.app.stack.tansu import TansuBroker
from infra.kafka import ConsumerRunner, EventProducer
from infra.kafka.admin import ensure_topics
from infra.kafka.config import consumer_config, producer_config
from infra.settings import load_settings
from schemas import catalog
from schemas.events import new_header, now_us


def telemetry_record(i: int) -> dict:
    t = now_us()
    return {"header": new_header("bench"), "request_id": f"r{i}", "model_name": "churn", "model_version": 1,
            "received_at": t, "completed_at": t + 900, "latency_us": 900, "stage_latency_us": {"model": 600},
            "batch_size": 1, "numeric_names": ["tenure", "charges", "calls"], "numeric_means": [12.0, 70.5, 2.0],
            "categorical_names": ["contract", "region"], "categorical_values": ["monthly", "west"],
            "prediction": "no", "prediction_value": 0.0, "confidence": 0.81}


def _baseline_produce(settings, topic: str, records: list[dict]) -> float:
    es = catalog().get("InferenceTelemetry")
    parsed, prefix = es.parsed, b"\xc3\x01" + es.fingerprint   # the same bytes on the wire as ours
    p = Producer(producer_config(settings.kafka))
    t0 = time.perf_counter()
    for rec in records:
        buf = io.BytesIO()
        buf.write(prefix)
        schemaless_writer(buf, parsed, rec)
        while True:
            try:
                p.produce(topic, buf.getvalue(), b"churn")
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush()
    return len(records) / (time.perf_counter() - t0)


def _own_produce(settings, topic: str, records: list[dict]) -> float:
    p = EventProducer(settings, name="bench")
    t0 = time.perf_counter()
    for rec in records:
        p.send(topic, "InferenceTelemetry", rec, key="churn")
    p.flush()
    return len(records) / (time.perf_counter() - t0)


def _baseline_consume(settings, topic: str, n: int) -> float:
    parsed = catalog().get("InferenceTelemetry").parsed
    c = Consumer(consumer_config(settings.kafka, f"bench-base-{uuid.uuid4().hex[:6]}"))
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = c.consume(10000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()   # exclude the group join from both sides
        for m in msgs:
            if m.error() is None:
                value = m.value()
                assert value is not None   # the bench produced every message with a value
                buf = io.BytesIO(value)
                buf.seek(10)   # the same single-object header our codec reads
                schemaless_reader(buf, parsed, None)
                got += 1
    assert t0 is not None   # set with the first batch; the loop ran until n arrived
    rate = n / (time.perf_counter() - t0)
    c.close()
    return rate


def _own_consume(settings, topic: str, n: int) -> float:
    started: list[float] = []   # the time of the first event

    def handler(env):
        if not started:
            started.append(time.perf_counter())

    runner = ConsumerRunner(settings, group_id=f"bench-own-{uuid.uuid4().hex[:6]}", topics=[topic], handler=handler,
                            name="bench", max_batch=10000)
    runner.run(max_events=n)
    return n / (time.perf_counter() - started[0])


def run(quick: bool) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker("127.0.0.1", free_port(), Path(tmp))
        broker.start()
        try:
            s = load_settings(stack={"data_dir": tmp}).with_overrides(kafka={
                "bootstrap_servers": broker.bootstrap, "session_timeout_ms": 2000, "heartbeat_interval_ms": 500,
                "topic_prefix": "bench", "default_partitions": 3})
            own_topic = s.topic("bench.telemetry")
            ensure_topics(s, extra=[NewTopic(own_topic, 3, 1)])
            records = [telemetry_record(i) for i in range(n)]
            # Two telemetry topics: a catalogued topic carries only its own event types (infra/kafka/edge.py),
            # so the second side gets a scratch topic outside the catalogue, created like any other.
            base_topic = s.topic("inference.telemetry")
            # Interleave the two sides so neither gets a warmer machine.
            own_p = _own_produce(s, own_topic, records)
            base_p = _baseline_produce(s, base_topic, [dict(r) for r in records])
            own_c = _own_consume(s, own_topic, n)
            base_c = _baseline_consume(s, base_topic, n)
        finally:
            broker.stop()
    rec = []
    for side, own, base in (("produce (encode + send)", own_p, base_p), ("consume (poll + decode)", own_c, base_c)):
        rec.append({"figure": f"telemetry events/s, {side}, {n:,} events", "value": round(own), "unit": "events/s",
                    "baseline": "bare fastavro + bare confluent-kafka", "baseline_value": round(base),
                    "ratio": round(own / base, 3), "target": "≥ 0.8×", "met": own / base >= 0.8})
    return rec


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
