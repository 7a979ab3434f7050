"""Telemetry sink benchmark: Kafka → queryable ClickHouse rows, end-to-end lag, dashboard query time.

Everything runs as in production: a real tansu broker, the embedded ClickHouse
owner (``infra.clickhouse.server``) as its own process, and the sink as its own
process (``python -m consumers.telemetry_sink``) talking to the owner over HTTP.

* Throughput: N requests (InferenceTelemetry v4, 1 to 64 rows each, ``BATCHES``) are
  produced first; the figure is the rate at which their served rows become
  queryable in ``inference_rows`` (``count()`` polled), from the first stored row
  to the last, so process start and group join are excluded. Baseline, same run,
  same engine: the same requests and rows built as Arrow tables and bulk inserted
  directly into ``inference_telemetry`` and ``inference_rows`` (``insert_arrow``,
  the same HTTP interface, tables and views), so the ratio is what the sink's path
  (Kafka, Avro parsed by ClickHouse, rows ARRAY JOINed by a view) costs.
* Lag: events produced at a steady rate while the sink runs; lag is
  ``inserted_at - event_time`` of each row as ClickHouse stores it.
* Dashboard: the per-minute dashboard queries over M raw rows (10M full, 1M quick),
  answered from the per-minute aggregates; baseline: the same figures computed
  from the raw rows (``FINAL``) without the materialized views.

Run: ``python -m bench.bench_sink [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.app.stack.clickhouse import ChdbServer
from infra.app.stack.process import free_port
from infra.app.stack.tansu import TansuBroker
from infra.clickhouse import HttpStore
from infra.clickhouse.dashboards import load_dashboard_queries
from infra.clickhouse.migrate import migrate
from infra.clickhouse.rows import inference_rows_arrow, telemetry_arrow
from infra.kafka import EventProducer
from infra.kafka.admin import ensure_topics
from infra.kafka.topics import INFERENCE_TELEMETRY
from infra.settings import load_settings
from schemas.events import new_header, now_us

ROOT = Path(__file__).resolve().parents[1]


BATCHES = (1, 1, 8, 64)     # rows per request, in turn: mostly single rows, some batches (18.5 rows per request)


def telemetry_record(i: int, model: str = "churn") -> dict:
    """One InferenceTelemetry v4 value as the served model writes it, with its rows (the i-th of BATCHES, in
    turn) as row_* columns."""
    t = now_us()
    n = BATCHES[i % len(BATCHES)]
    preds = ["yes" if (i + r) % 3 else "no" for r in range(n)]
    return {"header": new_header("bench"), "request_id": f"r{i}", "model_name": model, "model_version": 1 + i % 2,
            "received_at": t - 900, "completed_at": t, "latency_us": 900 + i % 500, "stage_latency_us": {"model": 600},
            "batch_size": n, "numeric_names": ["tenure", "charges", "calls"], "numeric_means": [12.0, 70.5, 2.0],
            "categorical_names": ["contract", "region"], "categorical_values": ["monthly", "west"],
            "prediction": preds[0], "prediction_value": float(preds[0] == "yes"), "confidence": 0.81,
            "status": "ok", "error": None, "row_keys": [], "row_predictions": preds,
            "row_values": [float(p == "yes") for p in preds], "row_confidences": [0.81] * n,
            "row_probabilities": [x for p in preds for x in ((0.19, 0.81) if p == "yes" else (0.81, 0.19))],
            "row_numeric_values": [[12.0 + r for r in range(n)], [70.5] * n, [float(r % 4) for r in range(n)]],
            "row_categorical_values": [["monthly"] * n, ["west" if r % 2 else "east" for r in range(n)]]}


def rows_in(records: list[dict]) -> int:
    return sum(len(r["row_predictions"]) for r in records)


def _count(store, table: str = "inference_telemetry") -> int:
    return int(store.query_rows(f"SELECT count() AS n FROM {table}")[0]["n"])


def _sink_process(settings, log_path: Path, max_batch: int, group: str = "bench-sink") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update({"MODELBUS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "MODELBUS_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
                "MODELBUS_KAFKA__SESSION_TIMEOUT_MS": "2000", "MODELBUS_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
                "MODELBUS_CLICKHOUSE__URL": settings.clickhouse.url,
                "MODELBUS_CLICKHOUSE__DATABASE": settings.clickhouse.database,
                "MODELBUS_STACK__DATA_DIR": settings.stack.data_dir, "PYTHONPATH": str(ROOT)})
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "consumers.telemetry_sink", "--group", group,
                             "--max-batch", str(max_batch), "--max-wait-s", "0.1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_rows(store, n: int, proc: subprocess.Popen, timeout: float) -> tuple[float, float, int]:
    """(time of the first stored row, time all n served rows are stored, rows at first sight), polling count()."""
    first_t, first_n, deadline = None, 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = _count(store, "inference_rows")
        now = time.perf_counter()
        if c and first_t is None:
            first_t, first_n = now, c
        if c >= n:
            assert first_t is not None, "no rows to wait for"   # set when the first rows showed up
            return first_t, now, first_n
        if proc.poll() is not None:
            raise RuntimeError(f"sink exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"only {_count(store, 'inference_rows')} of {n} rows stored within {timeout:.0f}s")


def _throughput(settings, store, base_store, n: int, max_batch: int, log_path: Path) -> tuple[dict, subprocess.Popen]:
    records = [telemetry_record(i) for i in range(n)]
    total = rows_in(records)
    producer = EventProducer(settings, name="bench")
    topic = settings.topic(INFERENCE_TELEMETRY)
    for i, rec in enumerate(records):
        producer.send(topic, "InferenceTelemetry", rec, key=f"k{i % 16}")
    producer.flush(120)

    proc = _sink_process(settings, log_path, max_batch)
    t_first, t_last, n_first = _wait_rows(store, total, proc, timeout=600)
    sink_rate = (total - n_first) / (t_last - t_first)

    requests, rows = telemetry_arrow(records), inference_rows_arrow(records)   # built outside the timing
    t0 = time.perf_counter()
    base_store.insert_arrow("inference_telemetry", requests)
    base_store.insert_arrow("inference_rows", rows)
    base_rate = total / (time.perf_counter() - t0)
    assert _count(base_store) == n and _count(base_store, "inference_rows") == total
    return {"sink": sink_rate, "base": base_rate, "events": n, "rows": total, "events_per_s": sink_rate * n / total,
            "stored": _count(store, "inference_rows"),
            "unique": store.query_rows("SELECT uniqExact(event_id, row_index) AS u FROM inference_rows")[0]["u"]}, \
        proc


def _lag(settings, store, rate: int, seconds: float) -> dict:
    producer = EventProducer(settings, name="bench-lag")
    topic = settings.topic(INFERENCE_TELEMETRY)
    run_id = uuid.uuid4().hex[:8]
    total = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(total):
        rec = telemetry_record(i)      # the same mix of 1 to 64 rows per request as the throughput figure
        rec["request_id"] = f"lag-{run_id}-{i}"
        producer.send(topic, "InferenceTelemetry", rec, key=f"k{i % 16}")
        ahead = (i + 1) / rate - (time.perf_counter() - t0)
        if ahead > 0.002:
            time.sleep(ahead)
    producer.flush(60)
    deadline = time.monotonic() + 60
    q = "SELECT count() AS n FROM inference_telemetry WHERE startsWith(request_id, {p:String})"
    while store.query_rows(q, {"p": f"lag-{run_id}-"})[0]["n"] < total and time.monotonic() < deadline:
        time.sleep(0.1)
    row = store.query_rows(
        "SELECT count() AS n, quantiles(0.5, 0.99)(dateDiff('microsecond', event_time, inserted_at)) AS q "
        "FROM inference_telemetry WHERE startsWith(request_id, {p:String})", {"p": f"lag-{run_id}-"})[0]
    return {"n": row["n"], "total": total, "p50_s": row["q"][0] / 1e6, "p99_s": row["q"][1] / 1e6}


# n rows over 6 h for 5 models × 2 versions, generated by the engine (10M rows from Python would measure Python).
_GENERATE = """
INSERT INTO inference_telemetry (event_id, event_time, producer, correlation_id, request_id, model_name,
    model_version, received_at, completed_at, latency_us, batch_size, prediction, prediction_value, confidence,
    status, kafka_topic, kafka_partition, kafka_offset)
