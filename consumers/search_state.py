"""Hyperparameter search as a pure state machine: request → trials asked → results told → best → final run.

The search coordinator (``consumers.search``) keeps one JSON state per search
in a changelog-backed faust table and calls these functions per event; they
never touch Kafka, so the logic is testable and the coordinator stays thin.

Optuna is used statelessly: for every ask, a fresh in-memory study is rebuilt
from the told trials (``create_trial`` + ``add_trial``) with a sampler seeded by
(search seed, trial number). The same state therefore always asks the same
parameters, which makes a coordinator that replays an event after a crash
publish exactly the requests it published before (same event ids too).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from infra.errors import ModelBusError
from schemas.events import new_header, will_be_retried
from schemas.types import EventHeader, TrainingRequested, TrainingRunUpdated

PRODUCER = "consumers.search"
_NAMESPACE = uuid.UUID("0c5e7f0e-3b1c-4a5e-8d4f-5a2b9e6c1d77")
DEFAULT_METRIC, DEFAULT_DIRECTION = "best_val_loss", "minimize"
RESERVED = {"model_name", "register_model"}
MAX_TRIALS = 1000

optuna.logging.set_verbosity(optuna.logging.WARNING)

# What the coordinator publishes: (logical topic, event type, key, value).
Output = tuple[str, str, str, TrainingRequested | TrainingRunUpdated]


class SearchError(ModelBusError):
    """The search request cannot run (no search space, bad distribution, unknown parameter)."""


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def search_id_for(request_id: str) -> str:
    """The search id of a request: derived, so the requester can follow the search without being told."""
    return _uuid("search", request_id)


def final_request_id(search_id: str) -> str:
    return _uuid(search_id, "final")


def trial_request_id(search_id: str, number: int) -> str:
    return _uuid(search_id, "trial", number)


# -- the search space -------------------------------------------------------------------------------------------
def parse_space(text: str | None, spec_fields: set[str]) -> tuple[dict[str, dict], dict[str, Any]]:
    """(params, options) from ``search_space_json``.

    Either ``{"lr": {...}, ...}`` or ``{"params": {...}, "parallelism": 2, "metric": "best_val_loss",
    "direction": "minimize"}``. A distribution is ``{"type": "float"|"int", "low", "high", "log", "step"}``,
    ``{"type": "categorical", "choices": [...]}``, or a bare list of choices.
    """
    if not text:
        raise SearchError("a search request needs search_space_json")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SearchError(f"search_space_json is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SearchError("search_space_json must be a JSON object")
    params = doc["params"] if isinstance(doc.get("params"), dict) else doc
    options = {k: doc[k] for k in ("parallelism", "metric", "direction") if k in doc and params is not doc}
    if not params:
        raise SearchError("the search space has no parameters")
    for name, dist in params.items():
        if name not in spec_fields or name in RESERVED:
            raise SearchError(f"cannot search over {name!r}: not a tunable training spec field")
        distribution(name, dist)   # validates
    return params, options


def distribution(name: str, dist: Any) -> BaseDistribution:
    """The optuna distribution of one parameter (categorical choices travel as JSON strings)."""
    if isinstance(dist, list):
        dist = {"type": "categorical", "choices": dist}
    if not isinstance(dist, dict):
        raise SearchError(f"{name}: a distribution is an object or a list of choices")
    kind = dist.get("type")
    try:
        if kind == "float":
            return FloatDistribution(float(dist["low"]), float(dist["high"]), log=bool(dist.get("log", False)),
                                     step=None if dist.get("step") is None else float(dist["step"]))
        if kind == "int":
            return IntDistribution(int(dist["low"]), int(dist["high"]), log=bool(dist.get("log", False)),
                                   step=int(dist.get("step", 1)))
        if kind == "categorical":
            choices = dist["choices"]
            if not isinstance(choices, list) or not choices:
                raise ValueError("choices must be a non-empty list")
            return CategoricalDistribution([json.dumps(c, sort_keys=True) for c in choices])
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchError(f"{name}: invalid {kind} distribution: {exc}") from exc
    raise SearchError(f"{name}: unknown distribution type {kind!r} (float, int or categorical)")


def _decode(dists: dict[str, BaseDistribution], raw: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if isinstance(dists[k], CategoricalDistribution) else v for k, v in raw.items()}


# -- state --------------------------------------------------------------------------------------------------------
def start(request: TrainingRequested, *, dataset_version: str, spec_fields: set[str], default_parallelism: int) -> dict:
    """The initial state of a search from its (decoded) TrainingRequested; raises SearchError."""
    params, options = parse_space(request.get("search_space_json"), spec_fields)
    n = int(request.get("n_trials") or 0)
    if not 1 <= n <= MAX_TRIALS:
        raise SearchError(f"n_trials must be between 1 and {MAX_TRIALS}, got {n}")
    try:
        spec = json.loads(request.get("spec_json") or "{}")
    except ValueError as exc:
        raise SearchError(f"spec_json is not JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise SearchError("spec_json must be a JSON object")
    direction = options.get("direction", DEFAULT_DIRECTION)
    if direction not in ("minimize", "maximize"):
        raise SearchError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    parallelism = int(options.get("parallelism", default_parallelism))
    if parallelism < 1:
        raise SearchError("parallelism must be at least 1")
    return {**base_state(request), "status": "running", "dataset_version": dataset_version, "spec": spec,
            "space": params, "n_trials": n, "parallelism": min(parallelism, n),
            "metric": str(options.get("metric", DEFAULT_METRIC)), "direction": direction,
            "seed": int(spec.get("seed", 0)), "trials": {}, "best": None}


def base_state(request: TrainingRequested) -> dict[str, Any]:
    """What every state (also a refused search's) keeps of its request: identity and lineage."""
    h = request["header"]
    return {"search_id": search_id_for(request["request_id"]), "request_id": request["request_id"],
            "request_event_id": str(h["event_id"]), "correlation_id": str(h["correlation_id"]),
            "dataset_name": request["dataset_name"], "dataset_version": request.get("dataset_version") or "",
            "model_name": request.get("model_name"), "status": "failed", "failure_reason": None}


def ask(state: dict[str, Any], number: int) -> dict[str, Any]:
    """Parameters of trial ``number``: deterministic given the told trials and the seed."""
    dists = {k: distribution(k, v) for k, v in state["space"].items()}
    sampler = optuna.samplers.TPESampler(seed=(state["seed"] * 1_000_003 + number) % (2 ** 31),
                                         n_startup_trials=max(1, min(10, state["n_trials"] // 3)))
    study = optuna.create_study(direction=state["direction"], sampler=sampler)
    for _, t in sorted(state["trials"].items(), key=lambda kv: int(kv[0])):
        if t["state"] == "complete":
            study.add_trial(create_trial(params=t["raw"], distributions=dists, value=t["value"]))
        elif t["state"] == "fail":
            study.add_trial(create_trial(params=t["raw"], distributions=dists, state=TrialState.FAIL))
    trial = study.ask(dists)
    return {"raw": dict(trial.params), "params": _decode(dists, trial.params)}


def tell(state: dict[str, Any], update: TrainingRunUpdated) -> bool:
    """Record a trial's TrainingRunUpdated (finished/failed); False when it changes nothing (duplicate, late)."""
    t = state["trials"].get(str(update.get("trial_number")))
    if state["status"] != "running" or t is None or update["status"] not in ("finished", "failed"):
        return False
    if t["state"] == "complete" or (t["state"] == "fail" and update["status"] == "failed"):
        return False
    if will_be_retried(update):
        return False   # the training consumer retries that event; its final outcome is still to come
    t["run_id"] = update["run_id"]
    if update["status"] == "finished":
        value = (update.get("metrics") or {}).get(state["metric"])
        if value is not None and math.isfinite(value):
            t.update(state="complete", value=float(value), reason=None)
            return True
        t.update(state="fail", reason=f"the run reported no finite {state['metric']!r}")
        return True
    t.update(state="fail", reason=update.get("failure_reason") or "failed")
    return True


def plan(state: dict[str, Any]) -> list[Output]:
    """Ask trials up to ``parallelism`` at once; when all are told, pick the best and ask for the final run.

    Returns (logical topic, event type, key, value) to publish; mutates ``state``.
    """
    if state["status"] != "running":
        return []
    out: list[Output] = []
    trials = state["trials"]
    running = sum(t["state"] == "running" for t in trials.values())
    while len(trials) < state["n_trials"] and running < state["parallelism"]:
        n = len(trials)
        asked = ask(state, n)
        trials[str(n)] = {**asked, "state": "running", "value": None, "run_id": None, "reason": None}
        running += 1
        # keyed per trial, not by dataset: the trials spread over partitions, so several consumers run them
        out.append(("training.requested", "TrainingRequested", trial_request_id(state["search_id"], n),
                    trial_request(state, n)))
    if len(trials) < state["n_trials"] or running:
        return out
    done = [(int(k), t) for k, t in trials.items() if t["state"] == "complete"]
    if not done:
        reasons = "; ".join(f"#{k}: {t['reason']}" for k, t in sorted(trials.items(), key=lambda kv: int(kv[0])))
        state.update(status="failed", failure_reason=f"all {len(trials)} trials failed ({reasons})"[:4000])
        return out + [("training.runs", "TrainingRunUpdated", summary_run_id(state), summary(state))]
    pick = min if state["direction"] == "minimize" else max
    number, best = pick(done, key=lambda nt: (nt[1]["value"], -nt[0]) if pick is max else (nt[1]["value"], nt[0]))
    state.update(status="finished", best={"number": number, "value": best["value"], "params": best["params"],
                                          "run_id": best["run_id"]}, final_request_id=final_request_id(
                                              state["search_id"]))
    return out + [("training.runs", "TrainingRunUpdated", summary_run_id(state), summary(state)),
                  ("training.requested", "TrainingRequested", state["dataset_name"], final_request(state))]


def refused(request: TrainingRequested, reason: str) -> tuple[dict, list[Output]]:
    """State and failed summary of a search that cannot run."""
    state = {**base_state(request), "failure_reason": reason[:4000]}
    return state, [("training.runs", "TrainingRunUpdated", summary_run_id(state), summary(state))]


# -- events ---------------------------------------------------------------------------------------------------------
def _header(state: dict[str, Any], *parts: object) -> EventHeader:
    return new_header(PRODUCER, correlation_id=state["correlation_id"], parents=[state["request_event_id"]],
                      event_id=_uuid(state["search_id"], *parts))


def _request(state: dict[str, Any], request_id: str, spec: dict, reason: str, trial: int | None,
             eid_parts: tuple) -> TrainingRequested:
    return {"header": _header(state, *eid_parts), "request_id": request_id, "dataset_name": state["dataset_name"],
            "dataset_version": state["dataset_version"], "model_name": state["model_name"],
            "spec_json": json.dumps(spec, sort_keys=True), "search_space_json": None, "n_trials": 0,
            "search_id": state["search_id"], "trial_number": trial, "reason": reason}


def trial_request(state: dict[str, Any], n: int) -> TrainingRequested:
    spec = {**state["spec"], **state["trials"][str(n)]["params"], "register_model": False}
    return _request(state, trial_request_id(state["search_id"], n), spec, "search-trial", n, ("trial", n))


def final_request(state: dict[str, Any]) -> TrainingRequested:
    spec = {**state["spec"], **state["best"]["params"]}
    spec.pop("register_model", None)
    return _request(state, state["final_request_id"], spec, "search-best", None, ("final",))


def summary_run_id(state: dict[str, Any]) -> str:
    return f"search-{state['search_id']}"


def summary(state: dict[str, Any]) -> TrainingRunUpdated:
    """The search's result as a TrainingRunUpdated: finished with the best trial, or failed with why."""
    trials = state.get("trials") or {}
    best = state.get("best")
    metrics = {"n_trials": float(len(trials)),
               "n_complete": float(sum(t["state"] == "complete" for t in trials.values())),
               "n_failed": float(sum(t["state"] == "fail" for t in trials.values()))}
    if best:
        metrics[f"best_{state['metric']}"] = float(best["value"])
    params = {"best_params": best["params"] if best else None, "metric": state.get("metric"),
              "direction": state.get("direction"), "space": state.get("space"),
              "trials": {k: {"params": t["params"], "state": t["state"], "value": t["value"], "run_id": t["run_id"],
                             "reason": t["reason"]} for k, t in trials.items()},
              "final_request_id": state.get("final_request_id"), "best_run_id": best["run_id"] if best else None}
    return {"header": _header(state, "summary"), "run_id": summary_run_id(state), "attempt": 1,
            "status": state["status"], "dataset_name": state["dataset_name"],
            "dataset_version": state["dataset_version"] or "", "model_name": state["model_name"]
            or state["dataset_name"], "epoch": None, "metrics": metrics,
            "params_json": json.dumps(params, sort_keys=True), "seed": int(state.get("seed", 0)), "code_version": "",
            "environment": {}, "duration_s": None, "artifact_uris": {}, "failure_reason": state.get("failure_reason"),
            "search_id": state["search_id"], "trial_number": best["number"] if best else None,
            "request_id": state["request_id"]}
