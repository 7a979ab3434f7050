"""Triton Python-backend model that serves a ModelBus TorchScript artifact.

Copied into every version directory of the repository. It validates every
request against the signature (a bad request gets its own error response; the
rest of the batch and the server carry on), runs all valid requests of a
dynamic batch in one forward pass, and emits one InferenceTelemetry event per
request through a non-blocking buffer.

The forward pass runs either here (the ``python`` backend: it refuses to load a
model.pt whose sha256 differs from the one recorded at deployment) or, when
the config names a ``modelbus.step_model``, in that libtorch model through a
BLS call (the ``pytorch`` backend), so validation and telemetry are the same
on both.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from infra.logs import configure_logging
from infra.settings import load_settings
from schemas.types import InferenceTelemetry
from serving.artifact import verify_checksum
from serving.signature import Signature
from serving.telemetry import STAGE_DECODE, STAGE_ENCODE, STAGE_MODEL, TelemetryEmitter, is_smoke, telemetry_event
from serving.telemetry_rows import NO_ROWS, as_text, row_columns, row_keys, row_values

log = logging.getLogger("modelbus.serving.model")
TORCH_THREADS = 1  # one instance = one core; scale with instance_group count instead


def _rows_in(request) -> int:
    """Rows a refused request held (its first input's leading dimension), so its telemetry counts them."""
    try:
        first = request.inputs()[0].as_numpy()
        return int(first.shape[0]) if first.ndim else 1
    except Exception:      # noqa: BLE001 - a request with no usable input held no rows we can count
        return 0


class BadRequest(Exception):
    """A request does not match the signature; its message goes back to the client as INVALID_ARGUMENT."""


class TritonPythonModel:
    def initialize(self, args):
        # Entry point of this process (Triton's stub): settings are built here, from the environment.
        self.settings = load_settings()
        configure_logging(self.settings.log_level)
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.model_version = int(args["model_version"])
        vdir = Path(args["model_repository"]) / args["model_version"]
        self.signature = Signature.parse((vdir / "signature.json").read_bytes())
        self.max_batch = int(config.get("max_batch_size") or 0)
        self.inputs = self.signature.inputs
        self.outputs = self.signature.outputs
        self._specs = [(spec, np.dtype(object) if spec.dtype == "BYTES" else np.dtype(spec.numpy_dtype), spec.dims)
                       for spec in self.inputs]
        params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
        self.step = params.get("modelbus.step_model") or ""
        self.module = None
        if not self.step:   # the step model checks its own artifact: the deployer verified it before placing it
            deploy = json.loads((vdir / "deploy.json").read_text())
            verify_checksum(vdir / "model.pt", deploy["checksum"])  # raises: Triton reports a failed load
            torch.set_num_threads(TORCH_THREADS)
            self.device = torch.device("cpu")
            if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
                self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")
            self.module = torch.jit.load(str(vdir / "model.pt"), map_location=self.device).eval()
            self._warm_up()
        param = params.get("modelbus.telemetry")
        enabled = param == "true" if param in ("true", "false") else self.settings.triton.telemetry
        policy = params.get("modelbus.nan_policy") or self.settings.triton.nan_policy
        self._nan_ok = {spec.name: spec.accepts_nan(policy) for spec in self.inputs}
        self.emitter = None
        if enabled:
            # The telemetry thread shares the GIL with execute(): let a waiting request take it over
            # within 0.2 ms instead of the default 5 ms (this stub process serves only this model).
            sys.setswitchinterval(0.0002)
            instance = args.get("model_instance_name", self.model_name)
            self.emitter = TelemetryEmitter(
                self.settings, name=f"{self.model_name}-v{self.model_version}-{instance}", model_name=self.model_name,
                stats_path=self.settings.data_dir / "telemetry" / f"{instance}-v{self.model_version}.json")
        log.info("loaded %s v%d (%s, forward %s, telemetry %s)", self.model_name, self.model_version,
                 self.signature.task, self.step or "in-process", "on" if self.emitter else "off")

    def _warm_up(self) -> None:
        """Two forward passes at load: TorchScript optimizes on early calls, and a broken module fails the load."""
        arrays = []
        for spec in self.inputs:
            if spec.kind == "categorical":
                arrays.append(np.array([[b""]], dtype=object))
            else:
                arrays.append(np.zeros((1, *[d if d > 0 else 1 for d in spec.dims]), dtype=np.float32))
        for _ in range(2):
            self._forward(arrays)

    # -- request handling ----------------------------------------------------------------------
    def _decode(self, request, params: str) -> tuple[list, int, list, list | None]:
        """Inputs in signature order, the row count, each numeric input's sum (reused by telemetry), and the
        client's row keys (None when it sent none).

        One float64 reduction per numeric input answers "any NaN/inf?" (a float32 sum in
        float64 cannot overflow, so a non-finite sum means a non-finite value) and
        gives the telemetry mean; the exact offending rows are only computed on refusal.
        """
        arrays, sums, batch = [], [], None
        given = {t.name(): t for t in request.inputs()}
        for spec, want, dims in self._specs:
            tensor = given.get(spec.name)
            if tensor is None:
                raise BadRequest(f"missing input '{spec.name}' (column '{spec.column}')")
            arr = tensor.as_numpy()
            if arr.dtype != want:
                raise BadRequest(f"input '{spec.name}' has dtype {arr.dtype}, expected {spec.dtype}")
            shape = arr.shape
            if shape[1:] != dims and (len(shape) != len(dims) + 1
                                      or any(d not in (-1, a) for d, a in zip(dims, shape[1:]))):
                raise BadRequest(f"input '{spec.name}' has shape {list(shape)}, "
                                 f"expected [batch, {', '.join(map(str, dims))}]")
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise BadRequest(f"input '{spec.name}' has {shape[0]} rows, other inputs have {batch}")
            total = None
            if spec.dtype != "BYTES":
                total = arr.item() if arr.size == 1 else float(arr.sum(dtype=np.float64))
                if total - total != 0:  # NaN or inf somewhere
                    strict = not self._nan_ok[spec.name]
                    bad_values = ~np.isfinite(arr) if strict else np.isinf(arr)
                    if bad_values.any():
                        bad = np.flatnonzero(bad_values.reshape(shape[0], -1).any(axis=1))[:5].tolist()
                        what = "NaN or infinite" if strict else "infinite"
                        why = ("; NaN is refused: the model was not trained with missing values in this input "
                               "or nan_policy is 'reject'") if strict else ""
                        raise BadRequest(f"input '{spec.name}' contains {what} values (rows {bad}){why}")
            arrays.append(arr)
            sums.append(total)
        if not batch:
            raise BadRequest("request has no rows")
        if self.max_batch and batch > self.max_batch:
            raise BadRequest(f"batch of {batch} rows exceeds max_batch_size {self.max_batch}")
        try:
            keys = row_keys(params, batch)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return arrays, batch, sums, keys

    def _forward(self, arrays: list) -> list[np.ndarray]:
        if self.step:
            return self._forward_step(arrays)
        args: list[Any] = []
        for spec, arr in zip(self.inputs, arrays):
            if spec.kind == "categorical":
                args.append([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)])
            else:
                args.append(torch.from_numpy(arr).to(self.device))
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        if len(out) != len(self.outputs):
            raise RuntimeError(f"model returned {len(out)} outputs, signature declares {len(self.outputs)}")
        return [o.detach().cpu().numpy().astype(spec.numpy_dtype, copy=False) for o, spec in zip(out, self.outputs)]

    def _forward_step(self, arrays: list) -> list[np.ndarray]:
        """One BLS call to the libtorch step model; its config takes strings as a 1-D list (see repository)."""
        tensors = [pb_utils.Tensor(spec.name, arr.reshape(-1) if spec.dtype == "BYTES" else arr)
                   for spec, arr in zip(self.inputs, arrays)]
        request = pb_utils.InferenceRequest(
            model_name=self.step, model_version=self.model_version, inputs=tensors,
            requested_output_names=[spec.name for spec in self.outputs],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.step}: {response.error().message()}")
        outs = []
        for spec in self.outputs:
            tensor = pb_utils.get_output_tensor_by_name(response, spec.name)
            if tensor is None:
                raise RuntimeError(f"{self.step} returned no output '{spec.name}'")
            arr = tensor.as_numpy() if tensor.is_cpu() else torch.from_dlpack(tensor.to_dlpack()).cpu().numpy()
            outs.append(arr.astype(spec.numpy_dtype, copy=False))
        return outs

    def execute(self, requests: list) -> list:
        received = time.time_ns() // 1000
        t0 = time.perf_counter_ns()
        decoded, errors, refused = [], {}, {}
        params = [request.parameters() for request in requests]   # read once: row keys, then the smoke flag
        for i, request in enumerate(requests):
            try:
                arrays, n, sums, keys = self._decode(request, params[i])
                decoded.append((i, arrays, n, sums, keys))
            except BadRequest as exc:
                errors[i] = (str(exc), pb_utils.TritonError.INVALID_ARG)
                refused[i] = _rows_in(request)
        t1 = time.perf_counter_ns()
        results: dict[int, list[np.ndarray]] = {}
        if decoded:
            try:
                merged = decoded[0][1] if len(decoded) == 1 else [
                    np.concatenate([d[1][j] for d in decoded]) for j in range(len(self.inputs))]
                outs = self._forward(merged)
                start = 0
                for i, _, n, _, _ in decoded:
                    results[i] = [o[start:start + n] for o in outs]
                    start += n
            except Exception:  # noqa: BLE001 - isolate the failing request(s) instead of failing the batch
                for i, arrays, _, _, _ in decoded:
                    try:
                        results[i] = self._forward(arrays)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("stage=%s model=%s version=%d request failed: %s", STAGE_MODEL,
                                    self.model_name, self.model_version, exc)
                        errors[i] = (f"model failed on this request: {exc}", pb_utils.TritonError.INTERNAL)
        t2 = time.perf_counter_ns()
        responses = []
        for i in range(len(requests)):
            if i in results:
                tensors = [pb_utils.Tensor(spec.name, arr) for spec, arr in zip(self.outputs, results[i])]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            else:
                msg, code = errors[i]
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg, code)))
        t3 = time.perf_counter_ns()
        if self.emitter is not None:
            self._emit(requests, params, decoded, results, errors, refused, received,
                       (t1 - t0, t2 - t1, t3 - t2))
        return responses

    # -- telemetry -------------------------------------------------------------------------------
    def _emit(self, requests, params, decoded, results, errors, refused, received, spans) -> None:
        """Hand one event builder per request to the emitter; only what cannot outlive execute() is read here.

        Input arrays may live in Triton's shared memory, so each row's input values are
        copied now (``row_values``; the sums come from decoding); outputs are our own
        arrays. Dicts, header, per-row records and encoding happen off the request path.
        """
        completed = time.time_ns() // 1000
        stages = {STAGE_DECODE: spans[0] // 1000, STAGE_MODEL: spans[1] // 1000, STAGE_ENCODE: spans[2] // 1000}
        inputs = {d[0]: d for d in decoded}
        for i, request in enumerate(requests):
            numeric: list = []
            categorical: list = []
            n, keys = refused.get(i, 0), None
            if i in inputs:
                _, arrays, n, sums, keys = inputs[i]
                numeric, categorical = row_values(self.inputs, arrays, sums, n)
            self.emitter.emit(functools.partial(
                self._event, request.request_id(), is_smoke(params[i]), received, completed, stages, n,
                numeric, categorical, keys, results.get(i), errors[i][0] if i in errors else None))

    def _event(self, request_id, smoke, received, completed, stages, n, numeric, categorical, keys, outs,
               error) -> InferenceTelemetry:
        numeric = [c for c in numeric if c[1] == c[1]]    # a column with no value in the request is left out
        cols = row_columns(self.signature, outs, numeric, categorical, keys) if outs is not None else NO_ROWS
        first = len(cols["row_predictions"]) > 0
        return telemetry_event(
            request_id=request_id, model_name=self.model_name, model_version=self.model_version,
            received_at=received, completed_at=completed, stages=stages, batch_size=n,
            numeric={name: mean for name, mean, _ in numeric},
            categorical={name: as_text(values[0]) for name, values in categorical if values},
            prediction=cols["row_predictions"][0] if first else "",
            prediction_value=cols["row_values"][0] if first else 0.0,
            confidence=cols["row_confidences"][0] if first else 0.0, error=error, smoke=smoke, rows=cols)

    def finalize(self):
        if getattr(self, "emitter", None) is not None:
            self.emitter.close(timeout=5.0)
