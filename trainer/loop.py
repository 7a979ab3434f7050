"""The training loop: in-memory tensors, randperm batches, AdamW, checkpoints.

No DataLoader: the whole split is a few tensors in memory (on the GPU when it
fits) and a batch is one ``randperm`` slice, which is as fast as a hand-written
PyTorch loop. The loop is shared by single-process and DDP training; with
``dist`` given, every rank trains on its shard and the ranks agree on losses,
early stopping and stop requests through all-reduce.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.checkpoint import load_checkpoint, quarantine, save_checkpoint
from trainer.errors import CheckpointError, NonFiniteLossError, TrainerError, TrainingStopped
from trainer.spec import TrainingSpec

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
ProgressCallback = Callable[[str, int, int], None]
CheckpointErrorCallback = Callable[[str], None]
_NAN_CHECK_EVERY = 50


@dataclass(frozen=True)
class TensorSet:
    """One split as model inputs plus target, all the same length."""

    inputs: tuple[Tensor, ...]
    target: Tensor

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device, pin: bool = False) -> "TensorSet":
        move = (lambda t: t.pin_memory()) if pin else (lambda t: t.to(device))
        return TensorSet(tuple(move(t) for t in self.inputs), move(self.target))

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (*self.inputs, self.target))


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from: int
    stopped_early: bool
    warnings: list[str] = field(default_factory=list)


class DistContext(Protocol):
    """What the loop needs from a process group (see ``trainer.ddp_worker``)."""

    rank: int
    world_size: int

    def sum(self, values: Sequence[float]) -> list[float]: ...


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device 'cuda' was requested but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def loss_function(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    if task == "regression":
        return lambda out, y: F.mse_loss(out.squeeze(1).float(), y)
    return lambda out, y: F.cross_entropy(out.float(), y)


def place(data: TensorSet, device: torch.device) -> TensorSet:
    """Put a split on the GPU when it fits comfortably, else in pinned host memory."""
    if device.type != "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.nbytes() < 0.4 * free else data.to(device, pin=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _scheduler(opt: torch.optim.Optimizer, spec: TrainingSpec, total_steps: int):
    if spec.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=max(1, total_steps))
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _optimizer(model: nn.Module, spec: TrainingSpec, device: torch.device) -> torch.optim.Optimizer:
    # Fused AdamW runs the whole update in one kernel on CPU and CUDA alike.
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, fused=True)


def evaluate_loss(model: nn.Module, data: TensorSet, loss_fn, device: torch.device, *, amp_dtype=None,
                  dist: DistContext | None = None, batch_size: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression) over ``data`` (this rank's shard under DDP)."""
    net = _unwrap(model)
    net.eval()
    n = len(data)
    shard = torch.arange(dist.rank, n, dist.world_size) if dist else None
    count = len(shard) if shard is not None else n
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    classify = data.target.dtype == torch.long
    with torch.no_grad(), _autocast(device, amp_dtype):
        for start in range(0, count, batch_size):
            sel = shard[start:start + batch_size] if shard is not None else slice(start, start + batch_size)
            xb = tuple(t[sel].to(device, non_blocking=True) for t in data.inputs)
            yb = data.target[sel].to(device, non_blocking=True)
            out = net(*xb)
            total += loss_fn(out, yb).double() * yb.shape[0]
            if classify:
                correct += (out.argmax(1) == yb).sum()
    sums = [float(total), float(correct), float(count)]
    if dist:
        sums = dist.sum(sums)
    denom = max(sums[2], 1.0)
    return sums[0] / denom, (sums[1] / denom) if classify else math.nan


@dataclass
class _State:
    """Optimizer, schedule, sampling and early-stopping state: what a checkpoint restores."""

    opt: torch.optim.Optimizer
    sched: Any
    gen: torch.Generator
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, Tensor] | None = None
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False


def _fresh(model: nn.Module, spec: TrainingSpec, device: torch.device, total_steps: int) -> _State:
    opt = _optimizer(model, spec, device)
    return _State(opt, _scheduler(opt, spec, total_steps), torch.Generator().manual_seed(spec.seed))


