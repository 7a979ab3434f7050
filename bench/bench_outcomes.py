"""Outcome benchmarks: joining outcomes to served rows, and the live-quality query over many labelled rows.

The embedded ClickHouse owner runs as its own process, as in production; served and labelled rows are
generated inside the engine (``numbers()``), so the timing is ClickHouse's, not Python's row building.

* Join: N outcomes for rows among S served rows go through the outcome sink's own write path
  (``OutcomeSink._write``: store the reports, join them in ClickHouse, record the orphans), in batches of
  the sink's largest buffer (100,000). Baseline, same run and engine: the same outcomes joined by one
  ``INSERT ... SELECT`` with a hash join (no sink in between). Target: ≥ 100,000 outcomes/s.
* Live quality: ``v_live_quality`` over M labelled rows (10M full, 1M quick), for one model. Target: < 0.5 s.
  Baseline: a plain scan of the same rows (count and accuracy only).

Run: ``python -m bench.bench_outcomes [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime

from consumers.outcome_sink import OutcomeSink
from infra.app.stack.clickhouse import ChdbServer
from infra.app.stack.process import free_port
from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate
from infra.settings import load_settings

SERVED_SQL = """
INSERT INTO inference_rows (event_id, event_time, request_id, row_index, prediction_id, model_name, model_version,
    prediction, prediction_value, confidence, scores, numeric_names, numeric_values, categorical_names,
    categorical_values, status, smoke)
SELECT toString(intDiv(number, 64)), now64(6) - toIntervalSecond(intDiv(number, 64) % 3000),
       toString(intDiv(number, 64)), toInt32(number % 64), concat(toString(intDiv(number, 64)), ':',
       toString(number % 64)), 'bench', 1, if(number % 3 = 0, 'yes', 'no'), toFloat64(number % 3 = 0),
       0.5 + (number % 50) / 100, if(number % 3 = 0, [0.5 - (number % 50) / 100, 0.5 + (number % 50) / 100],
       [0.5 + (number % 50) / 100, 0.5 - (number % 50) / 100]), [], [], ['region'],
       [['north', 'south'][number % 2 + 1]], 'ok', false
FROM numbers({n:UInt64})
"""
LABELLED_SQL = """
INSERT INTO labelled_rows (model_name, model_version, ref, prediction_id, served_at, observed_at, label_delay_s, task,
    prediction, predicted_index, prediction_value, confidence, scores, label, label_index, categorical_names,
    categorical_values, outcome_event_id)
SELECT 'bench', 1, concat('id:', toString(number)), toString(number),
       now64(6) - toIntervalSecond(number % 86400), now64(6), number % 3600, 'binary',
       if(number % 3 = 0, 'yes', 'no'), toInt32(number % 3 = 0), toFloat64(number % 3 = 0),
       0.5 + (number % 50) / 100, [0.5 - (number % 50) / 100, 0.5 + (number % 50) / 100],
       if(number % 5 = 0, 'no', 'yes'), toInt32(number % 5 != 0), ['region'], [['north', 'south'][number % 2 + 1]],
       toString(number)
FROM numbers({n:UInt64})
"""
SQL_JOIN = """
INSERT INTO labelled_rows (model_name, model_version, ref, prediction_id, served_at, observed_at, label_delay_s, task,
    prediction, predicted_index, prediction_value, confidence, scores, label, label_index, categorical_names,
    categorical_values, outcome_event_id)
SELECT o.model_name, r.model_version, o.ref, r.prediction_id, r.event_time, o.observed_at,
       dateDiff('second', r.event_time, o.observed_at), 'binary', r.prediction, toInt32(r.prediction_value),
       r.prediction_value, r.confidence, r.scores, o.label, indexOf(['no', 'yes'], assumeNotNull(o.label)) - 1,
       r.categorical_names, r.categorical_values, o.event_id
