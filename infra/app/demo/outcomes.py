"""The demo's ground truth: labelled traffic, outcomes reported now and later, and live quality read back.

The demo knows the true label of every row it generates, so it plays the upstream app: it sends labelled
rows in batches (each row named by a client key), reports the outcomes of half of them at once by
prediction id, and of another quarter later in the run by the client's keys (late labels), leaving a
quarter unlabelled. The report then reads live quality, coverage and the label-free estimate from SQL.
"""

from __future__ import annotations

from typing import Any

from infra.app.demo.data import FEATURES, generate_churn
from infra.settings import Settings

BATCH = 64
LIVE_SQL = """
SELECT model_version, sum(q.labelled) AS n, sum(q.accuracy * q.labelled) / n AS acc,
       avg(q.roc_auc) AS auc, avg(q.log_loss) AS loss, avg(q.calibration_error) AS ece
FROM v_live_quality AS q WHERE model_name = {m:String} GROUP BY model_version ORDER BY model_version
"""
COVERAGE_SQL = """
SELECT model_version, sum(c.rows) AS served, sum(c.labelled) / served AS coverage
FROM v_label_coverage AS c WHERE model_name = {m:String} GROUP BY model_version ORDER BY model_version
"""
ESTIMATE_SQL = """
SELECT model_version, sum(e.estimated_accuracy * e.rows) / sum(e.rows) AS estimate
FROM v_estimated_quality AS e WHERE model_name = {m:String} GROUP BY model_version ORDER BY model_version
"""
DELAY_SQL = "SELECT model_version, p50_s, max_s FROM v_label_delay WHERE model_name = {m:String}"
LABELLED_SQL = "SELECT count() AS n FROM labelled_rows FINAL WHERE model_name = {m:String}"


def labelled_traffic(settings: Settings, model: str, n: int = 1280, seed: int = 21) -> list[dict[str, str]]:
    """Send n generated rows in batches of BATCH with client keys; each row's prediction id, key and true label."""
    from serving.client import ModelClient

    frame = generate_churn(n, seed)
    out = []
    with ModelClient.from_settings(settings) as client:
        for start in range(0, n, BATCH):
            part = frame.iloc[start:start + BATCH]
            keys = [f"order-{seed}-{start + i}" for i in range(len(part))]
            answer = client.predict_rows(model, {c: part[c].tolist() for c in FEATURES}, row_keys=keys)
            out += [{"prediction_id": pid, "key": key, "label": label}
                    for pid, key, label in zip(answer.prediction_ids, keys, part["churned"])]
    return out


def report_outcomes(settings: Settings, model: str, rows: list[dict[str, str]], *, by_key: bool) -> int:
    from producers.sdk import ModelBus

    ref = "key" if by_key else "prediction_id"
    with ModelBus(settings) as mb:
        mb.report_outcomes([{"model_name": model, ref: r[ref], "label": r["label"], "source": "demo"}
                            for r in rows])
    return len(rows)


def labelled(store, model: str) -> int:
    return int(store.query_rows(LABELLED_SQL, {"m": model})[0]["n"])


def live_quality(store, model: str) -> dict[str, Any]:
    """Per serving version: live quality, label coverage, label delay and the estimate beside the realised."""
    params = {"m": model}
    coverage = {r["model_version"]: r for r in store.query_rows(COVERAGE_SQL, params)}
    estimate = {r["model_version"]: r for r in store.query_rows(ESTIMATE_SQL, params)}
    delay = {r["model_version"]: r for r in store.query_rows(DELAY_SQL, params)}
    out = []
    for q in store.query_rows(LIVE_SQL, params):
        v = q["model_version"]
        out.append({"model_version": v, "labelled": q["n"], "accuracy": q["acc"], "roc_auc": q["auc"],
                    "log_loss": q["loss"], "calibration_error": q["ece"],
                    "rows": coverage.get(v, {}).get("served"), "coverage": coverage.get(v, {}).get("coverage"),
                    "estimated_accuracy": estimate.get(v, {}).get("estimate"),
                    "delay_p50_s": delay.get(v, {}).get("p50_s"), "delay_max_s": delay.get(v, {}).get("max_s")})
    return {"versions": out}
