"""Dropped telemetry is rows in ClickHouse (issue 16, fault 5): real tansu, metadata sink and ClickHouse.

Events the emitter drops (full buffer) used to be counted only in a log line and a local JSON file, so
per-minute traffic in SQL read low with no sign of it.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from consumers.metadata_sink import build_runner
from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate
from serving.telemetry import TelemetryEmitter, telemetry_event

pytestmark = pytest.mark.stack


def _event(i: int) -> dict:
    return telemetry_event(request_id=f"loss-{i}", model_name="churn", model_version=1, received_at=1,
                           completed_at=2, stages={"model": 1}, batch_size=1)


def test_dropped_events_are_counted_per_process_and_minute_in_clickhouse(isolated_settings, clickhouse_owner):
    s = isolated_settings.with_overrides(clickhouse={"url": clickhouse_owner.url,
                                                     "database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(s.clickhouse.url, database=s.clickhouse.database)
    migrate(store, s.clickhouse)
    runner = build_runner(s, store)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    process = f"churn-0-v1-{uuid.uuid4().hex[:4]}"
    try:
        emitter = TelemetryEmitter(s, process, buffer_size=20, start=False)   # no drain yet: the buffer fills
        for i in range(50):
            emitter.emit(_event(i))
        emitter.start()
        final = emitter.close(15)
        assert (final["accepted"], final["dropped"], final["delivered"]) == (20, 30, 20)

        def losses():
            return store.query_rows("SELECT process, sum(dropped) AS dropped, sum(failed) AS failed, "
                                    "count() AS minutes FROM telemetry_losses WHERE process = {p:String} "
                                    "GROUP BY process", {"p": process})

        deadline = time.monotonic() + 30
        while not losses() and time.monotonic() < deadline:
            time.sleep(0.3)
        (row,) = losses()
        assert (row["dropped"], row["failed"]) == (30, 0) and row["minutes"] in (1, 2)
    finally:
        runner.stop()
        thread.join(30)
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
