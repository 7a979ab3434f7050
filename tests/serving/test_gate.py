"""Promotion gate decisions (pure functions over events and paired rows, no Triton)."""

from __future__ import annotations

import numpy as np
import pytest

from infra.errors import ConfigError
from infra.settings import load_settings
from schemas.codec import AvroCodec
from schemas.events import new_header
from serving.gate import GatePolicy, decide, evaluate
from serving.paired import PairedRows


def model(version: int, value: float, *, metric="roc_auc", higher=True, baselines=None, slices=None,
          behaviour=None) -> dict:
    return {"model_name": "churn", "model_version": version, "primary_metric": metric, "higher_is_better": higher,
            "metrics": {metric: value, "accuracy": 0.7},
            "baseline_metrics": ({"majority": {metric: 0.5}, "linear": {metric: 0.7}}
                                 if baselines is None else baselines),
            "slice_metrics": [{"column": "region", "value": k, "count": 50, "metrics": {metric: v}}
                              for k, v in (slices or {}).items()],
            "behaviour_tests": behaviour or []}


def by_name(decision) -> dict:
    return {c["name"]: c for c in decision.checks}


def proba(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def rows(y, region=None, **outputs) -> PairedRows:
    y = np.asarray(y)
    ids = np.array([f"{i:016x}" for i in range(len(y))], dtype=object)
    return PairedRows("binary", ids, y, {k: proba(v) for k, v in outputs.items()},
                      {"region": np.asarray(region, dtype=object)} if region is not None else {})


# -- unpaired: events without stored test predictions -----------------------------------------------------------

def test_first_model_without_predictions_is_compared_on_reported_numbers():
    d = evaluate(model(1, 0.8), None, GatePolicy())
    assert d.passed and d.champion_version is None and d.reason == ""
    c = by_name(d)["beats_baseline:linear"]
    assert (c["value"], c["reference_value"], c["rule"], c["margin"]) == (0.8, 0.7, "non_inferiority", 0.01)
    assert c["difference"] == pytest.approx(0.1) and c["threshold"] == pytest.approx(0.69)
    assert c["ci_low"] is None and "unpaired" in c["detail"]
    assert "beats_champion" not in by_name(d)


def test_first_model_losing_to_a_baseline_is_rejected_with_numbers():
    d = evaluate(model(1, 0.65), None, GatePolicy())
    assert not d.passed
    assert [c["name"] for c in d.failed] == ["beats_baseline:linear"]
    assert "0.65 vs baseline linear 0.7" in d.reason
    assert by_name(d)["beats_baseline:majority"]["passed"]


def test_lower_is_better_metrics_are_direction_aware():
    kw = dict(metric="rmse", higher=False, baselines={"mean": {"rmse": 10.0}})
    champion = model(1, 5.0, **kw)
    assert evaluate(model(2, 4.0, **kw), champion, GatePolicy(champion_rule="superiority",
                                                              primary_metric_margin=0.1)).passed   # 10 % of 5
    worse = evaluate(model(2, 6.0, **kw), champion, GatePolicy())
    assert [c["name"] for c in worse.failed] == ["beats_champion"]
    assert by_name(worse)["beats_champion"]["difference"] == pytest.approx(-1.0)
    assert not evaluate(model(1, 11.0, **kw), None, GatePolicy()).passed  # worse than the mean baseline


def test_error_metric_margins_are_a_fraction_of_the_reference_so_units_do_not_decide():
    """The same data in other units (x1000) gets the same decision: rmse margins scale with the reference."""
    rng = np.random.default_rng(3)
    y = rng.normal(50.0, 10.0, 4000)
    champion_out = y + rng.normal(0.0, 5.0, y.size)
    candidate_out = y + (champion_out - y) * 1.004        # 0.4 % worse on every row: inside a 1 % margin
    for scale in (1.0, 1000.0):
        r = PairedRows("regression", np.array([f"{i:016x}" for i in range(y.size)], dtype=object), y * scale,
                       {"candidate": candidate_out * scale, "champion": champion_out * scale,
                        "mean": np.full(y.size, 50.0 * scale)}, {})
        kw = dict(metric="rmse", higher=False, baselines={"mean": {"rmse": 10.0 * scale}})
        d = evaluate(model(2, 5.02 * scale, **kw), model(1, 5.0 * scale, **kw), GatePolicy(), r)
        c = by_name(d)["beats_champion"]
        assert d.passed, d.reason
        assert c["margin"] == pytest.approx(0.01 * c["reference_value"])      # reported in the metric's units
        assert -c["margin"] < c["ci_low"] < -0.01     # a fixed margin of 0.01 would have rejected it


def test_missing_or_nan_primary_metric_fails_clearly():
    d = evaluate(model(2, float("nan")), model(1, 0.8), GatePolicy())
    assert not d.passed and by_name(d)["primary_metric"]["passed"] is False
    assert "no finite value" in d.reason and "cannot compare" in by_name(d)["beats_champion"]["detail"]


# -- paired: the same rows for candidate, baselines and champion --------------------------------------------------

def test_tie_at_the_ceiling_deploys_under_non_inferiority_and_is_rejected_under_superiority():
    y = np.array([0, 1] * 50)
    perfect = y.astype(float)
    r = rows(y, candidate=perfect, majority=np.full(100, 0.5), linear=perfect, champion=perfect)
    cand, champion = model(2, 1.0), model(1, 1.0)
    d = evaluate(cand, champion, GatePolicy(), r)
    c = by_name(d)["beats_champion"]
    assert d.passed, d.reason
    assert (c["n"], c["value"], c["reference_value"], c["difference"], c["ci_low"], c["ci_high"]) == \
        (100, 1.0, 1.0, 0.0, 0.0, 0.0)
    assert c["rule"] == "non_inferiority" and c["confidence"] == 0.95
    assert by_name(d)["beats_baseline:linear"]["passed"]       # a tie with a perfect baseline passes too
    strict = evaluate(cand, champion, GatePolicy(champion_rule="superiority", primary_metric_margin=0.0), r)
    assert not strict.passed and [c["name"] for c in strict.failed] == ["beats_champion"]
    assert "superiority needs the lower bound > +0" in strict.reason


def _noisy(rng, y, skill):
    return np.clip(np.where(y == 1, skill, 1 - skill) + rng.normal(0, 0.25, len(y)), 0, 1)


def test_significantly_worse_slice_rejects_and_a_small_noisy_slice_does_not():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    region = np.array(["EU"] * 300 + ["US"] * 280 + ["APAC"] * 20, dtype=object)
    champion = _noisy(rng, y, 0.8)
    cand = champion.copy()
    us = region == "US"
    cand[us] = _noisy(rng, y[us], 0.5)                 # clearly worse on US (280 rows)
    ap = region == "APAC"
    cand[ap] = _noisy(rng, y[ap], 0.6)                 # worse on 20 APAC rows: too few to decide
    base = dict(majority=np.full(n, 0.5), linear=np.full(n, 0.5))
    d = evaluate(model(2, 0.7), model(1, 0.8), GatePolicy(primary_metric_margin=0.5), rows(y, region, candidate=cand,
                                                                                           champion=champion, **base))
    checks = by_name(d)
    assert not d.passed and [c["name"] for c in d.failed] == ["slice:region=US"]
    us_check = checks["slice:region=US"]
    assert us_check["n"] == 280 and us_check["ci_high"] < -0.05 and us_check["decisive"]
    assert us_check["rule"] == "no_regression" and us_check["margin"] == 0.05
    small = checks["slice:region=APAC"]
    assert small["n"] == 20 and small["decisive"] is False and "not decisive" in small["detail"]
    assert checks["slice:region=EU"]["passed"] and checks["slice:region=EU"]["difference"] == 0.0

    fine = cand.copy()
    fine[us] = champion[us]
    ok = evaluate(model(2, 0.8), model(1, 0.8), GatePolicy(), rows(y, region, candidate=fine, champion=champion,
                                                                   **base))
    assert ok.passed, ok.reason   # APAC is still worse, on 20 rows: reported, not decisive


def test_paired_comparison_uses_the_rows_not_the_reported_numbers():
    """A lucky reported number does not help: the gate scores both models on the candidate's rows."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    champion, cand = _noisy(rng, y, 0.9), _noisy(rng, y, 0.6)
    d = evaluate(model(2, 0.99), model(1, 0.5), GatePolicy(),
                 rows(y, candidate=cand, champion=champion, majority=np.full(400, .5), linear=np.full(400, .5)))
    c = by_name(d)["beats_champion"]
    assert not d.passed and c["ci_high"] < 0 and c["reference_value"] > c["value"]
    assert d.champion_metric == c["reference_value"]


def test_failed_behavioural_test_rejects_with_its_numbers():
    result = {"name": "region_invariance", "kind": "invariance", "passed": False, "n": 45, "value": 0.2,
              "threshold": 0.0, "detail": "prediction changed on 20.00% of 45 rows"}
    d = evaluate(model(1, 0.8, behaviour=[result]), None, GatePolicy())
    c = by_name(d)["behaviour:region_invariance"]
    assert not d.passed and [x["name"] for x in d.failed] == ["behaviour:region_invariance"]
    assert (c["n"], c["value"], c["threshold"], c["rule"]) == (45, 0.2, 0.0, "behaviour")
    assert evaluate(model(1, 0.8, behaviour=[{**result, "passed": True}]), None, GatePolicy()).passed


def test_policy_per_model_name_overrides_settings():
    s = load_settings(serving={"primary_metric_margin": 0.0, "slice_tolerance": 0.05,
                               "policies": {"churn": {"primary_metric_margin": 0.1, "champion_rule": "superiority",
                                                      "min_slice_rows": 5}}})
    p = GatePolicy.for_model(s, "churn")
    assert (p.primary_metric_margin, p.champion_rule, p.min_slice_rows, p.slice_tolerance) == \
        (0.1, "superiority", 5, 0.05)
    assert GatePolicy.for_model(s, "other") == GatePolicy(primary_metric_margin=0.0)
    assert not decide(model(2, 0.85), model(1, 0.8), s).passed
    bad = load_settings(serving={"policies": {"churn": {"margin": 0.1}}})
    with pytest.raises(ConfigError, match=r"unknown keys \['margin'\]"):
        GatePolicy.for_model(bad, "churn")
    with pytest.raises(ConfigError, match="champion_rule"):
        GatePolicy.for_model(load_settings(serving={"policies": {"churn": {"champion_rule": "best"}}}), "churn")


def test_checks_are_valid_gatecheck_records():
    y = np.array([0, 1] * 20)
    r = rows(y, np.array(["EU"] * 40, dtype=object), candidate=y * 0.9, champion=y * 0.8,
             majority=np.full(40, .5), linear=np.full(40, .5))
    d = evaluate(model(2, 0.81), model(1, 0.8), GatePolicy(), r)
    event = {"header": new_header("tests"), "model_name": "churn", "model_version": 2, "stage": "gate",
             "reason": d.reason, "checks": d.checks, "champion_version": d.champion_version,
             "primary_metric": d.primary_metric, "metric_value": d.metric_value, "champion_metric": d.champion_metric}
    codec = AvroCodec()
    decoded = codec.decode(codec.encode("DeploymentRejected", event)).value
    assert [c["name"] for c in decoded["checks"]] == [c["name"] for c in d.checks]
    champ = next(c for c in decoded["checks"] if c["name"] == "beats_champion")
    assert champ["n"] == 40 and champ["rule"] == "non_inferiority" and champ["ci_low"] is not None
