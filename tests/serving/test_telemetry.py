"""In-model telemetry: the bounded buffer counts what it drops, and events really reach Kafka."""

from __future__ import annotations

import json
import logging
import time
import uuid

import numpy as np
import pytest

from infra.app.stack.process import free_port
from infra.settings import load_settings
from schemas.codec import AvroCodec
from serving.errors import InvalidRequest
from serving.reference_model import SAMPLE, build_module, run_module
from serving.telemetry import SMOKE_PARAMETER, STAGES, TelemetryEmitter, is_smoke, telemetry_event
from serving.telemetry_rows import NO_ROWS


def _event(request_id: str = "r1", **kw) -> dict:
    base = dict(request_id=request_id, model_name="churn", model_version=1, received_at=1_700_000_000_000_000,
                completed_at=1_700_000_000_000_450, stages={"decode": 10, "model": 400, "encode": 5}, batch_size=1,
                numeric={"age": 30.0}, categorical={"region": "EU"}, prediction="yes", prediction_value=1.0,
                confidence=0.8)
    base.update(kw)
    return telemetry_event(**base)


def test_events_are_valid_inference_telemetry_records():
    codec = AvroCodec()
    value = codec.decode(codec.encode("InferenceTelemetry", _event(error="boom"))).value
    assert value["latency_us"] == 450 and value["status"] == "error" and value["error"] == "boom"
    assert value["numeric_names"] == ["age"] and value["categorical_values"] == ["EU"]
    assert value["header"]["correlation_id"] == "r1" and value["header"]["producer"] == "serving.triton"
    assert value["smoke"] is False
    assert codec.decode(codec.encode("InferenceTelemetry", _event(smoke=True))).value["smoke"] is True


@pytest.mark.parametrize("params, smoke", [
    (json.dumps({SMOKE_PARAMETER: True}), True),
    (json.dumps({SMOKE_PARAMETER: False, "priority": 1}), False),
    (json.dumps({SMOKE_PARAMETER: "true"}), False),   # only a real boolean marks a smoke test
    ("{}", False), ("", False), ("not json", False), ("[1]", False),
])
def test_only_the_boolean_request_parameter_marks_a_smoke_inference(params, smoke):
    assert is_smoke(params) is smoke


def test_full_buffer_drops_and_counts_instead_of_blocking(tmp_path, caplog):
    settings = load_settings(stack={"data_dir": str(tmp_path)})
    em = TelemetryEmitter(settings, "unit", buffer_size=3, start=False, stats_path=tmp_path / "stats.json")
    accepted = [em.emit(_event(str(i))) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    stats = em.stats()
    assert (stats["accepted"], stats["dropped"], stats["queued"]) == (3, 2, 3)
    with caplog.at_level(logging.INFO, logger="modelbus.serving.telemetry"):
        em.report()
    assert any(r.levelno == logging.WARNING and "dropped=2" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "stats.json").read_text())["dropped"] == 2


def test_unreachable_broker_counts_failures_on_close(tmp_path):
    # A real producer pointed at a port where nothing listens: the emitter must neither block nor lose count.
    settings = load_settings(stack={"data_dir": str(tmp_path)}, kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    em = TelemetryEmitter(settings, "down", buffer_size=100)
    t0 = time.monotonic()
    for i in range(20):
        em.emit(_event(str(i)))
    assert time.monotonic() - t0 < 0.5
    final = em.close(timeout=1.0)
    assert final["accepted"] == 20 and final["delivered"] == 0 and final["failed"] == 20


@pytest.mark.stack
def test_emitter_delivers_to_kafka_and_counts_schema_refusals(kafka_settings, tmp_path):
    em = TelemetryEmitter(kafka_settings, "direct", buffer_size=100)
    for i in range(3):
        em.emit(_event(f"direct-{i}"))
    em.emit({**_event("bad"), "latency_us": "not a number"})
    final = em.close(timeout=15.0)
    assert (final["delivered"], final["failed"], final["invalid"]) == (3, 0, 1)


@pytest.mark.stack
def test_served_requests_emit_telemetry_that_arrives_in_kafka(deployed_churn, model_client, serving_settings,
                                                              telemetry_events):
    run = uuid.uuid4().hex[:8]
    ok_ids = [f"ok-{run}-{i}" for i in range(5)]
    for rid in ok_ids:
        model_client.predict("churn", SAMPLE, request_id=rid)
    bad_id = f"bad-{run}"
    with pytest.raises(InvalidRequest):
        model_client.predict("churn", {**SAMPLE, "age": [np.nan, 1.0, 2.0, 3.0]}, request_id=bad_id)
    flagged, imposter = f"flagged-{run}", f"modelbus-smoke-{run}"   # the flag marks it, never the id's text
    model_client.predict("churn", SAMPLE, request_id=flagged, parameters={SMOKE_PARAMETER: True})
    model_client.predict("churn", SAMPLE, request_id=imposter)
    deployer_smoke = "modelbus-smoke-churn-v1"   # the deployer's own smoke inference when it loaded version 1
    found = telemetry_events(serving_settings, "churn", set(ok_ids) | {bad_id, flagged, imposter, deployer_smoke})
    assert set(found) == set(ok_ids) | {bad_id, flagged, imposter, deployer_smoke}
    assert {rid for rid, ev in found.items() if ev["smoke"]} == {deployer_smoke, flagged}
    scores, label = run_module(build_module(seed=0), SAMPLE)
    ev = found[ok_ids[0]]
    assert (ev["model_name"], ev["model_version"], ev["batch_size"], ev["status"]) == ("churn", 1, 4, "ok")
    assert ev["numeric_names"] == ["age", "income"]
    assert ev["numeric_means"] == pytest.approx([np.mean(SAMPLE["age"]), np.mean(SAMPLE["income"])])
    assert ev["categorical_names"] == ["region"] and ev["categorical_values"] == ["EU"]
    assert ev["prediction"] == ["no", "yes"][int(label[0, 0])] and ev["prediction_value"] == float(label[0, 0])
    assert ev["confidence"] == pytest.approx(float(scores[0, label[0, 0]]), rel=1e-5)
    assert set(ev["stage_latency_us"]) == set(STAGES) and ev["latency_us"] >= ev["stage_latency_us"]["model"]
    assert ev["completed_at"] >= ev["received_at"]
    # Every row of the batch, not only row 0, as columns: one value per row.
    assert ev["row_keys"] == []                                                          # the client sent none
    assert ev["row_predictions"] == [["no", "yes"][int(k)] for k in label[:, 0]]
    assert ev["row_values"] == [float(k) for k in label[:, 0]]
    assert ev["row_confidences"] == pytest.approx([float(scores[i, label[i, 0]]) for i in range(4)], rel=1e-5)
    np.testing.assert_allclose(ev["row_probabilities"], scores.reshape(-1), rtol=1e-5)        # row after row
    np.testing.assert_allclose(ev["row_numeric_values"], [SAMPLE["age"], SAMPLE["income"]])
    assert ev["row_categorical_values"] == [[str(v) for v in SAMPLE["region"]]]
    bad = found[bad_id]
    assert bad["status"] == "error" and "NaN" in bad["error"] and bad["batch_size"] == 4   # the rows it held
    assert all(bad[f] == [] for f in NO_ROWS)                                             # none was served
