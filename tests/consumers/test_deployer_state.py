"""The deployer's table records and announcement builders (pure functions; no processes needed)."""

from __future__ import annotations

import pytest

from consumers import deploy_events as E
from schemas.codec import AvroCodec
from schemas.events import new_header
from serving.deploy import DeployResult
from serving.gate import GatePolicy, evaluate


def registered(version: int, auc: float, name: str = "churn") -> dict:
    return {"header": new_header("tests"), "model_name": name, "model_version": version, "run_id": f"r{version}",
            "dataset_name": "churn", "dataset_version": "v1", "artifact_uri": f"file:///a/{version}",
            "checksum": "ab" * 32, "task": "binary", "primary_metric": "roc_auc", "higher_is_better": True,
            "metrics": {"roc_auc": auc}, "baseline_metrics": {"linear": {"roc_auc": 0.6}},
            "slice_metrics": [{"column": "region", "value": "EU", "count": 10, "metrics": {"roc_auc": auc}}],
            "reference_stats": [], "signature_json": "{}", "labels": [], "params_json": "{}", "code_version": "",
            "report_uri": None}


def test_decision_ids_are_stable_and_distinct():
    a = E.decision_event_id("churn", 2, E.DEPLOYED)
    assert a == E.decision_event_id("churn", 2, E.DEPLOYED)
    assert len({a, E.decision_event_id("churn", 2, E.REJECTED), E.decision_event_id("churn", 3, E.DEPLOYED),
                E.decision_event_id("churn2", 2, E.DEPLOYED)}) == 4


def test_effective_champion_is_the_newer_of_promotion_and_rollback():
    v1 = E.champion_record(registered(1, 0.8), deployed_event_id="d1", at_us=100)
    v2 = E.champion_record(registered(2, 0.9), deployed_event_id="d2", at_us=200)
    state = E.with_decision(E.with_decision(None, 1, E.DEPLOYED, "d1", champion=v1), 2, E.DEPLOYED, "d2", champion=v2)
    assert E.effective_champion(state, None)["model_version"] == 2
    rollback = {"model_name": "churn", "model_version": 1, "at": 300, "deployed_event_id": "rb", "slice_metrics": []}
    champ = E.effective_champion(state, rollback)
    # The rollback target's full record (slice metrics included) comes from the promotion history.
    assert champ["model_version"] == 1 and champ["slice_metrics"] == v1["slice_metrics"] and champ["at"] == 300
    v3 = E.champion_record(registered(3, 0.85), deployed_event_id="d3", at_us=400)
    state = E.with_decision(state, 3, E.DEPLOYED, "d3", champion=v3)
    assert E.effective_champion(state, rollback)["model_version"] == 3
    # A rollback to a version this deployer never promoted still names a champion.
    assert E.effective_champion(None, rollback)["model_version"] == 1


def test_history_and_decisions_are_bounded(monkeypatch):
    monkeypatch.setattr(E, "HISTORY_KEEP", 3)
    monkeypatch.setattr(E, "DECIDED_KEEP", 4)
    state = None
    for v in range(1, 8):
        rec = E.champion_record(registered(v, 0.5 + v / 100), deployed_event_id=f"d{v}", at_us=v)
        state = E.with_decision(state, v, E.DEPLOYED, f"d{v}", champion=rec)
    assert sorted(state["history"], key=int) == ["5", "6", "7"]
    assert sorted(state["decided"], key=int) == ["4", "5", "6", "7"]
    assert state["champion"]["model_version"] == 7


def test_announcements_are_valid_events_with_every_check():
    codec = AvroCodec()
    champion = E.champion_record(registered(1, 0.8), deployed_event_id="d1", at_us=1)
    cand = registered(2, 0.75)
    decision = evaluate(cand, champion, GatePolicy())
    assert not decision.passed
    rej = E.rejected_event(cand, decision, stage="gate", reason=decision.reason, champion_version=1)
    back = codec.decode(codec.encode("DeploymentRejected", rej)).value
    assert str(back["header"]["event_id"]) == E.decision_event_id("churn", 2, E.REJECTED)
    assert [c["name"] for c in back["checks"]] == [c["name"] for c in decision.checks]
    failed = [c for c in back["checks"] if not c["passed"]]
    assert failed[0]["name"] == "beats_champion" and failed[0]["value"] == pytest.approx(0.75)
    assert str(back["header"]["parent_event_ids"][0]) == cand["header"]["event_id"]

    good = registered(3, 0.9)
    result = DeployResult(ok=True, model_name="churn", model_version=3, action="promote", backend="python",
                          repository_uri="file:///repo")
    dep = E.deployed_event(good, evaluate(good, champion, GatePolicy()), result, previous_version=1)
    back = codec.decode(codec.encode("ModelDeployed", dep)).value
    assert (back["action"], back["previous_version"], back["champion_metric"]) == ("promote", 1, 0.8)
    rec = E.record_from_deployed(back)
    assert rec["model_version"] == 3 and rec["at"] == dep["header"]["event_time"]
