"""Drift that does not storm: persistence over K windows, a minimum effect size, a retraining cool-down, and
performance drift from live quality (realised from outcomes, or estimated from confidences).

Real parts: ClickHouse (the session's embedded owner, a private database) and the broker (fresh topics).
Served rows go in through the telemetry sink's insert path; the outcomes of the performance test through the
outcome sink's write path (its join in ClickHouse).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from consumers.drift import MonitorState, check_once, compute
from consumers.outcome_rows import outcome_row
from consumers.outcome_sink import OutcomeSink
from infra.clickhouse.rows import write_events
from infra.kafka import EventProducer
from infra.kafka import topics as T
from schemas.events import new_header
from tests.clickhouse_db import insert_telemetry
from tests.consumers.test_drift import NOW, _decode, _roundtrip, _us, register, traffic

pytestmark = pytest.mark.stack
W = timedelta(seconds=300)          # monitoring.drift_window_s by default
DRIFTING = {"age", "region", "__prediction__"}


def _shifted_windows(store, k: int, *, now=NOW) -> None:
    """Shifted traffic in each of the k windows ending at now, now - W, ..."""
    for i in range(k):
        traffic(store, "churn", 400, shifted=True, seed=10 + i, end=now - i * W)


def test_k_minus_one_breached_windows_raise_nothing_and_k_raise_one_alert(sink_settings, ch, read_topic):
    settings = sink_settings.with_overrides(monitoring={"drift_persist_windows": 3})
    register(ch, "churn")
    _shifted_windows(ch, 2)
    producer, state = EventProducer(settings, name="tests"), MonitorState()
    two = check_once(ch, settings, producer=producer, state=state, now=NOW)
    assert not any(r.drifted for r in two) and producer.delivered == 0
    assert {r.feature for r in two if r.windows == 2} == DRIFTING       # breached twice: counted, not yet alerted

    traffic(ch, "churn", 400, shifted=True, seed=12, end=NOW - 2 * W)  # the third window breaches too
    three = check_once(ch, settings, producer=producer, state=state, now=NOW + timedelta(seconds=5))
    assert {r.feature for r in three if r.drifted} == DRIFTING
    events = _decode(read_topic(settings, settings.topic(T.MONITORING_DRIFT), 3))
    assert len(events) == 3 and {d.value["windows"] for _, d in events} == {3}
    assert {d.value["kind"] for _, d in events} == {"data"}
    assert all(d.value["effect_size"] > 0 for _, d in events)
    again = check_once(ch, settings, producer=producer, state=state, now=NOW + timedelta(seconds=20))
    assert producer.delivered == 3 and all(r.suppressed for r in again if r.drifted)   # one alert, not a storm


def test_a_breach_below_the_minimum_effect_size_is_not_drift(sink_settings, ch):
    register(ch, "churn")
    _shifted_windows(ch, 1)
    assert {r.feature for r in compute(ch, sink_settings, now=NOW) if r.drifted} == DRIFTING
    strict = sink_settings.with_overrides(monitoring={"drift_min_effect": 0.9})
    results = compute(ch, strict, now=NOW)
    assert not any(r.drifted for r in results) and max(r.effect_size for r in results) < 0.9


def test_the_cool_down_suppresses_a_second_retrain(sink_settings, ch, read_topic):
    settings = sink_settings.with_overrides(monitoring={"retrain_on_drift": True, "retrain_cooldown_s": 3600})
    register(ch, "churn")
    _shifted_windows(ch, 1)
    producer, state = EventProducer(settings, name="tests"), MonitorState()
    check_once(ch, settings, producer=producer, state=state, now=NOW)
    (first,) = _decode(read_topic(settings, settings.topic(T.TRAINING_REQUESTED), 1))
    assert first[1].value["reason"] == "drift"
    write_events(ch, [("TrainingRequested", first[1].value)])           # as the metadata sink stores it

    later = NOW + 4 * W                                                 # a new window, drifting again
    _shifted_windows(ch, 1, now=later)
    for monitor in (state, MonitorState()):                             # this monitor, and a restarted one
        results = check_once(ch, settings, producer=producer, state=monitor, now=later)
        assert {r.feature for r in results if r.drifted and not r.suppressed} <= DRIFTING
        assert {r.action for r in results if r.drifted} == {"none"}
    requests = _decode(read_topic(settings, settings.topic(T.TRAINING_REQUESTED), 2, timeout=5.0))
    assert len(requests) == 1                                           # the alert went out, no second retrain
    after = later + timedelta(seconds=3601)                             # the cool-down is over
    _shifted_windows(ch, 1, now=after)
    results = check_once(ch, settings, producer=producer, state=MonitorState(), now=after)
    assert {r.action for r in results if r.drifted} == {"retrain-requested"}


def _served_and_labelled(store, n: int, correct: int) -> None:
    """n served rows of churn v1 in the last minutes, `correct` of them right according to their outcomes
    (joined by the outcome sink's own write path)."""
    at = NOW - timedelta(minutes=2)
    h = new_header("serving.triton")
    h["event_time"] = _us(at)
    rows = [{"index": i, "prediction": "yes", "prediction_value": 1.0, "confidence": 0.9, "scores": [0.1, 0.9]}
            for i in range(n)]
    insert_telemetry(store, [{"header": h, "request_id": "perf", "model_name": "churn", "model_version": 1,
                              "received_at": _us(at), "completed_at": _us(at), "latency_us": 1, "batch_size": n,
                              "rows": rows, "status": "ok"}])
    OutcomeSink(store)._write([outcome_row(f"o{i}", {"event_time": NOW, "producer": "tests"},
                                           {"model_name": "churn", "prediction_id": f"perf:{i}",
                                            "label": "yes" if i < correct else "no", "observed_at": NOW},
                                           f"id:perf:{i}") for i in range(n)])


def _test_accuracy(store, accuracy: float, calibration=None) -> None:
    value = {"header": new_header("consumers.training"), "model_name": "churn", "model_version": 1, "run_id": "r",
             "dataset_name": "churn", "dataset_version": "v1", "artifact_uri": "a", "checksum": "c",
             "task": "binary", "primary_metric": "roc_auc", "metrics": {"accuracy": accuracy},
             "signature_json": "{}", "labels": ["no", "yes"], "calibration": calibration}
    write_events(store, [("ModelRegistered", _roundtrip("ModelRegistered", value, NOW - timedelta(hours=1)))])


def test_a_realised_quality_drop_is_performance_drift_and_can_retrain(sink_settings, ch, read_topic):
    settings = sink_settings.with_overrides(monitoring={"retrain_on_performance_drop": True})
    _test_accuracy(ch, 0.9)
    _served_and_labelled(ch, 300, correct=180)                          # live accuracy 0.6
    results = check_once(ch, settings, state=MonitorState(), now=NOW)
    (perf,) = [r for r in results if r.drift_kind == "performance"]
    assert perf.drifted and (perf.metric, perf.baseline_value, perf.live_value, perf.estimated) == (
        "accuracy", 0.9, pytest.approx(0.6), False)
    (event,) = _decode(read_topic(settings, settings.topic(T.MONITORING_DRIFT), 1))
    v = event[1].value
    assert (v["kind"], v["feature"], v["metric"], v["estimated"]) == ("performance", "__performance__",
                                                                      "accuracy", False)
    assert v["live_value"] == pytest.approx(0.6) and v["action"] == "retrain-requested"


def test_without_outcomes_the_estimate_raises_performance_drift(sink_settings, ch):
    from trainer.calibration import fit_calibration

    rng = np.random.default_rng(4)
    p1 = rng.beta(2, 2, 3000)
    y = (rng.random(3000) < p1).astype(int)
    _test_accuracy(ch, 0.95, fit_calibration("binary", y, np.column_stack([1 - p1, p1])))
    at = NOW - timedelta(minutes=2)
    h = new_header("serving.triton")
    h["event_time"] = _us(at)
    rows = [{"index": i, "prediction": "yes", "prediction_value": 1.0, "confidence": 0.55, "scores": [0.45, 0.55]}
            for i in range(300)]                                         # unsure rows: about 55 % right
    insert_telemetry(ch, [{"header": h, "request_id": "est", "model_name": "churn", "model_version": 1,
                           "received_at": _us(at), "completed_at": _us(at), "latency_us": 1, "batch_size": 300,
                           "rows": rows, "status": "ok"}])
    (perf,) = [r for r in check_once(ch, sink_settings, publish=False, now=NOW) if r.drift_kind == "performance"]
    assert perf.drifted and perf.estimated and perf.live_value == pytest.approx(0.55, abs=0.06)
