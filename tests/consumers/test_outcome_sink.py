"""Outcomes joined to served rows on the real stack: broker, the outcome sink's runner, ClickHouse.

Served rows go in through the telemetry sink's own insert path (``insert_telemetry``); outcomes are
published with the SDK (and, for the bad ones an outside producer might send, as raw events).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumers.outcome_sink import OutcomeSink, build_runner
from infra.clickhouse.rows import write_events
from infra.kafka.dead_letters import dead_letters
from producers.sdk import ModelBus
from schemas.events import new_header
from tests.clickhouse_db import insert_telemetry

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
LABELS = ["no", "yes"]


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _model(store, name="churn", task="binary", version=1, labels=None):
    from schemas.codec import AvroCodec

    value = {"header": new_header("consumers.training"), "model_name": name, "model_version": version, "run_id": "r",
             "dataset_name": "d", "dataset_version": "v1", "artifact_uri": "a", "checksum": "c", "task": task,
             "primary_metric": "roc_auc", "metrics": {}, "signature_json": "{}",
             "labels": labels if labels is not None else (LABELS if task != "regression" else [])}
    codec = AvroCodec()
    write_events(store, [("ModelRegistered", codec.decode(codec.encode("ModelRegistered", value),
                                                          "ModelRegistered").value)])


def _served(store, request_id: str, predicted: list[int], at: datetime, keys: list[str] | None = None,
            model="churn", version=1):
    """One served request of len(predicted) rows (class index per row), as the model server reports it."""
    h = new_header("serving.triton")
    h["event_time"] = _us(at)
    rows = [{"index": i, "key": keys[i] if keys else None, "prediction": LABELS[p], "prediction_value": float(p),
             "confidence": 0.9 if p else 0.8, "scores": [0.1, 0.9] if p else [0.8, 0.2], "numeric": [],
             "categorical": ["EU" if i % 2 else "US"]} for i, p in enumerate(predicted)]
    insert_telemetry(store, [{"header": h, "request_id": request_id, "model_name": model, "model_version": version,
                              "received_at": _us(at), "completed_at": _us(at), "latency_us": 1,
                              "batch_size": len(rows), "categorical_names": ["region"], "rows": rows,
                              "prediction": rows[0]["prediction"], "status": "ok"}])


def _run(settings, ch, sink=None):
    sink = sink or OutcomeSink(ch, rematch_every_s=0.0)
    runner = build_runner(settings, ch, sink=sink)
    return runner.run(idle_timeout=3.0), sink


def _quality(ch, window: datetime) -> dict:
    rows = ch.query_rows("SELECT * FROM v_live_quality WHERE model_name = 'churn' AND window_start = "
                         "toDateTime64({w:DateTime64(6)}, 0, 'UTC')", {"w": window})
    return rows[0] if rows else {}


def test_outcomes_join_once_latest_wins_late_ones_update_their_window(sink_settings, ch):
    _model(ch)
    _served(ch, "now", [1, 1, 0, 0], NOW)
    old = NOW - timedelta(hours=3)
    _served(ch, "old", [1, 0], old, keys=["order-1", "order-2"])
    with ModelBus(sink_settings) as mb:
        mb.report_outcomes([{"model_name": "churn", "prediction_id": "now:0", "label": "yes"},
                            {"model_name": "churn", "prediction_id": "now:0", "label": "yes"},   # twice
                            {"model_name": "churn", "prediction_id": "now:1", "label": "no",
                             "observed_at": NOW + timedelta(minutes=1)},
                            {"model_name": "churn", "prediction_id": "now:1", "label": "yes",    # the later wins
                             "observed_at": NOW + timedelta(minutes=5)},
                            {"model_name": "churn", "prediction_id": "now:2", "label": "no"},
                            {"model_name": "churn", "prediction_id": "now:3", "label": "yes"}])
    stats, sink = _run(sink_settings, ch)
    assert stats.processed == 6 and stats.dead_lettered == 0
    q = _quality(ch, NOW.replace(minute=0))
    assert q["labelled"] == 4 and q["accuracy"] == pytest.approx(0.75)      # now:3 predicted no, was yes
    assert q["roc_auc"] == pytest.approx(5 / 6) and q["macro_f1"] == pytest.approx(2 / 3 * 0.5 + 0.8 * 0.5)
    assert ch.query_rows("SELECT count() AS n FROM outcomes FINAL WHERE model_name = 'churn'")[0]["n"] == 4

    assert _quality(ch, old.replace(minute=0)) == {}
    with ModelBus(sink_settings) as mb:                     # weeks later, by the client's own key
        mb.report_outcome("churn", key="order-2", label="yes", observed_at=NOW + timedelta(days=20))
    _run(sink_settings, ch)
    late = _quality(ch, old.replace(minute=0))
    assert late["labelled"] == 1 and late["accuracy"] == 0.0                 # the old window's metric changed
    delay = ch.query_rows("SELECT max_s FROM v_label_delay WHERE model_name = 'churn'")[0]["max_s"]
    assert delay == pytest.approx((timedelta(days=20) + timedelta(hours=3)).total_seconds())


def test_an_unknown_prediction_is_counted_then_joined_when_its_row_arrives(sink_settings, ch):
    _model(ch)
    with ModelBus(sink_settings) as mb:
        mb.report_outcome("churn", prediction_id="later:0", label="yes")
        mb.report_outcome("ghost-model", prediction_id="x:0", label="yes")
    _run(sink_settings, ch)
    orphans = {(r["model_name"], r["reason"]): r["outcomes"] for r in ch.query_rows("SELECT * FROM v_outcome_orphans")}
    assert orphans == {("churn", "unknown prediction"): 1, ("ghost-model", "unknown model"): 1}

    _served(ch, "later", [1], NOW)                          # its telemetry was stored after the outcome
    sink = OutcomeSink(ch, rematch_every_s=0.0)
    assert sink.rematch() == 1
    assert {r["model_name"] for r in ch.query_rows("SELECT * FROM v_outcome_orphans")} == {"ghost-model"}
    assert _quality(ch, NOW.replace(minute=0))["accuracy"] == 1.0


def test_the_true_class_is_indexed_in_the_labels_of_the_version_that_served(sink_settings, ch):
    _model(ch, version=1)                                            # labels no, yes
    _model(ch, task="multiclass", version=2, labels=["yes", "no", "maybe"])
    _served(ch, "v1", [1], NOW)
    _served(ch, "v2", [1], NOW, version=2)
    with ModelBus(sink_settings) as mb:
        mb.report_outcomes([{"model_name": "churn", "prediction_id": f"{r}:0", "label": "yes"} for r in ("v1", "v2")])
    _run(sink_settings, ch)
    rows = {r["model_version"]: r["label_index"] for r in ch.query_rows(
        "SELECT model_version, label_index FROM labelled_rows FINAL WHERE model_name = 'churn'")}
    assert rows == {1: 1, 2: 0}


def _raw(mb, **fields):
    value = {"header": new_header("upstream.app"), "model_name": "churn", "prediction_id": None, "key": None,
             "label": None, "value": None, "observed_at": _us(NOW), "source": "", **fields}
    mb.publish("OutcomeObserved", value)


def test_bad_outcomes_are_dead_lettered_with_the_reason_and_the_sink_carries_on(sink_settings, ch):
    _model(ch)
    _served(ch, "ok", [1], NOW)
    with ModelBus(sink_settings) as mb:
        _raw(mb, prediction_id="ok:0", label="maybe")        # not one of the model's classes
        _raw(mb, prediction_id="ok:0", value=1.0)            # a value for a classifier
        _raw(mb, prediction_id="no-row-index", label="yes")  # malformed prediction id
        _raw(mb, prediction_id="ok:0", key="k", label="yes")  # names both
        _raw(mb, prediction_id="ok:0", label="yes")          # a good one after them
    stats, _ = _run(sink_settings, ch)
    assert stats.dead_lettered == 4 and stats.processed == 1
    assert _quality(ch, NOW.replace(minute=0))["labelled"] == 1
    (topic,) = [t for t in dead_letters(sink_settings) if t.topic.endswith("outcomes.observed.dlq")]
    errors = sorted(d.error for d in topic.latest)
    assert topic.count == 4 and all(d.reason == "poison" for d in topic.latest)
    assert any("'maybe' is not one of model churn's classes" in e for e in errors)
    assert any("is a classifier" in e for e in errors)
    assert any("malformed prediction_id" in e for e in errors)
    assert any("exactly one of prediction_id and key" in e for e in errors)


def test_the_label_free_estimate_is_shown_beside_the_realised_metric(sink_settings, ch):
    import numpy as np

    from schemas.codec import AvroCodec
    from trainer.calibration import expected_accuracy, expected_roc_auc, fit_calibration

    rng = np.random.default_rng(3)
    p1 = rng.beta(2, 2, 2400)
    y = (rng.random(2400) < p1).astype(int)
    scores = np.column_stack([1 - p1, p1])
    cal = fit_calibration("binary", y[:2000], scores[:2000])         # "validation split"
    value = {"header": new_header("consumers.training"), "model_name": "churn", "model_version": 1, "run_id": "r",
             "dataset_name": "d", "dataset_version": "v1", "artifact_uri": "a", "checksum": "c", "task": "binary",
             "primary_metric": "roc_auc", "metrics": {}, "signature_json": "{}", "labels": LABELS,
             "calibration": cal}
    codec = AvroCodec()
    write_events(ch, [("ModelRegistered", codec.decode(codec.encode("ModelRegistered", value),
                                                       "ModelRegistered").value)])
    live, truth = scores[2000:], y[2000:]
    h = new_header("serving.triton")
    h["event_time"] = _us(NOW)
    rows = [{"index": i, "prediction": LABELS[int(s[1] > 0.5)], "prediction_value": float(s[1] > 0.5),
             "confidence": float(s.max()), "scores": s.tolist()} for i, s in enumerate(live)]
    insert_telemetry(ch, [{"header": h, "request_id": "live", "model_name": "churn", "model_version": 1,
                           "received_at": _us(NOW), "completed_at": _us(NOW), "latency_us": 1,
                           "batch_size": len(rows), "rows": rows, "status": "ok"}])
    est = ch.query_rows("SELECT * FROM v_quality_estimate_vs_realised WHERE model_name = 'churn'")[0]
    assert est["rows"] == 400 and est["labelled"] == 0 and est["realised_accuracy"] is None
    assert est["estimated_accuracy"] == pytest.approx(expected_accuracy(cal, live), abs=1e-9)   # SQL = Python
    assert est["estimated_roc_auc"] == pytest.approx(expected_roc_auc(cal, live), abs=1e-6)

    with ModelBus(sink_settings) as mb:                               # the labels arrive
        mb.report_outcomes([{"model_name": "churn", "prediction_id": f"live:{i}", "label": LABELS[t]}
                            for i, t in enumerate(truth)])
    _run(sink_settings, ch)
    est = ch.query_rows("SELECT * FROM v_quality_estimate_vs_realised WHERE model_name = 'churn'")[0]
    realised = float(((live[:, 1] > 0.5).astype(int) == truth).mean())
    assert est["labelled"] == 400 and est["realised_accuracy"] == pytest.approx(realised)
    assert abs(est["estimated_accuracy"] - realised) < 0.06           # 400 rows: the realised value's SE is ~0.023
