"""The loop's resumable state: optimizer, schedule, sampling, early stopping, and how a checkpoint holds it.

Split from ``trainer.loop`` so that what a checkpoint saves and what it restores
are written once, next to each other (``LoopState.to_checkpoint`` / ``restore``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from trainer.checkpoint import STATE_KEYS
from trainer.defaults import WARMUP_FRACTION
from trainer.errors import CheckpointError
from trainer.spec import TrainingSpec


def unwrap(model: nn.Module) -> nn.Module:
    # a wrapper's (DDP's) .module is a Module; nn.Module's attribute type says Tensor | Module
    return cast(nn.Module, model.module) if hasattr(model, "module") else model


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def onecycle_warmup(total_steps: int) -> float | None:
    """OneCycleLR's ``pct_start`` for a run of ``total_steps``, or None where the run is too short for one.

    OneCycleLR divides by ``pct_start * total_steps - 1`` and by the decay's
    length, so a warmup of one step (10 steps at 10 %) raised ZeroDivisionError
    and a tiny run was dead-lettered. The warmup is at least two steps and
    leaves at least one for the decay; under four steps the rate stays constant.
    """
    if total_steps < 4:
        return None
    warm = max(2, round(WARMUP_FRACTION * total_steps))
    return min(warm, total_steps - 2) / total_steps


def _scheduler(opt: torch.optim.Optimizer, spec: TrainingSpec, total_steps: int):
    if spec.lr_schedule == "onecycle" and (pct := onecycle_warmup(total_steps)) is not None:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.resolved_lr, total_steps=total_steps,
                                                   pct_start=pct)
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _optimizer(model: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    # Fused AdamW runs the whole update in one kernel on CPU and CUDA alike.
    return torch.optim.AdamW(model.parameters(), lr=spec.resolved_lr, weight_decay=spec.weight_decay, fused=True)


@dataclass
class LoopState:
    """Optimizer, schedule, sampling and early-stopping state: what a checkpoint saves and restores.

    ``_SAVED`` is the one list of the plain fields a checkpoint carries; the
    stateful objects (model, optimizer, schedule, scaler, generators) are
    serialised beside them by ``to_checkpoint`` / ``restore``.
    """

    opt: torch.optim.Optimizer
    sched: Any
    gen: torch.Generator
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, Tensor] | None = None
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False

    _SAVED = STATE_KEYS

    @classmethod
    def fresh(cls, model: nn.Module, spec: TrainingSpec, total_steps: int) -> LoopState:
        opt = _optimizer(model, spec)
        return cls(opt, _scheduler(opt, spec, total_steps), torch.Generator().manual_seed(spec.seed))

    def to_checkpoint(self, model: nn.Module, scaler: torch.amp.GradScaler, device: torch.device,
                      fingerprint: str) -> dict[str, Any]:
        return {"fingerprint": fingerprint, "model": cpu_state(model), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": scaler.state_dict(),
                "generator": self.gen.get_state(), "rng": rng_state(device),
                **{k: getattr(self, k) for k in self._SAVED}}

    def restore(self, ck: dict[str, Any], model: nn.Module, scaler: torch.amp.GradScaler, device: torch.device,
                fingerprint: str, path: str | Path) -> None:
        if ck["fingerprint"] != fingerprint:
            raise CheckpointError(f"checkpoint {path} belongs to another run or spec")
        unwrap(model).load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if "scaler" in ck and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
        self.gen.set_state(ck["generator"])
        set_rng_state(ck["rng"], device)
        for k in self._SAVED:
            setattr(self, k, ck[k])

    def record(self, epoch: int, val_loss: float, model: nn.Module, patience: int | None) -> None:
        """Early-stopping bookkeeping of one finished epoch."""
        self.epoch = epoch
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = cpu_state(model)
        else:
            self.bad_epochs += 1
        self.done = patience is not None and self.bad_epochs >= patience
