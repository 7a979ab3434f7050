"""Performance drift: live quality of each serving model version against its registered test quality.

Realised from outcomes (``labelled_rows``) when at least
``monitoring.performance_min_rows`` rows of the window have one; for classifiers
with too few outcomes, estimated from the served confidences (``v_estimated_quality``,
CBPE, see ``trainer.calibration``). A drop beyond ``monitoring.performance_max_drop``
is a ``DriftDetected`` of kind 'performance' with the metric, its test value and
its live value (``consumers.drift`` publishes it like data drift).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

PERFORMANCE = "__performance__"

REALISED_SQL = """
SELECT model_name, model_version, any(task) AS kind, count() AS n,
       avgIf(predicted_index = label_index, task != 'regression') AS accuracy,
       sqrt(avgIf(pow(prediction_value - assumeNotNull(value), 2), task = 'regression')) AS rmse
FROM labelled_rows FINAL
WHERE served_at >= {since:DateTime64(6)} AND served_at < {until:DateTime64(6)}
GROUP BY model_name, model_version
"""
ESTIMATED_SQL = """
SELECT model_name, model_version, sum(rows) AS n, sum(estimated_accuracy * rows) / sum(rows) AS accuracy
FROM v_estimated_quality
WHERE window_start >= toStartOfHour({since:DateTime64(6)}) AND window_start < {until:DateTime64(6)}
GROUP BY model_name, model_version
"""
TEST_METRICS_SQL = """
SELECT model_name, model_version, task, metrics
FROM models FINAL
WHERE (model_name, model_version) IN (SELECT model_name, model_version FROM rows_minute
                                     WHERE minute >= toStartOfMinute({since:DateTime64(6)}))
ORDER BY event_time DESC
LIMIT 1 BY model_name, model_version
"""


def _drop(task: str, test: dict[str, float], live: float, max_drop: float) -> tuple[str, float, bool] | None:
    """(metric, test value, dropped?) or None when the model has no test value for it."""
    if task == "regression":
        base = test.get("rmse")
        return None if base is None else ("rmse", base, live > base * (1 + max_drop))
    base = test.get("accuracy")
    return None if base is None else ("accuracy", base, base - live > max_drop)


def performance(store, settings, now: datetime) -> list[dict[str, Any]]:
    """One entry per serving model version with enough rows: metric, test and live value, estimated?, drifted."""
    mon = settings.monitoring
    params = {"since": now - timedelta(seconds=mon.performance_window_s), "until": now}
    realised = {(r["model_name"], int(r["model_version"])): r for r in store.query_rows(REALISED_SQL, params)}
    estimated = {(r["model_name"], int(r["model_version"])): r for r in store.query_rows(ESTIMATED_SQL, params)}
    out = []
    for m in store.query_rows(TEST_METRICS_SQL, {"since": params["since"]}):
        key = (m["model_name"], int(m["model_version"]))
        real, est = realised.get(key), estimated.get(key)
        if real is not None and real["n"] >= mon.performance_min_rows:
            live, n, is_estimate = real["rmse" if m["task"] == "regression" else "accuracy"], real["n"], False
        elif est is not None and m["task"] != "regression" and est["n"] >= mon.performance_min_rows:
            live, n, is_estimate = est["accuracy"], est["n"], True
        else:
            continue
        judged = _drop(m["task"], m["metrics"] or {}, float(live), mon.performance_max_drop)
        if judged is None:
            continue
        metric, base, dropped = judged
        out.append({"model_name": key[0], "model_version": key[1], "metric": metric, "baseline": float(base),
                    "live": float(live), "n": int(n), "estimated": is_estimate, "drifted": dropped})
    return out
