"""A short soak through the real path: Triton → Kafka → telemetry sink process → ClickHouse.

The same code as the "soak" benchmark suite (``bench.bench_soak.soak``), run for
20 s on the session's processes (Triton, tansu, the chdb owner) plus a sink
process of its own, writing to a private ClickHouse database.
"""

from __future__ import annotations

import signal
import subprocess
import uuid

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RATE, SECONDS = 100.0, 20.0


@pytest.fixture
def soak_model(serving_settings, artifact_store, publish_model, model_client) -> str:
    from serving.deploy import deploy

    result = deploy(publish_model("soak", 1), serving_settings, artifact_store, client=model_client)
    assert result.ok, result.reason
    return "soak"


def test_sustained_load_loses_no_telemetry_keeps_lag_bounded_and_every_process_alive(
        soak_model, triton, tansu, clickhouse_owner, serving_settings, tmp_path):
    from bench.bench_sink import _sink_process
    from bench.bench_soak import records, soak
    from infra.clickhouse import HttpStore
    from infra.clickhouse.migrate import migrate

    s = serving_settings.with_overrides(clickhouse={"url": clickhouse_owner.url,
                                                    "database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(s.clickhouse.url, database=s.clickhouse.database)
    migrate(store, s.clickhouse)
    sink = _sink_process(s, tmp_path / "sink.log", max_batch=20_000, group=f"soak-{uuid.uuid4().hex[:8]}")
    try:
        result = soak(grpc_url=triton.grpc_url, model=soak_model, store=store, rate=RATE, duration_s=SECONDS,
                      pids={"triton": triton.running_pid(), "telemetry sink": sink.pid,
                            "clickhouse owner (chdb)": clickhouse_owner.running_pid(),
                            "kafka (tansu)": tansu.running_pid()})
        assert sink.poll() is None, (tmp_path / "sink.log").read_text()[-2000:]
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(30)
        except subprocess.TimeoutExpired:
            sink.kill()
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()

    assert result.errors == 0 and result.answered >= 0.9 * RATE * SECONDS
    assert result.lost == 0 and result.rows == result.unique_rows == result.answered
    assert result.lag_p99_s < 2.0, f"p99 lag {result.lag_p99_s:.3f} s (max {result.lag_max_s:.3f} s)"
    assert result.alive and all(result.alive.values()), result.alive
    # Triton's python backend stub for the model was found and watched, not just the server process.
    assert any(name.startswith("triton python backend stub") for name in result.rss)
    assert all(len(samples) >= SECONDS / 2 for samples in result.rss.values())
    loss = records(result)[0]          # what the benchmark report says about the same run
    assert loss["unit"] == "events lost" and loss["value"] == 0 and loss["met"] is True
