"""A tiny model that follows the model artifact contract, written the way trainer/export.py writes one.

Serving is tested and benchmarked against this reference artifact so it does
not depend on a training run: numeric columns standardized inside the module
(NaN → train mean), a categorical column looked up in a vocabulary inside
TorchScript (unknown → OOV index), and the ``(scores__0, label__1)`` outputs.
"""

# No ``from __future__ import annotations``: TorchScript needs the buffers' class annotations as types, not strings.
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from infra.storage.base import sha256_file

REGIONS = ["EU", "US", "APAC"]


class ReferenceTabular(nn.Module):
    """forward(age, income, region) → (scores [B, C], label [B, 1]); regression returns the prediction twice."""

    mean: Tensor   # buffers (register_buffer)
    std: Tensor

    def __init__(self, n_classes: int = 2, regression: bool = False, seed: int = 0, hidden: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.regression = regression
        self.vocab: dict[str, int] = {r: i + 1 for i, r in enumerate(REGIONS)}  # 0 = OOV
        self.register_buffer("mean", torch.tensor([40.0, 50000.0]))
        self.register_buffer("std", torch.tensor([12.0, 20000.0]))
        self.embed = nn.Embedding(len(REGIONS) + 1, 4)
        self.l1 = nn.Linear(6, hidden)
        self.l2 = nn.Linear(hidden, 1 if regression else n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, age: Tensor, income: Tensor, region: list[str]) -> tuple[Tensor, Tensor]:
        x = torch.cat([age, income], dim=1)
        x = torch.where(torch.isnan(x), self.mean.expand_as(x), x)
        x = (x - self.mean) / self.std
        idx = torch.tensor([self.vocab.get(r, 0) for r in region], dtype=torch.long, device=x.device)
        h = torch.relu(self.l1(torch.cat([x, self.embed(idx)], dim=1)))
        out = self.l2(h)
        if self.regression:
            return out, out
        probs = torch.softmax(out, dim=1)
        return probs, torch.argmax(probs, dim=1, keepdim=True)


def signature(model_name: str, version: int, regression: bool = False, n_classes: int = 2) -> dict:
    labels = [] if regression else (["no", "yes"] if n_classes == 2 else [f"c{i}" for i in range(n_classes)])
    return {
        "format_version": 1,
        "task": "regression" if regression else ("binary" if n_classes == 2 else "multiclass"),
        "inputs": [
            {"name": "age", "column": "age", "kind": "numeric", "dtype": "FP32", "dims": [1]},
            {"name": "income", "column": "income", "kind": "numeric", "dtype": "FP32", "dims": [1]},
            {"name": "region", "column": "region", "kind": "categorical", "dtype": "BYTES", "dims": [1]},
        ],
        "outputs": [
            {"name": "scores__0", "dtype": "FP32", "dims": [1 if regression else n_classes]},
            {"name": "label__1", "dtype": "FP32" if regression else "INT64", "dims": [1]},
        ],
        "labels": labels, "model_name": model_name, "model_version": version,
    }


SAMPLE = {"age": [25.0, 47.0, 63.0, 35.0], "income": [32000.0, 71000.0, 55000.0, 48000.0],
          "region": ["EU", "US", "APAC", "unseen"]}


def build_module(seed: int = 0, regression: bool = False, n_classes: int = 2) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # TorchScript is the artifact contract (Triton's PyTorch backend loads it)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        return torch.jit.script(ReferenceTabular(n_classes=n_classes, regression=regression, seed=seed).eval())


def run_module(module, columns: dict) -> tuple[np.ndarray, np.ndarray]:
    """Run the module in-process on column lists (the baseline every served result is compared with)."""
    with torch.inference_mode():
        a = torch.tensor(columns["age"], dtype=torch.float32).reshape(-1, 1)
        b = torch.tensor(columns["income"], dtype=torch.float32).reshape(-1, 1)
        s, lab = module(a, b, [str(r) for r in columns["region"]])
    return s.numpy(), lab.numpy()


def write_reference_artifact(dest: Path, model_name: str = "churn", version: int = 1, seed: int = 0,
                             regression: bool = False) -> str:
    """Write model.pt, signature.json and the sample files into ``dest``; return model.pt's sha256."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    module = build_module(seed, regression)
    module.save(str(dest / "model.pt"))
    (dest / "signature.json").write_text(json.dumps(signature(model_name, version, regression), indent=1))
    scores, label = run_module(module, SAMPLE)
    (dest / "sample_input.json").write_text(json.dumps(SAMPLE))
    (dest / "sample_output.json").write_text(json.dumps({"scores__0": scores.tolist(), "label__1": label.tolist()}))
    return sha256_file(dest / "model.pt")
