"""Trainer throughput against a bare PyTorch loop on the same model and data.

The bare loop is what a careful engineer writes by hand: tensors in memory,
``torch.randperm`` batches, AdamW, no DataLoader, nothing else. It is measured
twice: with PyTorch's default AdamW and with the fused AdamW the trainer uses,
so the second ratio isolates the trainer's own overhead. The trainer adds
gradient clipping, an LR schedule, loss tracking, validation, early-stopping
bookkeeping and a checkpoint per epoch; the figures show what that costs.
Both run in the same process on the same tensors, interleaved, and each side
is scored by its fastest epoch in thread CPU time, so other processes on a
shared machine cannot skew the ratio.

Run: ``python -m bench.bench_trainer [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from trainer.data import Table
from trainer.loop import TensorSet, fit
from trainer.models import ModelConfig, build_model
from trainer.preprocess import fit_preprocessing
from trainer.spec import TrainingSpec

BATCH = 256
TARGET_TRAIN = 0.95  # train-phase throughput vs bare loop
TARGET_FIT = 0.90  # whole fit() (validation + checkpoint every epoch) vs bare loop


def _data(n: int, seed: int = 0) -> tuple[TensorSet, TensorSet, ModelConfig]:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.normal(size=n) for i in range(16)}
    cols["c0"] = rng.choice([f"v{i}" for i in range(20)], n)
    cols["c1"] = rng.choice(["a", "b", "c"], n)
    frame = pd.DataFrame(cols)
    logit = frame["x0"] - frame["x1"] + (frame["c1"] == "a") + rng.normal(size=n)
    y = (logit > 0).to_numpy().astype(np.int64)
    table = Table(frame)
    n_val = n // 6
    train_rows, val_rows = np.arange(n - n_val), np.arange(n - n_val, n)
    prep = fit_preprocessing(table, list(cols), train_rows)
    train = TensorSet(prep.encode(table, train_rows), torch.from_numpy(y[train_rows]))
    val = TensorSet(prep.encode(table, val_rows), torch.from_numpy(y[val_rows]))
    cfg = ModelConfig(kind="mlp", n_outputs=2, n_numeric=len(prep.numeric), cardinalities=tuple(prep.cardinalities))
    return train, val, cfg


def _bare_loop(train: TensorSet, cfg: ModelConfig, epochs: int, lr: float, clock,
               fused: bool | None = None) -> list[float]:
    """Seconds per epoch of a minimal hand-written loop (PyTorch's default AdamW unless ``fused``)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=fused)
    x_num, x_cat = train.inputs
    y = train.target
    n = len(y)
    model.train()
    times = []
    for _ in range(epochs):
        t0 = clock()
        perm = torch.randperm(n)
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            loss = F.cross_entropy(model(x_num[idx], x_cat[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(clock() - t0)
    return times


def _trainer(train: TensorSet, val: TensorSet, cfg: ModelConfig, spec: TrainingSpec, clock,
             ckpt: Path | None) -> list[float]:
    """Seconds per epoch of ``fit``: from one ``on_epoch`` call to the next (validation and checkpoint included)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    stamps = [clock()]
    fit(model, train, val, spec, task="binary", device=torch.device("cpu"), checkpoint_path=ckpt,
        on_epoch=lambda epoch, metrics: stamps.append(clock()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def _record(figure: str, value: float, baseline: str, baseline_value: float, target: float) -> dict:
    ratio = value / baseline_value
    return {"figure": figure, "value": round(value, 1), "unit": "samples/s", "baseline": baseline,
            "baseline_value": round(baseline_value, 1), "ratio": round(ratio, 3), "target": target,
            "met": bool(ratio >= target)}


def run(quick: bool = False, threads: int = 1, clock: str = "cpu") -> list[dict]:
    """Benchmark records: trainer samples/s vs bare loops (same MLP, data, batch 256, same run).

    Both sides run on ``threads`` CPU threads (one by default). ``clock='cpu'``
    times the calling thread's CPU time (``time.thread_time``), which other
    processes on a shared machine cannot inflate; it leaves out I/O waits such
    as the checkpoint's fsync. ``clock='wall'`` times wall-clock seconds.
    The train-phase figure runs ``fit`` with a one-row validation split and no
    checkpoint; the fit figure with a real validation split and a checkpoint
    every epoch.
    """
    tick = time.thread_time if clock == "cpu" else time.perf_counter
    n, epochs, repeats = (12_000, 3, 5) if quick else (60_000, 3, 7)
    train, val, cfg = _data(n)
    one_row = TensorSet(tuple(t[:1] for t in val.inputs), val.target[:1])
    spec = TrainingSpec(epochs=epochs, batch_size=BATCH, lr=1e-3, early_stopping_patience=None, time_budget_s=None,
                        device="cpu", seed=0)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _bare_loop(train, cfg, 1, spec.resolved_lr, tick)  # warm-up: first-call kernel and allocator costs
        _bare_loop(train, cfg, 1, spec.resolved_lr, tick, fused=True)
        bare, bare_fused, train_phase, whole = [], [], [], []
        with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
            ckpt = Path(tmp) / "checkpoint.pt"
            _trainer(train, val, cfg, spec.model_copy(update={"epochs": 1}), tick, ckpt)  # warm-up
            for _ in range(repeats):  # interleaved so drifting machine load hits every side alike
                bare += _bare_loop(train, cfg, epochs, spec.resolved_lr, tick)
                train_phase += _trainer(train, one_row, cfg, spec, tick, None)
                whole += _trainer(train, val, cfg, spec, tick, ckpt)
                bare_fused += _bare_loop(train, cfg, epochs, spec.resolved_lr, tick, fused=True)
    finally:
        torch.set_num_threads(previous_threads)
    # Each side's fastest epoch: the least disturbed measurement of the same work.
    rows = len(train)
    bare_sps, fused_sps = rows / min(bare), rows / min(bare_fused)
    return [
        _record("trainer_train_phase_throughput", rows / min(train_phase), "bare_pytorch_loop", bare_sps,
                TARGET_TRAIN),
        _record("trainer_fit_throughput_incl_val_ckpt", rows / min(whole), "bare_pytorch_loop", bare_sps,
                TARGET_FIT),
        _record("trainer_train_phase_throughput_same_optimizer", rows / min(train_phase),
                "bare_pytorch_loop_fused_adamw", fused_sps, TARGET_TRAIN),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="CPU time (default) or wall time")
    args = parser.parse_args()
    for rec in run(quick=args.quick, clock=args.clock):
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
