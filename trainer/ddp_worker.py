"""One DDP rank, launched by ``torch.distributed.run`` from ``trainer.ddp``.

Usage (by the launcher only): ``python -m torch.distributed.run ... -m trainer.ddp_worker <job_dir>``.
Rank 0 writes checkpoints, the result and JSON-line events that the launcher
relays to the caller's callbacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.ddp import EVENTS_FILE, JOB_FILE, RESULT_FILE, STOP_FILE
from trainer.errors import TrainerError
from trainer.loop import TensorSet, fit
from trainer.models import ModelConfig, build_model
from trainer.spec import TrainingSpec


class GroupContext:
    """The loop's view of the process group: rank, size and a float all-reduce."""

    def __init__(self, rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device

    def sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()


class _Events:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **event: Any) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")


def _tensors(d: dict[str, Any]) -> TensorSet:
    return TensorSet(tuple(d["inputs"]), d["target"])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job_dir = Path(argv[0])
    job = torch.load(job_dir / JOB_FILE, map_location="cpu", weights_only=True)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = job["device"] == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    events = _Events(job_dir / EVENTS_FILE, rank == 0)
    try:
        spec = TrainingSpec.from_json(job["spec"])
        cfg = ModelConfig.from_dict(json.loads(job["model_config"]))
        torch.manual_seed(spec.seed)
        net = build_model(cfg).to(device)
        model = DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
        result = fit(
            model, _tensors(job["train"]), _tensors(job["val"]), spec, task=job["task"], device=device,
            fingerprint=job["fingerprint"], checkpoint_path=job["checkpoint_path"] or None,
            on_epoch=lambda e, m: events.write(type="epoch", epoch=e, metrics=m),
            should_stop=lambda: (job_dir / STOP_FILE).exists(),
            progress=lambda s, d, t: events.write(type="progress", stage=s, done=d, total=t),
            on_checkpoint_error=lambda r: events.write(type="checkpoint_error", reason=r),
            dist=GroupContext(rank, world, device))
        if rank == 0:
            tmp = job_dir / f".{RESULT_FILE}.tmp"
            torch.save({"state": {k: v.cpu() for k, v in net.state_dict().items()},
                        "fit": json.dumps(dataclasses.asdict(result))}, tmp)
            os.replace(tmp, job_dir / RESULT_FILE)
        return 0
    except TrainerError as exc:
        events.write(type="error", **{"class": type(exc).__name__, "message": str(exc)})
        return 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    code = main()
    # Everything this worker owes is on disk (result.pt by os.replace, events closed per line). Skip the
    # interpreter's finalization: gloo's worker threads tearing down with it made a rank abort with
    # "terminate called without an active exception" after a finished run (3 in 10 on a loaded 2-core box).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
