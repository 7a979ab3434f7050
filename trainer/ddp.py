"""Distributed data-parallel training through torchrun, driven from the caller's process.

``train_and_evaluate`` stays a plain function call even with ``world_size > 1``:
this module writes the prepared tensors to a job directory, launches
``torch.distributed.run`` with ``trainer.ddp_worker``, relays rank 0's epoch
events to the caller's callbacks while the workers run, forwards stop requests
through a file, and re-raises a worker's ``TrainerError`` as the same class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from trainer import errors
from trainer.loop import CheckpointErrorCallback, EpochCallback, FitResult, ProgressCallback, TensorSet
from trainer.models import ModelConfig, build_model
from trainer.spec import TrainingSpec

_ROOT = Path(__file__).resolve().parent.parent
_POLL_S = 0.1
_ERRORS = {c.__name__: c for c in (errors.TrainerError, errors.TrainingCheckError, errors.NonFiniteLossError,
                                   errors.CheckpointError, errors.TrainingStopped, errors.ExportError)}
JOB_FILE, RESULT_FILE, EVENTS_FILE, STOP_FILE, LOG_FILE = "job.pt", "result.pt", "events.jsonl", "stop", "workers.log"


class _Tail:
    """Complete JSON lines appended to a file since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]


def train_distributed(cfg: ModelConfig, train: TensorSet, val: TensorSet, spec: TrainingSpec, *, task: str,
                      device: torch.device, fingerprint: str, checkpoint_path: Path | None = None,
                      on_epoch: EpochCallback | None = None, should_stop: Callable[[], bool] | None = None,
                      progress: ProgressCallback | None = None,
                      on_checkpoint_error: CheckpointErrorCallback | None = None) -> tuple[nn.Module, FitResult]:
    """Train on ``spec.world_size`` processes (NCCL on CUDA, gloo on CPU); return the best model on CPU."""
    if device.type == "cuda" and spec.world_size > torch.cuda.device_count():
        raise errors.TrainerError(f"world_size {spec.world_size} needs as many GPUs; "
                                  f"{torch.cuda.device_count()} are visible")
    with tempfile.TemporaryDirectory(prefix="modelbus-ddp-") as tmp:
        job = Path(tmp)
        torch.save({"model_config": json.dumps(cfg.to_dict()), "spec": spec.to_json(), "task": task,
                    "device": device.type, "fingerprint": fingerprint,
                    "checkpoint_path": str(checkpoint_path) if checkpoint_path else "",
                    "train": {"inputs": list(train.inputs), "target": train.target},
                    "val": {"inputs": list(val.inputs), "target": val.target}}, job / JOB_FILE)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               f"--nproc-per-node={spec.world_size}", "-m", "trainer.ddp_worker", str(job)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        if device.type == "cpu":
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.world_size)))
        events = _Tail(job / EVENTS_FILE)
        failure: dict[str, Any] | None = None

        def dispatch() -> None:
            nonlocal failure
            for ev in events.read():
                kind = ev.get("type")
                if kind == "epoch" and on_epoch is not None:
                    on_epoch(int(ev["epoch"]), ev["metrics"])
                elif kind == "progress" and progress is not None:
                    progress(ev["stage"], int(ev["done"]), int(ev["total"]))
                elif kind == "checkpoint_error" and on_checkpoint_error is not None:
                    on_checkpoint_error(ev["reason"])
                elif kind == "error":
                    failure = ev

        with open(job / LOG_FILE, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(_ROOT))
            try:
                stop_sent = False
                while proc.poll() is None:
                    dispatch()
                    if should_stop is not None and not stop_sent and should_stop():
                        (job / STOP_FILE).touch()
                        stop_sent = True
                    time.sleep(_POLL_S)
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        dispatch()
        if failure is not None:
            raise _ERRORS.get(failure.get("class", ""), errors.TrainerError)(failure.get("message", "worker failed"))
        if proc.returncode != 0 or not (job / RESULT_FILE).exists():
            tail = (job / LOG_FILE).read_text(errors="replace")[-3000:]
            raise errors.TrainerError(f"distributed training failed (exit code {proc.returncode}):\n{tail}")
        result = torch.load(job / RESULT_FILE, map_location="cpu", weights_only=True)
    net = build_model(cfg)
    net.load_state_dict(result["state"])
    return net, FitResult(**json.loads(result["fit"]))