FROM (SELECT * FROM outcomes FINAL WHERE model_name = 'bench') AS o
INNER JOIN (SELECT * FROM inference_rows WHERE model_name = 'bench') AS r ON r.prediction_id = o.prediction_id
"""
MODEL = ("{\"event_id\": \"m\", \"event_time\": \"2026-01-01 00:00:00.000000\", \"producer\": \"bench\", "
         "\"correlation_id\": \"c\", \"model_name\": \"bench\", \"model_version\": 1, \"task\": \"binary\", "
         "\"labels\": [\"no\", \"yes\"]}\n")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _outcomes(served: int, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    now = datetime.now(UTC)      # as the sink's outcome_row builds them: aware datetimes
    return [{"event_id": f"o{i}", "event_time": now, "producer": "bench", "model_name": "bench",
             "ref": f"id:{pid // 64}:{pid % 64}", "prediction_id": f"{pid // 64}:{pid % 64}", "row_key": None,
             "label": "yes" if i % 4 else "no", "value": None, "observed_at": now, "source": "bench"}
            for i, pid in enumerate(rng.sample(range(served), n))]


def _join(store, served: int, n: int, batch: int = 100_000) -> dict:
    outcomes = _outcomes(served, n)
    sink = OutcomeSink(store, rematch_every_s=1e9)
    def write_all() -> None:
        for i in range(0, n, batch):
            sink._write(outcomes[i:i + batch])

    sink_s = _timed(write_all)
    joined = store.query_rows("SELECT count() AS n FROM labelled_rows FINAL WHERE model_name = 'bench'")[0]["n"]
    store.command("TRUNCATE TABLE labelled_rows")
    sql_s = _timed(lambda: store.command(SQL_JOIN))
    return {"sink": n / sink_s, "sql": n / sql_s, "joined": joined, "n": n}


def _quality(store, rows: int) -> dict:
    store.command("TRUNCATE TABLE labelled_rows")
    store.command(LABELLED_SQL, {"n": rows})
    store.command("OPTIMIZE TABLE labelled_rows FINAL")
    query = "SELECT * FROM v_live_quality WHERE model_name = 'bench'"
    scan = ("SELECT toStartOfHour(served_at) AS w, count(), avg(predicted_index = label_index) "
            "FROM labelled_rows FINAL WHERE model_name = 'bench' GROUP BY w")
    store.query_rows(query)                                             # warm
    view_s = min(_timed(lambda: store.query_rows(query)) for _ in range(3))
    scan_s = min(_timed(lambda: store.query_rows(scan)) for _ in range(3))
    return {"view_s": view_s, "scan_s": scan_s}


def run(quick: bool) -> list[dict]:
    served, n, labelled = (1_000_000, 200_000, 1_000_000) if quick else (10_000_000, 1_000_000, 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        owner = ChdbServer(load_settings(stack={"data_dir": tmp}, clickhouse={"http_port": free_port()}))
        owner.start()
        try:
            settings = load_settings(stack={"data_dir": tmp}, clickhouse={"database": "bench_outcomes"})
            store = HttpStore(owner.url, database="bench_outcomes")
            migrate(store, settings.clickhouse)
            store.insert_raw("models", MODEL.encode(), "JSONEachRow")
            store.command(SERVED_SQL, {"n": served})
            join = _join(store, served, n)
            quality = _quality(store, labelled)
            store.close()
        finally:
            owner.stop()
    ratio = join["sink"] / join["sql"]
    return [
        {"figure": f"outcome join through the outcome sink, {n:,} outcomes over {served:,} served rows "
                   f"({join['joined']:,} joined)", "value": round(join["sink"]), "unit": "outcomes/s",
         "baseline": "the same join as one INSERT ... SELECT in the engine", "baseline_value": round(join["sql"]),
         "ratio": round(ratio, 3), "target": "≥ 100,000 outcomes/s",
         "met": join["sink"] >= 100_000 and join["joined"] == n},
        {"figure": f"live-quality view (v_live_quality) over {labelled:,} labelled rows", "value":
         round(quality["view_s"], 3), "unit": "s", "baseline": "plain scan: count and accuracy per hour",
         "baseline_value": round(quality["scan_s"], 3), "ratio": round(quality["view_s"] / quality["scan_s"], 2),
         "target": "< 0.5 s", "met": quality["view_s"] < 0.5},
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for r in run(args.quick):
        print(f"{r['figure']}: {r['value']} {r['unit']} (baseline {r['baseline_value']}, target {r['target']}, "
              f"met {r['met']})")


if __name__ == "__main__":
    main()