def _restore(st: _State, ck: dict[str, Any], model: nn.Module, scaler: torch.amp.GradScaler,
             device: torch.device, fingerprint: str, path: str | Path) -> None:
    if ck["fingerprint"] != fingerprint:
        raise CheckpointError(f"checkpoint {path} belongs to another run or spec")
    _unwrap(model).load_state_dict(ck["model"])
    st.opt.load_state_dict(ck["optimizer"])
    st.sched.load_state_dict(ck["scheduler"])
    if "scaler" in ck and scaler.is_enabled():
        scaler.load_state_dict(ck["scaler"])
    st.gen.set_state(ck["generator"])
    _set_rng_state(ck["rng"], device)
    st.epoch, st.history = int(ck["epoch"]), list(ck["history"])
    st.best_state, st.best_val = ck["best_state"], float(ck["best_val_loss"])
    st.best_epoch, st.bad_epochs, st.done = int(ck["best_epoch"]), int(ck["bad_epochs"]), bool(ck["done"])


def fit(model: nn.Module, train: TensorSet, val: TensorSet, spec: TrainingSpec, *, task: str,
        device: torch.device, fingerprint: str = "", checkpoint_path: str | Path | None = None,
        on_epoch: EpochCallback | None = None, should_stop: Callable[[], bool] | None = None,
        progress: ProgressCallback | None = None, on_checkpoint_error: CheckpointErrorCallback | None = None,
        dist: DistContext | None = None) -> FitResult:
    """Train ``model`` in place and leave the best-validation weights in it.

    The caller seeds torch before building the model; a resumed run restores the
    RNG state saved with the checkpoint, so interrupted-and-resumed training is
    identical to an uninterrupted one. Raises ``NonFiniteLossError`` when the loss
    diverges and ``TrainingStopped`` when ``should_stop()`` turns true (after the
    epoch's checkpoint is written).
    """
    rank0 = dist is None or dist.rank == 0
    model.to(device)
    loss_fn = loss_function(task)
    use_amp = spec.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train, val = place(train, device), place(val, device)
    on_device = train.target.device.type == device.type

    n = len(train)
    shard = math.ceil(n / dist.world_size) if dist else n
    steps_per_epoch = math.ceil(shard / spec.batch_size)
    st = _fresh(model, spec, device, spec.epochs * steps_per_epoch)
    warnings: list[str] = []
    if checkpoint_path is not None:
        initial = (_cpu_state(model), _rng_state(device))
        try:
            ck = load_checkpoint(checkpoint_path)
            if ck is not None:
                _restore(st, ck, model, scaler, device, fingerprint, checkpoint_path)
        except (CheckpointError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            reason = f"{exc}; training restarts from scratch"
            if rank0:
                log.warning(reason)
                warnings.append(reason)
                if on_checkpoint_error is not None:
                    on_checkpoint_error(reason)
                quarantine(checkpoint_path)
            _unwrap(model).load_state_dict(initial[0])
            _set_rng_state(initial[1], device)
            st = _fresh(model, spec, device, spec.epochs * steps_per_epoch)
    opt, sched, gen, history, done = st.opt, st.sched, st.gen, st.history, st.done
    best_state, best_val, best_epoch, bad_epochs = st.best_state, st.best_val, st.best_epoch, st.bad_epochs
    resumed_from = st.epoch
    params = [p for p in model.parameters() if p.requires_grad]
    progress_every = max(1, steps_per_epoch // 10)

    epoch = resumed_from
    while not done and epoch < spec.epochs:
        epoch += 1
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        if dist:
            perm = torch.cat([perm, perm[: shard * dist.world_size - n]])[dist.rank::dist.world_size]
        if on_device:
            perm = perm.to(device)
        running = torch.zeros((), dtype=torch.float32, device=device)
        for step in range(steps_per_epoch):
            idx = perm[step * spec.batch_size:(step + 1) * spec.batch_size]
            xb = tuple(t[idx] for t in train.inputs)
            yb = train.target[idx]
            if not on_device:
                xb = tuple(t.to(device, non_blocking=True) for t in xb)
                yb = yb.to(device, non_blocking=True)
            with _autocast(device, amp_dtype):
                loss = loss_fn(model(*xb), yb)
            opt.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.scale(loss).backward()
                if spec.grad_clip is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, spec.grad_clip, foreach=True)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if spec.grad_clip is not None:
                    _clip(params, spec.grad_clip, device)
                opt.step()
            sched.step()
            running.add_(loss.detach(), alpha=idx.shape[0])
            if dist is None and step % _NAN_CHECK_EVERY == _NAN_CHECK_EVERY - 1 and not torch.isfinite(running):
                _diverged(float(running), epoch, spec)
            if progress is not None and rank0 and step % progress_every == 0:
                progress("batch", step + 1, steps_per_epoch)
        seen = float(len(perm))
        sums = [float(running), seen]
        train_s = time.perf_counter() - t0
        if dist:
            sums = dist.sum(sums)
        train_loss = sums[0] / max(sums[1], 1.0)
        if not math.isfinite(train_loss):
            _diverged(train_loss, epoch, spec)
        val_loss, val_acc = evaluate_loss(model, val, loss_fn, device, amp_dtype=amp_dtype, dist=dist)
        if not math.isfinite(val_loss):
            _diverged(val_loss, epoch, spec, what="validation loss")
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = _cpu_state(model)
        else:
            bad_epochs += 1
        patience = spec.early_stopping_patience
        done = epoch >= spec.epochs or (patience is not None and bad_epochs >= patience)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "best_val_loss": best_val,
                   "lr": float(opt.param_groups[0]["lr"]), "epoch_s": time.perf_counter() - t0,
                   "train_s": train_s, "samples_per_s": sums[1] / max(train_s, 1e-9)}
        if not math.isnan(val_acc):
            metrics["val_accuracy"] = val_acc
        history.append(metrics)
        if checkpoint_path is not None and rank0:
            save_checkpoint(checkpoint_path, {
                "fingerprint": fingerprint, "epoch": epoch, "model": _cpu_state(model),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "generator": gen.get_state(), "rng": _rng_state(device), "best_state": best_state,
                "best_val_loss": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "history": history, "done": done})
        if on_epoch is not None and rank0:
            on_epoch(epoch, dict(metrics))
        if progress is not None and rank0:
            progress("epoch", epoch, spec.epochs)
        if not done and should_stop is not None:
            flag = [1.0 if should_stop() else 0.0]
            if (dist.sum(flag) if dist else flag)[0] > 0:
                raise TrainingStopped(f"training stopped on request after epoch {epoch} of {spec.epochs}"
                                      + ("; the checkpoint allows a resume" if checkpoint_path else ""))
    if best_state is not None:
        _unwrap(model).load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, epochs_run=len(history), resumed_from=resumed_from,
                     stopped_early=len(history) < spec.epochs, warnings=warnings)