SELECT hex(number + {base:UInt64}) AS id,
       {start:DateTime64(6)} + toIntervalMicrosecond(cityHash64(number, {base:UInt64}, 1) % 21600000000) AS t,
       'bench', id, id, concat('model_', toString(cityHash64(number, 2) % 5)),
       toInt32(1 + cityHash64(number, 3) % 2), t - toIntervalMicrosecond(lat), t,
       toInt64(500 + cityHash64(number, 4) % 5000) AS lat, 1, ['no', 'yes', 'maybe'][1 + cityHash64(number, 5) % 3],
       0, (cityHash64(number, 6) % 1000) / 1000, if(cityHash64(number, 7) % 100 = 0, 'error', 'ok'),
       'bench', 0, number + {base:UInt64}
FROM numbers({n:UInt64})
"""


_RAW_PER_MINUTE = """
SELECT toStartOfMinute(event_time) AS minute, model_name, model_version, count() AS requests,
       quantiles(0.5, 0.95, 0.99)(latency_us) AS q
FROM inference_telemetry FINAL
WHERE ({model:String} = '' OR model_name = {model:String}) AND event_time >= {since:DateTime64(6)}
GROUP BY minute, model_name, model_version ORDER BY minute, model_name, model_version
"""


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _dashboard(store, rows: int) -> dict:
    start = datetime.now(UTC) - timedelta(hours=6)
    chunk = 1_000_000
    for i in range(0, rows, chunk):
        store.command(_GENERATE, {"base": i, "start": start, "n": min(chunk, rows - i)})
    assert _count(store) == rows
    params = {"model": "", "since": start - timedelta(minutes=1)}
    q = load_dashboard_queries()
    out = {name: _best_of(lambda n=name: store.query_arrow(q[n], params))
           for name in ("requests_per_minute", "latency_percentiles", "error_rate", "prediction_distribution")}
    out["raw"] = _best_of(lambda: store.query_arrow(_RAW_PER_MINUTE, params), repeats=2)
    return out


def _settings(tmp: str, bootstrap: str, ch_url: str, database: str):
    return load_settings(stack={"data_dir": tmp}).with_overrides(
        kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 2000, "heartbeat_interval_ms": 500,
               "topic_prefix": f"bench{uuid.uuid4().hex[:6]}", "default_partitions": 4},
        clickhouse={"url": ch_url, "database": database})


def run(quick: bool) -> list[dict]:
    n = 40_000 if quick else 400_000     # requests: 740,000 or 7.4M served rows (BATCHES)
    dash_rows = 1_000_000 if quick else 10_000_000
    lag_rate, lag_s = (2_000, 5.0) if quick else (5_000, 15.0)
    max_batch = 20_000        # the sink's default
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker("127.0.0.1", free_port(), Path(tmp) / "tansu")
        owner = ChdbServer(load_settings(stack={"data_dir": tmp}, clickhouse={"http_port": free_port()}))
        broker.start()
        owner.start()
        proc = None
        stores = []
        try:
            s = _settings(tmp, broker.bootstrap, owner.url, "bench_sink")
            ensure_topics(s)
            for db in ("bench_sink", "bench_base", "bench_dash"):
                st = HttpStore(owner.url, database=db)
                migrate(st, s.with_overrides(clickhouse={"database": db}).clickhouse)
                stores.append(st)
            sink_store, base_store, dash_store = stores
            tput, proc = _throughput(s, sink_store, base_store, n, max_batch, Path(tmp) / "sink.log")
            lag = _lag(s, sink_store, lag_rate, lag_s)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            dash = _dashboard(dash_store, dash_rows)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            for st in stores:
                st.close()
            owner.stop()
            broker.stop()
    ratio = tput["sink"] / tput["base"]
    rows = tput["rows"]
    dup_note = ("" if tput["stored"] == tput["unique"] == rows
                else f" (stored {tput['stored']}, unique {tput['unique']})")
    recs = [
        {"figure": f"telemetry sink, Kafka → queryable served rows, {n:,} requests of {rows:,} rows{dup_note}",
         "value": round(tput["sink"]), "unit": "rows/s",
         "baseline": "the engine's bulk insert of the same requests and rows (Arrow, same tables and views)",
         "baseline_value": round(tput["base"]), "ratio": round(ratio, 3), "target": "≥ 0.8×", "met": ratio >= 0.8},
        {"figure": f"telemetry sink absolute throughput, {n:,} requests ({rows / n:.2f} rows each)",
         "value": round(tput["events_per_s"]), "unit": "events/s", "baseline": None, "baseline_value": None,
         "ratio": None, "target": None, "met": None},
        {"figure": f"end-to-end lag p99 (event_time → queryable), {lag['n']:,} requests of 1 to 64 rows at "
                   f"{lag_rate:,}/s "
                   f"(p50 {lag['p50_s']:.3f} s)", "value": round(lag["p99_s"], 3), "unit": "s", "baseline": None,
         "baseline_value": None, "ratio": None, "target": "< 2 s",
         "met": lag["p99_s"] < 2.0 and lag["n"] == lag["total"]},
    ]
    scale = "" if dash_rows >= 10_000_000 else f" (quick mode: {dash_rows:,} rows, not 10M)"
    for name in ("requests_per_minute", "latency_percentiles", "error_rate", "prediction_distribution"):
        recs.append({"figure": f"dashboard query '{name}' over {dash_rows:,} rows, 6 h × 10 model versions{scale}",
                     "value": round(dash[name], 4), "unit": "s",
                     "baseline": "same per-minute figures from the raw rows (FINAL, no views)",
                     "baseline_value": round(dash["raw"], 4), "ratio": round(dash[name] / dash["raw"], 4),
                     "target": "< 0.5 s", "met": dash[name] < 0.5})
    return recs


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    for r in run(ap.parse_args().quick):
        print(r)
