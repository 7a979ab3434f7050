"""The model signature (signature.json): the one contract between trainer, repository, model and client.

Parsed strictly once, here, so that a malformed signature fails a deployment at
the artifact stage instead of surfacing as a confusing Triton load error or a
wrong column mapping in a client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from serving.errors import SignatureError

TASKS = ("binary", "multiclass", "regression")
KINDS = ("numeric", "categorical", "image")
NAN_POLICIES = ("auto", "reject", "impute")
IMPUTE = "impute"  # an input's "missing": the model was trained with nulls in it and imputes them itself
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# signature dtype -> (Triton config type, numpy dtype name)
DTYPES: dict[str, tuple[str, str]] = {
    "FP32": ("TYPE_FP32", "float32"),
    "FP64": ("TYPE_FP64", "float64"),
    "INT64": ("TYPE_INT64", "int64"),
    "INT32": ("TYPE_INT32", "int32"),
    "BYTES": ("TYPE_STRING", "object"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: Triton name, dtype, per-sample dims (batch excluded)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    column: str = ""
    kind: str = ""
    missing: str = ""

    def accepts_nan(self, policy: str) -> bool:
        """Whether a NaN in this input is served (imputed by the model) or refused, under ``nan_policy``.

        'auto' serves NaN exactly where the model was trained on nulls (the input's
        signature says ``"missing": "impute"``), so a null-bearing dataset's rows are
        answered like in training while a model that never saw a null stays strict;
        'reject' is strict everywhere, 'impute' lenient everywhere.
        """
        if policy not in NAN_POLICIES:
            raise SignatureError(f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}")
        return self.kind == "numeric" and (policy == IMPUTE or (policy == "auto" and self.missing == IMPUTE))

    @property
    def triton_type(self) -> str:
        return DTYPES[self.dtype][0]

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype][1]


@dataclass(frozen=True)
class Signature:
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] = ()
    model_name: str = ""
    model_version: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, source: str | bytes | dict[str, Any]) -> Signature:
        """Parse and validate signature JSON (text or decoded); raises SignatureError naming the field."""
        if isinstance(source, (str, bytes)):
            try:
                data = json.loads(source)
            except ValueError as exc:
                raise SignatureError(f"signature is not valid JSON: {exc}") from exc
        else:
            data = source
        if not isinstance(data, dict):
            raise SignatureError("signature must be a JSON object")
        if data.get("format_version", 1) != 1:
            raise SignatureError(f"unsupported signature format_version {data.get('format_version')!r}")
        task = data.get("task")
        if task not in TASKS:
            raise SignatureError(f"signature task must be one of {TASKS}, got {task!r}")
        inputs = tuple(_spec(d, "inputs", i, is_input=True) for i, d in enumerate(_list(data, "inputs")))
        outputs = tuple(_spec(d, "outputs", i, is_input=False) for i, d in enumerate(_list(data, "outputs")))
        names = [s.name for s in inputs + outputs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SignatureError(f"signature has duplicate tensor names: {sorted(dup)}")
        if len(outputs) != 2:
            raise SignatureError(f"signature must have 2 outputs (scores, label), got {len(outputs)}")
        labels = data.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise SignatureError("signature labels must be a list of strings")
        version = data.get("model_version")
        return cls(task=task, inputs=inputs, outputs=outputs, labels=tuple(labels),
                   model_name=str(data.get("model_name") or ""),
                   model_version=int(version) if version is not None else None, raw=data)

    def to_json(self) -> str:
        return json.dumps(self.raw or self.as_dict(), sort_keys=True)

    def as_dict(self) -> dict[str, Any]:
        def spec(s: TensorSpec, is_input: bool) -> dict[str, Any]:
            d: dict[str, Any] = {"name": s.name, "dtype": s.dtype, "dims": list(s.dims)}
            if is_input:
                d.update(column=s.column, kind=s.kind)
                if s.missing:
                    d["missing"] = s.missing
            return d

        return {"format_version": 1, "task": self.task, "labels": list(self.labels),
                "inputs": [spec(s, True) for s in self.inputs], "outputs": [spec(s, False) for s in self.outputs],
                "model_name": self.model_name, "model_version": self.model_version}

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def input_named(self, key: str) -> TensorSpec:
        """The input whose dataset column or Triton name is ``key``."""
        for s in self.inputs:
            if key == s.column or key == s.name:
                return s
        known = ", ".join(s.column or s.name for s in self.inputs)
        raise SignatureError(f"unknown input {key!r}; the model takes: {known}")


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise SignatureError(f"signature {key} must be a non-empty list")
    return value


def _spec(d: Any, where: str, i: int, *, is_input: bool) -> TensorSpec:
    if not isinstance(d, dict):
        raise SignatureError(f"signature {where}[{i}] must be an object")
    name = d.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SignatureError(f"signature {where}[{i}].name {name!r} is not a valid tensor name")
    dtype = d.get("dtype")
    if dtype not in DTYPES:
        raise SignatureError(f"signature {where}[{i}] ({name}): dtype {dtype!r} not one of {sorted(DTYPES)}")
    dims = d.get("dims", [1])
    if (not isinstance(dims, list) or not dims
            or not all(isinstance(x, int) and not isinstance(x, bool) and (x > 0 or x == -1) for x in dims)):
        raise SignatureError(f"signature {where}[{i}] ({name}): dims {dims!r} must be positive ints or -1")
    kind = ""
    column = ""
    missing = d.get("missing") or ""
    if missing not in ("", IMPUTE) or (missing and (not is_input or d.get("kind") != "numeric")):
        raise SignatureError(f"signature {where}[{i}] ({name}): missing {missing!r} is only 'impute' on a numeric "
                             "input")
    if is_input:
        kind = d.get("kind", "numeric")
        if kind not in KINDS:
            raise SignatureError(f"signature input {name}: kind {kind!r} not one of {KINDS}")
        if (kind == "categorical") != (dtype == "BYTES"):
            raise SignatureError(f"signature input {name}: kind {kind} does not match dtype {dtype}")
        column = str(d.get("column") or name)
    return TensorSpec(name=name, dtype=dtype, dims=tuple(dims), column=column, kind=kind, missing=missing)
