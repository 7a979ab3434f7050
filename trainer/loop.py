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
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import defaults as D
from trainer.checkpoint import load_checkpoint, quarantine, save_checkpoint
from trainer.errors import CheckpointError, NonFiniteLossError, TrainerError, TrainingStopped
from trainer.loop_state import LoopState, cpu_state, rng_state, set_rng_state, unwrap
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

    def to(self, device: torch.device, pin: bool = False) -> TensorSet:
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


def loss_function(task: str, target: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """The training (and validation) loss; multiclass weights classes by ``trainer.defaults.class_weights``."""
    if task == "regression":
        return lambda out, y: F.mse_loss(out.squeeze(1).float(), y)
    counts = None if target is None else torch.bincount(target.reshape(-1).long().cpu()).tolist()
    weights = D.class_weights(task, counts) if counts else None
    if weights is None:
        return lambda out, y: F.cross_entropy(out.float(), y)
    w = torch.tensor(weights, dtype=torch.float32)
    return lambda out, y: F.cross_entropy(out.float(), y, weight=w.to(out.device))


def place(data: TensorSet, device: torch.device) -> TensorSet:
    """Put a split on the GPU when it fits comfortably, else in pinned host memory."""
    if device.type != "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.nbytes() < 0.4 * free else data.to(device, pin=True)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def evaluate_loss(model: nn.Module, data: TensorSet, loss_fn, device: torch.device, *, amp_dtype=None,
                  dist: DistContext | None = None, batch_size: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression) over ``data`` (this rank's shard under DDP)."""
    net = unwrap(model)
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
class _Run:
    """What stays fixed during one ``fit``: device placement, precision, loss, sizes."""

    model: nn.Module
    train: TensorSet
    val: TensorSet
    spec: TrainingSpec
    device: torch.device
    dist: DistContext | None
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    on_device: bool
    shard: int
    steps_per_epoch: int

    @property
    def rank0(self) -> bool:
        return self.dist is None or self.dist.rank == 0


def _prepare(model: nn.Module, train: TensorSet, val: TensorSet, spec: TrainingSpec, task: str,
             device: torch.device, dist: DistContext | None) -> _Run:
    model.to(device)
    use_amp = spec.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    train, val = place(train, device), place(val, device)
    n = len(train)
    shard = math.ceil(n / dist.world_size) if dist else n
    return _Run(model, train, val, spec, device, dist, loss_function(task, train.target), amp_dtype,
                torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
                train.target.device.type == device.type, shard, math.ceil(shard / spec.resolved_batch_size))


def _start(r: _Run, fingerprint: str, checkpoint_path: str | Path | None,
           on_checkpoint_error: CheckpointErrorCallback | None, warnings: list[str]) -> LoopState:
    """Fresh state, or the checkpoint's; an unusable checkpoint is quarantined and training starts over."""
    total = r.spec.resolved_epochs * r.steps_per_epoch
    st = LoopState.fresh(r.model, r.spec, total)
    if checkpoint_path is None:
        return st
    initial = (cpu_state(r.model), rng_state(r.device))
    try:
        ck = load_checkpoint(checkpoint_path)
        if ck is not None:
            st.restore(ck, r.model, r.scaler, r.device, fingerprint, checkpoint_path)
        return st
    except (CheckpointError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        reason = f"{exc}; training restarts from scratch"
        if r.rank0:
            log.warning(reason)
            warnings.append(reason)
            if on_checkpoint_error is not None:
                on_checkpoint_error(reason)
            quarantine(checkpoint_path)
        unwrap(r.model).load_state_dict(initial[0])
        set_rng_state(initial[1], r.device)
        return LoopState.fresh(r.model, r.spec, total)


def _train_epoch(r: _Run, st: LoopState, epoch: int, params: list[nn.Parameter],
                 progress: ProgressCallback | None) -> tuple[float, float, float]:
    """One pass over the (sharded) training split: (mean train loss, rows seen, seconds)."""
    spec, device, model, n = r.spec, r.device, r.model, len(r.train)
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=st.gen)
    if r.dist:
        perm = torch.cat([perm, perm[: r.shard * r.dist.world_size - n]])[r.dist.rank::r.dist.world_size]
    if r.on_device:
        perm = perm.to(device)
    running = torch.zeros((), dtype=torch.float32, device=device)
    progress_every = max(1, r.steps_per_epoch // 10)
    batch = spec.resolved_batch_size
    for step in range(r.steps_per_epoch):
        idx = perm[step * batch:(step + 1) * batch]
        xb = tuple(t[idx] for t in r.train.inputs)
        yb = r.train.target[idx]
        if not r.on_device:
            xb = tuple(t.to(device, non_blocking=True) for t in xb)
            yb = yb.to(device, non_blocking=True)
        with _autocast(device, r.amp_dtype):
            loss = r.loss_fn(model(*xb), yb)
        _step(r, st.opt, loss, params)
        st.sched.step()
        running.add_(loss.detach(), alpha=idx.shape[0])
        if r.dist is None and step % _NAN_CHECK_EVERY == _NAN_CHECK_EVERY - 1 and not torch.isfinite(running):
            _diverged(float(running), epoch, spec)
        if progress is not None and r.rank0 and step % progress_every == 0:
            progress("batch", step + 1, r.steps_per_epoch)
    sums = [float(running), float(len(perm))]
    train_s = time.perf_counter() - t0
    if r.dist:
        sums = r.dist.sum(sums)
    return sums[0] / max(sums[1], 1.0), sums[1], train_s


def _step(r: _Run, opt: torch.optim.Optimizer, loss: Tensor, params: list[nn.Parameter]) -> None:
    opt.zero_grad(set_to_none=True)
    clip = r.spec.grad_clip
    if r.scaler.is_enabled():
        r.scaler.scale(loss).backward()
        if clip is not None:
            r.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        r.scaler.step(opt)
        r.scaler.update()
        return
    loss.backward()
    if clip is not None:
        _clip(params, clip, r.device)
    opt.step()


def fit(model: nn.Module, train: TensorSet, val: TensorSet, spec: TrainingSpec, *, task: str,
        device: torch.device, fingerprint: str = "", checkpoint_path: str | Path | None = None,
        on_epoch: EpochCallback | None = None, should_stop: Callable[[], bool] | None = None,
        progress: ProgressCallback | None = None, on_checkpoint_error: CheckpointErrorCallback | None = None,
        dist: DistContext | None = None, deadline: float | None = None) -> FitResult:
    """Train ``model`` in place and leave the best-validation weights in it.

    The caller seeds torch before building the model; a resumed run restores the
    RNG state saved with the checkpoint, so interrupted-and-resumed training is
    identical to an uninterrupted one. ``auto`` budget fields are resolved from
    the training rows (``TrainingSpec.resolved``). Training ends at the epoch
    budget, on early stopping, or at ``deadline`` (``time.monotonic()``; the best
    weights so far are kept). Raises ``NonFiniteLossError`` when the loss diverges
    and ``TrainingStopped`` when ``should_stop()`` turns true (after the epoch's
    checkpoint is written).
    """
    spec = spec.resolved(len(train))
    r = _prepare(model, train, val, spec, task, device, dist)
    warnings: list[str] = []
    st = _start(r, fingerprint, checkpoint_path, on_checkpoint_error, warnings)
    resumed_from = st.epoch
    params = [p for p in model.parameters() if p.requires_grad]
    patience = spec.early_stopping_patience
    epochs = spec.resolved_epochs
    while not st.done and st.epoch < epochs:
        epoch = st.epoch + 1
        t0 = time.perf_counter()
        train_loss, seen, train_s = _train_epoch(r, st, epoch, params, progress)
        if not math.isfinite(train_loss):
            _diverged(train_loss, epoch, spec)
        val_loss, val_acc = evaluate_loss(model, r.val, r.loss_fn, device, amp_dtype=r.amp_dtype, dist=dist)
        if not math.isfinite(val_loss):
            _diverged(val_loss, epoch, spec, what="validation loss")
        st.record(epoch, val_loss, model, patience if isinstance(patience, int) else None)
        if not st.done and deadline is not None and _agree(dist, time.monotonic() > deadline):
            st.done = True
            warnings.append(f"the time budget ended training after epoch {epoch} of {epochs}")
        st.done = st.done or epoch >= epochs
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "best_val_loss": st.best_val_loss,
                   "lr": float(st.opt.param_groups[0]["lr"]), "epoch_s": time.perf_counter() - t0,
                   "train_s": train_s, "samples_per_s": seen / max(train_s, 1e-9)}
        if not math.isnan(val_acc):
            metrics["val_accuracy"] = val_acc
        st.history.append(metrics)
        if checkpoint_path is not None and r.rank0:
            save_checkpoint(checkpoint_path, st.to_checkpoint(model, r.scaler, device, fingerprint))
        if on_epoch is not None and r.rank0:
            on_epoch(epoch, dict(metrics))
        if progress is not None and r.rank0:
            progress("epoch", epoch, epoch if st.done else epochs)  # an early stop ends the bar here
        if not st.done and should_stop is not None and _agree(dist, should_stop()):
            raise TrainingStopped(f"training stopped on request after epoch {epoch} of {epochs}"
                                  + ("; the checkpoint allows a resume" if checkpoint_path else ""))
    if st.best_state is not None:
        unwrap(model).load_state_dict(st.best_state)
    return FitResult(history=st.history, best_epoch=st.best_epoch, epochs_run=len(st.history),
                     resumed_from=resumed_from, stopped_early=len(st.history) < epochs, warnings=warnings)


def _agree(dist: DistContext | None, flag: bool) -> bool:
    """True when any rank says so (every rank must take the same branch)."""
    votes = [1.0 if flag else 0.0]
    return (dist.sum(votes) if dist else votes)[0] > 0


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
    net = unwrap(model).to(device)
    net.eval()
    n = int(inputs[0].shape[0])
    outs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = tuple(t[start:start + batch_size].to(device) for t in inputs)
            outs.append(net(*xb).float().cpu())
    return torch.cat(outs) if outs else torch.zeros((0, 1))