def _clip(params: list[nn.Parameter], max_norm: float, device: torch.device) -> None:
    """Clip the global gradient norm.

    On CUDA ``clip_grad_norm_`` always rescales to avoid a host sync; on CPU a
    sync is free, so gradients are only touched when the norm is too large,
    which halves the cost of clipping for small models.
    """
    if device.type == "cuda":
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    grads = [p.grad for p in params if p.grad is not None]
    # One fused per-tensor norm kernel (what clip_grad_norm_ uses inside), without its device grouping.
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    norm = float(total)
    if not norm <= max_norm:  # also true for NaN
        torch._foreach_mul_(grads, max_norm / (total + 1e-6))  # clip_grads_with_norm_'s scaling, ungrouped


def _diverged(value: float, epoch: int, spec: TrainingSpec, what: str = "training loss") -> None:
    raise NonFiniteLossError(
        f"{what} became {value} in epoch {epoch}; the run cannot continue. Try a lower learning rate "
        f"(now {spec.lr:g}), gradient clipping (grad_clip, now {spec.grad_clip}), or check the data for extreme "
        "values")


def predict(model: nn.Module, inputs: Sequence[Tensor], device: torch.device, *, batch_size: int = 8192) -> Tensor:
    """Raw network outputs (logits or standardized values) in full precision, on CPU."""
    net = _unwrap(model).to(device)
    net.eval()
    n = int(inputs[0].shape[0])
    outs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = tuple(t[start:start + batch_size].to(device) for t in inputs)
            outs.append(net(*xb).float().cpu())
    return torch.cat(outs) if outs else torch.zeros((0, 1))
