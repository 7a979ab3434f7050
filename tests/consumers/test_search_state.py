"""The search state machine on its own: asking, telling, picking the best, refusing bad requests (no broker)."""

from __future__ import annotations

import copy
import json

import pytest

from consumers import search_state as S
from schemas.events import new_header
from trainer.spec import TrainingSpec

FIELDS = set(TrainingSpec.model_fields)
SPACE = {"params": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                    "hidden_sizes": [[8], [16, 8]], "epochs": {"type": "int", "low": 2, "high": 5}},
         "parallelism": 2}


def request(space=SPACE, n_trials=4, spec=None, request_id="req-1") -> dict:
    return {"header": new_header("tests"), "request_id": request_id, "dataset_name": "churn",
            "dataset_version": None, "model_name": None, "spec_json": json.dumps(spec or {"seed": 3}),
            "search_space_json": json.dumps(space) if space is not None else None, "n_trials": n_trials,
            "search_id": None, "trial_number": None, "reason": "manual"}


def started(**kw) -> dict:
    return S.start(request(**kw), dataset_version="v1", spec_fields=FIELDS, default_parallelism=2)


def result(n: int, status: str = "finished", value: float | None = 1.0, metric: str = "best_val_loss") -> dict:
    return {"trial_number": n, "status": status, "run_id": f"run-{n}", "failure_reason": "boom",
            "metrics": {metric: value} if value is not None else {}}


def specs(outputs) -> list[dict]:
    return [json.loads(v["spec_json"]) for _, kind, _, v in outputs if kind == "TrainingRequested"]


def test_trials_are_asked_parallelism_at_a_time_with_trial_specs_that_do_not_register():
    st = started()
    out = S.plan(st)
    assert [v["trial_number"] for *_, v in out] == [0, 1] and S.plan(st) == []
    assert len({key for _, _, key, _ in out}) == 2   # one key per trial: they spread over the partitions
    for (topic, kind, key, v), sp in zip(out, specs(out)):
        assert (topic, kind, key, v["reason"], v["search_id"]) == ("training.requested", "TrainingRequested",
                                                                    v["request_id"], "search-trial", st["search_id"])
        assert sp["register_model"] is False and sp["seed"] == 3 and 0.001 <= sp["lr"] <= 0.1
        assert sp["hidden_sizes"] in ([8], [16, 8]) and 2 <= sp["epochs"] <= 5
        assert v["dataset_version"] == "v1"   # resolved once, so every trial trains on the same data
    assert S.tell(st, result(0, value=0.9))
    assert [v["trial_number"] for *_, v in S.plan(st)] == [2]


def test_asking_is_deterministic_so_a_replayed_event_publishes_the_same_events():
    a, b = started(), started()
    pa, pb = S.plan(a), S.plan(b)
    assert specs(pa) == specs(pb) and [v["header"]["event_id"] for *_, v in pa] == [
        v["header"]["event_id"] for *_, v in pb]
    before = copy.deepcopy(a)
    S.tell(a, result(0, value=0.5))
    first = S.plan(a)
    S.tell(before, result(0, value=0.5))     # the same event handled again against the state before it
    again = S.plan(before)
    assert specs(first) == specs(again)
    assert [v["header"]["event_id"] for *_, v in first] == [v["header"]["event_id"] for *_, v in again]
    other = started(request_id="req-2")       # another search gets its own id, same seed → same first params
    assert other["search_id"] != a["search_id"] and specs(S.plan(other))[0] == specs(S.plan(started()))[0]


def test_duplicates_and_late_results_change_nothing_and_a_failed_trial_can_still_succeed():
    st = started()
    S.plan(st)
    assert S.tell(st, result(0, "failed"))
    assert not S.tell(st, result(0, "failed"))            # duplicate
    assert not S.tell(st, result(7, value=0.1))           # no such trial
    assert not S.tell(st, {**result(1), "status": "epoch"})
    assert not S.tell(st, {**result(1, "failed"), "final": False, "failure_reason": "OSError: disk full"})
    assert st["trials"]["1"]["state"] == "running"        # a retried attempt is not the trial's outcome
    assert S.tell(st, result(0, value=0.4))               # a retried run finished after all
    assert st["trials"]["0"]["state"] == "complete"
    assert S.tell(st, result(1, value=None))              # finished without the metric → told as failed
    assert st["trials"]["1"]["state"] == "fail" and "best_val_loss" in st["trials"]["1"]["reason"]


def test_the_best_trial_wins_a_failed_one_does_not_fail_the_search():
    st = started(n_trials=3)
    S.plan(st)
    S.tell(st, result(0, "failed"))
    S.plan(st)
    S.tell(st, result(1, value=0.8))
    assert S.plan(st) == []
    S.tell(st, result(2, value=0.3))
    out = S.plan(st)
    assert [(kind, v.get("status"), v.get("reason")) for _, kind, _, v in out] == [
        ("TrainingRunUpdated", "finished", None), ("TrainingRequested", None, "search-best")]
    summary, final = out[0][3], out[1][3]
    assert summary["trial_number"] == 2 and summary["metrics"]["best_best_val_loss"] == 0.3
    assert summary["metrics"]["n_failed"] == 1 and summary["run_id"] == f"search-{st['search_id']}"
    final_spec = json.loads(final["spec_json"])
    assert "register_model" not in final_spec
    assert {k: final_spec[k] for k in st["best"]["params"]} == st["trials"]["2"]["params"]
    assert final["request_id"] == S.final_request_id(st["search_id"]) and final["trial_number"] is None
    assert not S.tell(st, result(1, value=0.01)) and S.plan(st) == []   # the search is over


def test_maximize_picks_the_highest_and_all_failed_fails_the_search():
    st = started(space={**SPACE, "metric": "test_roc_auc", "direction": "maximize", "parallelism": 5}, n_trials=2)
    S.plan(st)
    S.tell(st, result(0, value=0.7, metric="test_roc_auc"))
    S.tell(st, result(1, value=0.9, metric="test_roc_auc"))
    S.plan(st)
    assert st["best"]["number"] == 1
    st = started(n_trials=2)
    S.plan(st)
    S.tell(st, result(0, "failed"))
    S.tell(st, result(1, "failed"))
    (out,) = S.plan(st)
    assert out[3]["status"] == "failed" and "all 2 trials failed" in out[3]["failure_reason"]


@pytest.mark.parametrize("space, n_trials, message", [
    (None, 3, "needs search_space_json"),
    ({"bogus": [1, 2]}, 3, "cannot search over 'bogus'"),
    ({"model_name": ["a", "b"]}, 3, "cannot search over 'model_name'"),
    ({"lr": {"type": "float", "low": 0.1}}, 3, "lr: invalid float distribution"),
    ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, 3, "lr: invalid float distribution"),
    ({"lr": {"type": "gauss"}}, 3, "unknown distribution type 'gauss'"),
    ({"params": {"lr": [0.1]}, "direction": "up"}, 3, "direction must be"),
    ({"lr": [0.1, 0.2]}, 5000, "n_trials must be between 1 and 1000"),
])
def test_bad_search_requests_are_refused_with_a_reason(space, n_trials, message):
    with pytest.raises(S.SearchError, match=message):
        started(space=space, n_trials=n_trials)
    state, (out,) = S.refused(request(space=space), message)
    assert out[3]["status"] == "failed" and out[3]["failure_reason"] == message and state["status"] == "failed"
