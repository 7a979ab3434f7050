"""The metrics scraper as a real subprocess: the session's Triton → ServerMetrics on a real tansu topic."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.app.stack.triton import settings_env
from infra.kafka.config import consumer_config
from infra.kafka.topics import SERVING_METRICS
from schemas.codec import AvroCodec

pytestmark = pytest.mark.stack


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update(settings_env(settings), PYTHONPATH=os.getcwd())
    return env


def _read(settings, expect: int, timeout: float = 30.0) -> list[dict]:
    topic = settings.topic(SERVING_METRICS)
    c = Consumer(consumer_config(settings.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, deadline, codec = [], time.monotonic() + timeout, AvroCodec()
    while len(out) < expect and time.monotonic() < deadline:
        out += [codec.decode(m.value()).value for m in c.consume(100, 0.3) if m.error() is None]
    c.close()
    return out


@pytest.fixture
def scraper_settings(isolated_settings, serving_settings):
    return isolated_settings.with_overrides(triton=serving_settings.triton.model_dump())


def test_scraper_publishes_server_metrics_until_sigterm(scraper_settings, triton):
    s = scraper_settings
    proc = subprocess.Popen([sys.executable, "-m", "consumers.scraper", "--interval", "0.2"], env=_env(s),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=os.getcwd())
    try:
        records = _read(s, expect=3)
        assert len(records) >= 3, proc.stderr.read1(4000) if proc.poll() is not None else "too few scrapes"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    counts = ast.literal_eval(out.decode().strip().splitlines()[-1])
    assert counts["scrapes"] >= 3 and counts["failures"] == 0 and counts["undelivered"] == 0
    assert counts["sent"] == counts["scrapes"]
    for rec in records:
        assert rec["server"] == triton.metrics_url
        assert rec["samples"] and all(x["name"].startswith("nv_") for x in rec["samples"])
    # Each scrape is its own event, in order.
    times = [rec["header"]["event_time"] for rec in records]
    assert times == sorted(times) and len({str(r["header"]["event_id"]) for r in records}) == len(records)


def test_dead_endpoint_is_counted_not_fatal(scraper_settings):
    s = scraper_settings
    res = subprocess.run([sys.executable, "-m", "consumers.scraper", "--url", "http://127.0.0.1:9/metrics",
                          "--interval", "0.05", "--max-scrapes", "3"], env=_env(s), capture_output=True,
                         cwd=os.getcwd(), timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    counts = ast.literal_eval(res.stdout.decode().strip().splitlines()[-1])
    assert counts == {"scrapes": 0, "failures": 3, "sent": 0, "undelivered": 0}
    assert b"cannot scrape http://127.0.0.1:9/metrics" in res.stderr
    assert _read(s, expect=1, timeout=2.0) == []
