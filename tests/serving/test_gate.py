"""Promotion gate decisions (pure functions, no Triton)."""

from __future__ import annotations

import pytest

from infra.errors import ConfigError
from infra.settings import load_settings
from schemas.codec import AvroCodec
from schemas.events import new_header
from serving.gate import GatePolicy, decide, evaluate


def model(version: int, value: float, *, metric="roc_auc", higher=True, baselines=None, slices=None) -> dict:
    return {"model_name": "churn", "model_version": version, "primary_metric": metric, "higher_is_better": higher,
            "metrics": {metric: value, "accuracy": 0.7},
            "baseline_metrics": {"majority": {metric: 0.5}, "linear": {metric: 0.7}} if baselines is None else baselines,
            "slice_metrics": [{"column": "region", "value": k, "count": 50, "metrics": {metric: v}}
                              for k, v in (slices or {}).items()]}


def by_name(decision) -> dict:
    return {c["name"]: c for c in decision.checks}


def test_first_model_deploys_when_it_beats_every_baseline():
    d = evaluate(model(1, 0.8), None, GatePolicy())
    assert d.passed and d.champion_version is None and d.reason == ""
    checks = by_name(d)
    assert checks["beats_baseline:linear"] == {"name": "beats_baseline:linear", "passed": True, "value": 0.8,
                                               "threshold": 0.7, "detail": checks["beats_baseline:linear"]["detail"]}
    assert "beats_champion" not in checks


def test_first_model_losing_to_a_baseline_is_rejected_with_numbers():
    d = evaluate(model(1, 0.65), None, GatePolicy())
    assert not d.passed
    assert [c["name"] for c in d.failed] == ["beats_baseline:linear"]
    assert "0.65 vs baseline linear 0.7" in d.reason
    assert by_name(d)["beats_baseline:majority"]["passed"]


def test_champion_must_be_beaten_by_the_margin():
    champion = model(1, 0.80)
    assert evaluate(model(2, 0.83), champion, GatePolicy(primary_metric_margin=0.02)).passed
    d = evaluate(model(2, 0.81), champion, GatePolicy(primary_metric_margin=0.02))
    c = by_name(d)["beats_champion"]
    assert not d.passed and c["value"] == 0.81 and c["threshold"] == pytest.approx(0.82)
    assert d.champion_metric == 0.80 and d.champion_version == 1
    tie = evaluate(model(2, 0.80), champion, GatePolicy())
    assert not tie.passed, "equal to the champion is not beating it"


def test_lower_is_better_metrics_are_direction_aware():
    kw = dict(metric="rmse", higher=False, baselines={"mean": {"rmse": 10.0}})
    champion = model(1, 5.0, **kw)
    assert evaluate(model(2, 4.0, **kw), champion, GatePolicy(primary_metric_margin=0.5)).passed
    worse = evaluate(model(2, 6.0, **kw), champion, GatePolicy())
    assert [c["name"] for c in worse.failed] == ["beats_champion"]
    assert by_name(worse)["beats_champion"]["threshold"] == 5.0
    assert not evaluate(model(1, 11.0, **kw), None, GatePolicy()).passed  # worse than the mean baseline


def test_slice_regression_beyond_tolerance_blocks_even_a_better_model():
    champion = model(1, 0.80, slices={"EU": 0.85, "US": 0.75})
    cand = model(2, 0.90, slices={"EU": 0.78, "US": 0.95, "APAC": 0.1})
    d = evaluate(cand, champion, GatePolicy(slice_tolerance=0.05))
    checks = by_name(d)
    assert not d.passed and [c["name"] for c in d.failed] == ["slice:region=EU"]
    assert checks["slice:region=EU"]["threshold"] == pytest.approx(0.80)
    assert checks["slice:region=US"]["passed"]
    assert "slice:region=APAC" not in checks  # no champion value to regress from
    assert evaluate(cand, champion, GatePolicy(slice_tolerance=0.08)).passed


def test_missing_or_nan_primary_metric_fails_clearly():
    cand = model(2, float("nan"))
    d = evaluate(cand, model(1, 0.8), GatePolicy())
    assert not d.passed and by_name(d)["primary_metric"]["passed"] is False
    assert "no finite value" in d.reason and "cannot compare" in by_name(d)["beats_champion"]["detail"]


def test_policy_per_model_name_overrides_settings():
    s = load_settings(serving={"primary_metric_margin": 0.0, "slice_tolerance": 0.05,
                               "policies": {"churn": {"primary_metric_margin": 0.1}}})
    assert GatePolicy.for_model(s, "churn") == GatePolicy(primary_metric_margin=0.1, slice_tolerance=0.05)
    assert GatePolicy.for_model(s, "other") == GatePolicy(0.0, 0.05)
    assert not decide(model(2, 0.85), model(1, 0.8), s).passed
    bad = load_settings(serving={"policies": {"churn": {"margin": 0.1}}})
    with pytest.raises(ConfigError, match=r"unknown keys \['margin'\]"):
        GatePolicy.for_model(bad, "churn")


def test_checks_are_valid_gatecheck_records():
    d = evaluate(model(2, 0.81, slices={"EU": 0.5}), model(1, 0.8, slices={"EU": 0.9}), GatePolicy())
    event = {"header": new_header("tests"), "model_name": "churn", "model_version": 2, "stage": "gate",
             "reason": d.reason, "checks": d.checks, "champion_version": d.champion_version,
             "primary_metric": d.primary_metric, "metric_value": d.metric_value, "champion_metric": d.champion_metric}
    codec = AvroCodec()
    decoded = codec.decode(codec.encode("DeploymentRejected", event)).value
    assert [c["name"] for c in decoded["checks"]] == [c["name"] for c in d.checks]
