"""TorchScript export per the model artifact contract, and in-process use of it.

The exported ``forward`` takes one argument per input, named as in
signature.json, because Triton's PyTorch backend binds inputs by argument name.
Python cannot build a function with dynamic parameter names that TorchScript
can compile (TorchScript reads real source), so the wrapper's source is
generated into a temporary module and imported before scripting.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
import tempfile
import textwrap
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from infra.storage.base import sha256_file
from trainer.errors import ExportError
from trainer.preprocess import CATEGORICAL, IMAGE, NUMERIC, Preprocessing, categorical_values, numeric_values

FORMAT_VERSION = 1
SCORES, LABEL = "scores__0", "label__1"
MODEL_FILE, SIGNATURE_FILE, PREPROCESS_FILE = "model.pt", "signature.json", "preprocess.json"
SAMPLE_INPUT_FILE, SAMPLE_OUTPUT_FILE = "sample_input.json", "sample_output.json"
_DTYPE = {NUMERIC: "FP32", CATEGORICAL: "BYTES", IMAGE: "FP32"}

_HEADER = '''
from typing import List, Tuple

import torch
from torch import Tensor


class ExportedModel(torch.nn.Module):
    numeric_names: List[str]
    categorical_names: List[str]
    image_shape: List[int]

    def __init__(self, pre: torch.nn.Module, net: torch.nn.Module, numeric_names: List[str],
                 categorical_names: List[str], image_shape: List[int], target_mean: float, target_std: float):
        super().__init__()
        self.pre = pre
        self.net = net
        self.numeric_names = numeric_names
        self.categorical_names = categorical_names
        self.image_shape = image_shape
        self.target_mean = target_mean
        self.target_std = target_std
'''

_TABULAR = '''
    def forward(self, {params}) -> Tuple[Tensor, Tensor]:
        return self._run([{numeric}], [{categorical}])

    def _run(self, numeric: List[Tensor], categorical: List[List[str]]) -> Tuple[Tensor, Tensor]:
        if len(numeric) > 0:
            n = numeric[0].shape[0]
        else:
            n = len(categorical[0])
        cols: List[Tensor] = []
        for i, t in enumerate(numeric):
            if t.numel() != n:
                raise ValueError("input '" + self.numeric_names[i] + "' must have shape [batch, 1]")
            cols.append(t.reshape(n, 1).to(torch.float32))
        for j, values in enumerate(categorical):
            if len(values) != n:
                raise ValueError("input '" + self.categorical_names[j] + "' must have one string per row")
        if len(cols) > 0:
            x = torch.cat(cols, dim=1)
        else:
            x = torch.zeros((n, 0), dtype=torch.float32)
        x_num, x_cat = self.pre(x, categorical)
        return self._post(self.net(x_num, x_cat))
'''

_IMAGE = '''
    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        if image.dim() != len(self.image_shape) + 1 or list(image.shape[1:]) != self.image_shape:
            raise ValueError("input 'image' must have shape [batch] + " + str(self.image_shape))
        return self._post(self.net(self.pre(image)))
'''

_CLASSIFY = '''
    def _post(self, out: Tensor) -> Tuple[Tensor, Tensor]:
        proba = torch.softmax(out.to(torch.float32), dim=1)
        return proba, torch.argmax(proba, dim=1, keepdim=True)
'''

_REGRESS = '''
    def _post(self, out: Tensor) -> Tuple[Tensor, Tensor]:
        y = out.to(torch.float32).reshape(-1, 1) * self.target_std + self.target_mean
        return y, y
'''


@contextmanager
def _torchscript():
    """TorchScript is the artifact contract (Triton's PyTorch backend loads it); silence its deprecation notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


@dataclass(frozen=True)
class ExportResult:
    model_path: Path
    signature: dict[str, Any]
    checksum: str
    files: dict[str, Path]


def build_signature(prep: Preprocessing, *, task: str, labels: Sequence[str], model_name: str,
                    model_version: int | None = None) -> dict[str, Any]:
    inputs = [{"name": i.name, "column": i.column, "kind": i.kind, "dtype": _DTYPE[i.kind],
               "dims": list(prep.image_shape) if i.kind == IMAGE else [1],
               **({"missing": "impute"} if i.column in prep.imputed else {})}
              for i in prep.inputs]
    classify = task != "regression"
    return {
        "format_version": FORMAT_VERSION, "task": task, "inputs": inputs,
        "outputs": [{"name": SCORES, "dtype": "FP32", "dims": [len(labels) if classify else 1]},
                    {"name": LABEL, "dtype": "INT64" if classify else "FP32", "dims": [1]}],
        "labels": list(labels) if classify else [], "model_name": model_name, "model_version": model_version,
    }


def wrapper_source(prep: Preprocessing, task: str) -> str:
    """Python source of the exported wrapper for these inputs."""
    if prep.is_image:
        body = _IMAGE
    else:
        body = _TABULAR.format(
            params=", ".join(f"{i.name}: {'List[str]' if i.kind == CATEGORICAL else 'Tensor'}" for i in prep.inputs),
            numeric=", ".join(i.name for i in prep.numeric), categorical=", ".join(i.name for i in prep.categorical))
    return textwrap.dedent(_HEADER) + body + (_REGRESS if task == "regression" else _CLASSIFY)


def script_model(net: nn.Module, prep: Preprocessing, task: str) -> torch.jit.ScriptModule:
    """TorchScript module: raw inputs in, (scores, label) out."""
    name = f"_modelbus_export_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="modelbus-export-") as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(wrapper_source(prep, task), encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None   # a .py file always gets a source loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # inspect.getsource finds the class through sys.modules
        try:
            spec.loader.exec_module(module)
            eager_net = copy.deepcopy(net).cpu().eval()
            wrapper = module.ExportedModel(
                prep.module().eval(), eager_net, [i.name for i in prep.numeric], [i.name for i in prep.categorical],
                list(prep.image_shape), float(prep.target_mean), float(prep.target_std))
            try:
                with _torchscript():
                    return torch.jit.script(wrapper.eval())
            except Exception as exc:  # TorchScript raises many internal types
                raise ExportError(f"TorchScript export failed: {exc}") from exc
        finally:
            sys.modules.pop(name, None)


def export_model(out_dir: str | Path, net: nn.Module, prep: Preprocessing, *, task: str, labels: Sequence[str],
                 model_name: str, model_version: int | None = None,
                 sample: Mapping[str, Sequence[Any]] | None = None) -> ExportResult:
    """Write model.pt, signature.json, preprocess.json and the smoke-test sample files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scripted = script_model(net, prep, task)
    files = {"model": out / MODEL_FILE, "signature": out / SIGNATURE_FILE, "preprocess": out / PREPROCESS_FILE}
    scripted.save(str(files["model"]))
    signature = build_signature(prep, task=task, labels=labels, model_name=model_name, model_version=model_version)
    _write_json(files["signature"], signature)
    _write_json(files["preprocess"], prep.to_json())
    if sample is not None:
        with _torchscript():
            reloaded = torch.jit.load(str(files["model"]), map_location="cpu")
        outputs = predict_columns(reloaded, signature, sample)
        files["sample_input"], files["sample_output"] = out / SAMPLE_INPUT_FILE, out / SAMPLE_OUTPUT_FILE
        _write_json(files["sample_input"], {k: list(v) for k, v in sample.items()})
        _write_json(files["sample_output"], {k: v.tolist() for k, v in outputs.items()})
    return ExportResult(files["model"], signature, sha256_file(files["model"]), files)


def sample_columns(signature: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """JSON-safe raw inputs keyed by dataset column (NaN/inf -> null, missing category -> '')."""
    out: dict[str, list[Any]] = {}
    for inp in signature["inputs"]:
        values = columns[inp["column"]]
        if inp["kind"] == NUMERIC:
            # Non-finite values become null: JSON has no NaN/inf, and the model maps both to the train mean.
            out[inp["column"]] = [float(v) if math.isfinite(v) else None for v in numeric_values(values)]
        elif inp["kind"] == CATEGORICAL:
            out[inp["column"]] = categorical_values(values)
        else:
            out[inp["column"]] = np.nan_to_num(np.asarray(values, dtype=np.float32)).tolist()
    return out


def predict_columns(model: nn.Module, signature: Mapping[str, Any],
                    columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Run an exported model on raw ``{column or input name: values}``; outputs keyed by output name.

    Numeric ``None``/NaN is passed as NaN and categorical ``None`` as the missing
    token, exactly as a client would send them.
    """
    args: list[Any] = []
    for inp in signature["inputs"]:
        key = inp["column"] if inp["column"] in columns else inp["name"]
        if key not in columns:
            raise ExportError(f"input column {inp['column']!r} is missing")
        values = columns[key]
        if inp["kind"] == NUMERIC:
            args.append(torch.from_numpy(numeric_values(values).reshape(-1, 1)))
        elif inp["kind"] == CATEGORICAL:
            args.append(categorical_values(values))
        else:
            arr = np.asarray(values, dtype=np.float32)
            args.append(torch.from_numpy(arr.reshape(-1, *inp["dims"])))
    try:
        with torch.no_grad():
            scores, label = model(*args)
    except (RuntimeError, ValueError, torch.jit.Error) as exc:
        raise ExportError(f"the model rejected the inputs: {exc}") from exc
    names = [o["name"] for o in signature["outputs"]]
    return {names[0]: scores.numpy(), names[1]: label.numpy()}


def load_signature(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check signature.json (``path`` may be the artifact directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / SIGNATURE_FILE
    try:
        sig = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read model signature {path}: {exc}") from exc
    problems = []
    if not isinstance(sig, dict) or sig.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version is not {FORMAT_VERSION}")
    else:
        if sig.get("task") not in ("binary", "multiclass", "regression"):
            problems.append("task is not binary, multiclass or regression")
        inputs, outputs = sig.get("inputs"), sig.get("outputs")
        if not isinstance(inputs, list) or not inputs or not all(
                isinstance(i, dict) and {"name", "column", "kind", "dtype", "dims"} <= i.keys() for i in inputs):
            problems.append("inputs must be a non-empty list of {name, column, kind, dtype, dims}")
        if not isinstance(outputs, list) or len(outputs) != 2:
            problems.append("outputs must list exactly two outputs")
    if problems:
        raise ExportError(f"malformed model signature {path}: {'; '.join(problems)}")
    return sig


def load_exported(artifact_dir: str | Path, checksum: str | None = None) -> tuple[torch.jit.ScriptModule, dict]:
    """Load model.pt (verifying ``checksum`` when given) and its signature."""
    d = Path(artifact_dir)
    model_path = d / MODEL_FILE
    if checksum is not None and sha256_file(model_path) != checksum:
        raise ExportError(f"{model_path} does not match its registered checksum")
    try:
        with _torchscript():
            model = torch.jit.load(str(model_path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise ExportError(f"cannot load TorchScript model {model_path}: {exc}") from exc
    return model.eval(), load_signature(d)


def set_model_version(artifact_dir: str | Path, model_name: str, model_version: int) -> dict[str, Any]:
    """Stamp the registered name and version into signature.json (model.pt and its checksum are untouched)."""
    sig = load_signature(artifact_dir)
    sig["model_name"], sig["model_version"] = model_name, int(model_version)
    _write_json(Path(artifact_dir) / SIGNATURE_FILE, sig)
    return sig


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
