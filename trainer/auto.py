"""The default run's model choice: a first candidate, then a small search if it loses to a baseline.

Everything here is judged on the *validation* split: the baselines are fitted on
the training rows and scored on the validation rows, exactly like the network's
candidates, so the test split stays untouched for the gate's paired comparison.
The search is Optuna's TPE sampler (seeded, so a rerun tries the same trials)
over ``trainer.defaults.search_space``, inside the run's ``time_budget_s``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import optuna
import torch
from torch import nn

from trainer import defaults as D
from trainer.loop import FitResult, TensorSet, fit
from trainer.models import ModelConfig, SeedEnsemble, build_model
from trainer.spec import TrainingSpec

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

Score = Callable[[nn.Module], float]  # validation primary metric of a trained network


@dataclass
class Candidate:
    net: nn.Module
    fitted: FitResult
    spec: TrainingSpec
    cfg: ModelConfig
    val_score: float


@dataclass
class SearchReport:
    """What the automatic search did, stored with the run's params (``auto_search``)."""

    baseline: str = ""
    baseline_val: float | None = None
    first_val: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    chosen: str = "first"
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "baseline_val": self.baseline_val, "first_val": self.first_val,
                "trials": self.trials, "chosen": self.chosen, "reason": self.reason}


def first_deadline(spec: TrainingSpec, started: float) -> float | None:
    """The first candidate's share of the time budget: half when a search may follow, else all of it."""
    if spec.time_budget_s is None:
        return None
    share = 0.5 if spec.search_trials else 1.0
    return started + share * spec.time_budget_s


def run_deadline(spec: TrainingSpec, started: float) -> float | None:
    """When all training of the run must end (first candidate, search and ensemble): ``time_budget_s`` after start."""
    return None if spec.time_budget_s is None else started + spec.time_budget_s


def seeded_fit(cfg: ModelConfig, spec: TrainingSpec, train: TensorSet, val: TensorSet, *, task: str,
               device: torch.device, **fit_kwargs: Any) -> tuple[nn.Module, FitResult]:
    """A fresh network of ``cfg`` initialised from ``spec.seed`` and fitted, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(spec.seed)
        net = build_model(cfg)
        fitted = fit(net, train, val, spec, task=task, device=device, **fit_kwargs)
    return net, fitted


def search(first: Candidate, *, train: TensorSet, val: TensorSet, task: str, device: torch.device,
           score: Score, baselines: dict[str, float], higher: bool, deadline: float | None,
           should_stop: Callable[[], bool] | None = None) -> tuple[Candidate, SearchReport]:
    """The best candidate on validation: ``first``, or a search trial when ``first`` loses to a baseline.

    ``baselines``: each baseline's validation primary metric. A trial runs only
    while the deadline has not passed; each trial's fit also stops at it. A stop
    request (``should_stop``: shutdown, a lost lease) ends a trial's fit with
    ``TrainingStopped``, as it ends the first candidate's and the ensemble's.
    """
    sign = 1.0 if higher else -1.0
    name, base = max(baselines.items(), key=lambda kv: sign * kv[1])
    report = SearchReport(baseline=name, baseline_val=base, first_val=first.val_score)
    n_trials = int(first.spec.search_trials or 0)
    if sign * first.val_score > sign * base:
        report.reason = f"the first candidate beats {name} on validation"
        return first, report
    if higher and first.val_score >= 1.0:
        report.reason = f"the first candidate ties {name} at the metric's ceiling; no search can beat it"
        return first, report
    if not n_trials:
        report.reason = f"the first candidate does not beat {name}; search is off (a hand-set budget)"
        return first, report
    study = optuna.create_study(direction="maximize" if higher else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=D.SEARCH_SEED))
    best = first
    space = D.search_space(len(train))
    for number in range(n_trials):
        if deadline is not None and time.monotonic() >= deadline:
            report.reason = f"the time budget allowed {number} of {n_trials} trials"
            break
        trial = study.ask()
        params = _suggest(trial, space)
        cand = _train_trial(first, params, train=train, val=val, task=task, device=device, score=score,
                            deadline=deadline, should_stop=should_stop)
        study.tell(trial, cand.val_score)
        report.trials.append({"number": number, **{k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in params.items()},
                              "val": cand.val_score, "epochs_run": cand.fitted.epochs_run})
        if sign * cand.val_score > sign * best.val_score:
            best, report.chosen = cand, f"trial {number}"
    else:
        report.reason = f"{n_trials} trials ran"
    log.info("automatic search: %s; chosen %s (validation %.4g, first %.4g, %s %.4g)", report.reason,
             report.chosen, best.val_score, first.val_score, name, base)
    return best, report


def _suggest(trial: optuna.Trial, space: dict[str, tuple]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (kind, *args) in space.items():
        if kind == "log":
            out[name] = trial.suggest_float(name, args[0], args[1], log=True)
        elif kind == "float":
            out[name] = trial.suggest_float(name, args[0], args[1])
        else:
            choices = args[0]
            pick = trial.suggest_categorical(name, list(range(len(choices))))
            out[name] = choices[pick]
    return out


def _train_trial(first: Candidate, params: dict[str, Any], *, train: TensorSet, val: TensorSet, task: str,
                 device: torch.device, score: Score, deadline: float | None,
                 should_stop: Callable[[], bool] | None = None) -> Candidate:
    budget = D.budget(len(train), batch=params["batch_size"])
    spec = first.spec.model_copy(update={**params, **budget, "search_trials": 0})
    cfg = replace(first.cfg, hidden_sizes=tuple(params["hidden_sizes"]), dropout=float(params["dropout"]))
    net, fitted = seeded_fit(cfg, spec, train, val, task=task, device=device, deadline=deadline,
                             should_stop=should_stop)
    return Candidate(net, fitted, spec, cfg, score(net))


def ensemble(best: Candidate, *, train: TensorSet, val: TensorSet, task: str, device: torch.device,
             deadline: float | None, should_stop: Callable[[], bool] | None = None) -> tuple[nn.Module, int]:
    """``best`` plus members of its configuration from the next seeds (``spec.ensemble`` in all), averaged.

    Returns the network to export and how many members it holds. One member (or
    an image CNN) returns ``best.net`` itself. Members stop at the deadline like
    any fit, and none starts after it (``trainer.defaults``, Ensemble). A stop
    request (``should_stop``: shutdown, a lost lease) ends a member's fit with
    ``TrainingStopped`` as it ends the first candidate's.
    """
    size = best.spec.resolved_ensemble
    if size <= 1 or best.cfg.kind != "mlp":
        return best.net, 1
    members = [best.net]
    for k in range(1, size):
        if deadline is not None and time.monotonic() >= deadline:
            log.info("ensemble: the time budget allowed %d of %d members", len(members), size)
            break
        spec = best.spec.model_copy(update={"seed": best.spec.seed + k})
        members.append(seeded_fit(best.cfg, spec, train, val, task=task, device=device, deadline=deadline,
                                  should_stop=should_stop)[0])
    if len(members) == 1:
        return best.net, 1
    return SeedEnsemble(members, classify=task != "regression").to(device), len(members)
