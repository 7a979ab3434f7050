"""Thin gRPC client for models served by ModelBus on Triton.

Callers speak in dataset columns (``{"age": [...], "region": [...]}``); the
model's signature, published in its Triton config, maps each column to its
Triton input, dtype and shape. Triton's status codes become ServingError
subclasses carrying Triton's own message.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from infra.settings import Settings
from serving.errors import InvalidRequest, ModelNotFound, ServerUnavailable, ServingError
from serving.repository import PARAM_SIGNATURE
from serving.signature import Signature, SignatureError, TensorSpec
from serving.telemetry_rows import ROW_KEYS_PARAMETER, prediction_id

_BY_STATUS = {"NOT_FOUND": ModelNotFound, "INVALID_ARGUMENT": InvalidRequest, "UNAVAILABLE": ServerUnavailable}


def map_error(exc: InferenceServerException, url: str = "") -> ServingError:
    """The ServingError subclass for a Triton status, keeping Triton's message."""
    status = str(exc.status() or "")
    msg = exc.message() or str(exc)
    cls = next((c for code, c in _BY_STATUS.items() if status.endswith(code)), ServingError)
    if cls is ServingError and "not found" in msg and "unknown model" in msg.lower():
        cls = ModelNotFound
    if cls is ServerUnavailable and url:
        msg = f"Triton at {url} is unavailable: {msg}"
    return cls(msg)


def signature_from_config(config: Mapping[str, Any]) -> Signature:
    """The ModelBus signature published in a model config; for other models, one derived from the config."""
    param = config.get("parameters", {}).get(PARAM_SIGNATURE, {}).get("string_value")
    if param:
        return Signature.parse(param)
    rev = {"TYPE_FP32": "FP32", "TYPE_FP64": "FP64", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32",
           "TYPE_STRING": "BYTES"}

    def spec(d: Mapping[str, Any], is_input: bool) -> TensorSpec:
        dtype = rev.get(d.get("data_type", ""))
        if dtype is None:
            raise SignatureError(f"tensor {d.get('name')!r} has unsupported type {d.get('data_type')!r}")
        kind = ("categorical" if dtype == "BYTES" else "numeric") if is_input else ""
        return TensorSpec(name=d["name"], dtype=dtype, dims=tuple(int(x) for x in d.get("dims", [1])),
                          column=d["name"] if is_input else "", kind=kind)

    return Signature(task="", inputs=tuple(spec(i, True) for i in config.get("input", [])),
                     outputs=tuple(spec(o, False) for o in config.get("output", [])))


def encode_column(spec: TensorSpec, values: Any) -> np.ndarray:
    """One column as the array Triton expects: FP32 numbers or BYTES strings, batch first."""
    col = spec.column or spec.name
    if spec.dtype == "BYTES":
        flat = np.asarray(values, dtype=object).reshape(-1)
        # None is a missing category: the artifact contract's missing token is the empty string.
        return np.array([v if isinstance(v, bytes) else ("" if v is None else str(v)).encode("utf-8") for v in flat],
                        dtype=object).reshape(-1, *[d if d > 0 else 1 for d in spec.dims])
    if isinstance(values, (list, tuple)):
        values = [np.nan if v is None else v for v in values]
    try:
        arr = np.asarray(values, dtype=spec.numpy_dtype)
    except (TypeError, ValueError, OverflowError) as exc:   # OverflowError: an int beyond any float
        raise InvalidRequest(f"column '{col}' must hold numbers: {exc}") from exc
    per_row = int(np.prod([d for d in spec.dims if d > 0])) if spec.dims else 1
    if arr.ndim <= 1 or list(arr.shape[1:]) != [d for d in spec.dims]:
        if arr.size % per_row:
            raise InvalidRequest(f"column '{col}' has {arr.size} values, not a multiple of the shape {list(spec.dims)}")
        arr = arr.reshape(-1, *[d if d > 0 else 1 for d in spec.dims])
    return arr


@dataclass(frozen=True)
class Prediction:
    """One answered request: its outputs by name, and the identity of each row for reporting outcomes."""

    request_id: str
    outputs: dict[str, np.ndarray]
    row_keys: tuple[str, ...] | None = None

    @property
    def prediction_ids(self) -> list[str]:
        rows = next(iter(self.outputs.values())).shape[0] if self.outputs else 0
        return [prediction_id(self.request_id, i) for i in range(rows)]


@dataclass
class LoadResult:
    """Outcome of a closed-loop load run: per-request latencies and failures."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


class ModelClient:
    """Predictions by column name, model control and a concurrent path for load generation."""

    def __init__(self, url: str, *, timeout_s: float | None = 30.0, signature_ttl_s: float = 5.0):
        self.url = url
        self.timeout_s = timeout_s
        self.signature_ttl_s = signature_ttl_s
        self._client = grpcclient.InferenceServerClient(url)
        self._signatures: dict[str, tuple[float, Signature]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelClient:
        return cls(settings.triton.grpc_url)

    def _call(self, fn: Callable, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except InferenceServerException as exc:
            raise map_error(exc, self.url) from exc

    # -- signatures ---------------------------------------------------------------------------
    def signature(self, model: str, *, refresh: bool = False) -> Signature:
        """The serving version's signature (cached for a few seconds; a deploy may change it)."""
        cached = self._signatures.get(model)
        if cached and not refresh and time.monotonic() - cached[0] < self.signature_ttl_s:
            return cached[1]
        config = self._call(self._client.get_model_config, model, as_json=True,
                            client_timeout=self.timeout_s)["config"]
        try:
            sig = signature_from_config(config)
        except SignatureError as exc:
            raise ServingError(f"model {model!r} publishes an invalid signature: {exc}") from exc
        self._signatures[model] = (time.monotonic(), sig)
        return sig

    def build_inputs(self, signature: Signature, inputs: Mapping[str, Any]) -> list[grpcclient.InferInput]:
        """InferInputs for the model's inputs from a column-keyed mapping (Triton input names work too)."""
        given: dict[str, Any] = {}
        for key, values in inputs.items():
            try:
                spec = signature.input_named(key)
            except SignatureError as exc:
                raise InvalidRequest(str(exc)) from exc
            given[spec.name] = values
        missing = [s.column or s.name for s in signature.inputs if s.name not in given]
        if missing:
            raise InvalidRequest(f"missing input column(s): {', '.join(missing)}")
        out, rows = [], None
        for spec in signature.inputs:
            arr = encode_column(spec, given[spec.name])
            if rows is not None and arr.shape[0] != rows:
                raise InvalidRequest(f"column '{spec.column}' has {arr.shape[0]} rows, the others {rows}")
            rows = arr.shape[0]
            inp = grpcclient.InferInput(spec.name, list(arr.shape), spec.dtype)
            inp.set_data_from_numpy(arr)
            out.append(inp)
        return out

    # -- inference ------------------------------------------------------------------------------
    def predict(self, model: str, inputs: Mapping[str, Any], version: int | str | None = None,
                request_id: str = "", parameters: Mapping[str, bool | int | str] | None = None
                ) -> dict[str, np.ndarray]:
        """Run one request; returns every output by name (``scores__0``, ``label__1``).

        ``parameters`` are Triton request parameters (e.g. ``serving.telemetry.SMOKE_PARAMETER``)."""
        sig = self.signature(model)
        result = self._call(self._client.infer, model, self.build_inputs(sig, inputs),
                            model_version=str(version or ""), request_id=request_id,
                            parameters=dict(parameters) if parameters else None, client_timeout=self.timeout_s)
        return {o.name: result.as_numpy(o.name) for o in sig.outputs}

    def predict_rows(self, model: str, inputs: Mapping[str, Any], version: int | str | None = None,
                     request_id: str = "", row_keys: Sequence[str] | None = None) -> Prediction:
        """Run one request and name its rows: each gets the prediction id ``<request_id>:<row>`` (a request id is
        made when none is given), and ``row_keys`` (the client's own, one per row) travel with the request so
        an outcome can later be reported by either (``ModelBus.report_outcome``)."""
        request_id = request_id or uuid.uuid4().hex
        params: dict[str, bool | int | str] = {}
        if row_keys is not None:
            params[ROW_KEYS_PARAMETER] = json.dumps([str(k) for k in row_keys])
        outputs = self.predict(model, inputs, version=version, request_id=request_id, parameters=params or None)
        return Prediction(request_id, outputs, tuple(row_keys) if row_keys is not None else None)

    def predict_async(self, model: str, infer_inputs: list[grpcclient.InferInput],
                      done: Callable[[dict[str, np.ndarray] | None, ServingError | None], None],
                      version: int | str | None = None, output_names: tuple[str, ...] = (),
                      request_id: str = "") -> None:
        """Send without waiting; ``done(outputs, error)`` runs on a gRPC thread. ``request_id`` names the
        request in its telemetry (load generators use it to find their own rows)."""

        def callback(result=None, error=None):  # tritonclient calls callback(result=..., error=...)
            if error is not None:
                done(None, map_error(error, self.url) if isinstance(error, InferenceServerException)
                     else ServingError(str(error)))
            else:
                done({n: result.as_numpy(n) for n in output_names}, None)

        self._client.async_infer(model, infer_inputs, callback, model_version=str(version or ""),
                                 request_id=request_id, client_timeout=self.timeout_s)

    def run_load(self, model: str, inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, concurrency: int,
                 requests: int | None = None, duration_s: float | None = None,
                 version: int | str | None = None) -> LoadResult:
        """Closed loop: keep ``concurrency`` requests in flight until ``requests`` are done or time runs out.

        ``inputs`` is one request, sent again and again, or a sequence of requests
        sent in order (cycling), so a load can mix populations (e.g. drifted rows).
        Every request is encoded before the clock starts.
        """
        if requests is None and duration_s is None:
            raise ValueError("give requests or duration_s")
        sig = self.signature(model)
        many = [inputs] if isinstance(inputs, Mapping) else list(inputs)
        if not many:
            raise ValueError("inputs is an empty sequence")
        prepared = [self.build_inputs(sig, one) for one in many]
        order = itertools.count()
        return closed_loop(lambda cb: self._client.async_infer(model, prepared[next(order) % len(prepared)], cb,
                                                               model_version=str(version or "")),
                           concurrency=concurrency, requests=requests, duration_s=duration_s)

    # -- model control --------------------------------------------------------------------------
    def load_model(self, model: str, timeout_s: float = 120.0) -> None:
        self._call(self._client.load_model, model, client_timeout=timeout_s)
        self._signatures.pop(model, None)

    def unload_model(self, model: str) -> None:
        self._call(self._client.unload_model, model, client_timeout=self.timeout_s)
        self._signatures.pop(model, None)

    def is_ready(self, model: str, version: int | str | None = None) -> bool:
        try:
            return bool(self._client.is_model_ready(model, str(version or ""), client_timeout=self.timeout_s))
        except InferenceServerException as exc:
            err = map_error(exc, self.url)
            if isinstance(err, ServerUnavailable):
                raise err from exc
            return False

    def models(self) -> list[dict[str, Any]]:
        """Triton's repository index: name, version, state, reason of every known model version."""
        index = self._call(self._client.get_model_repository_index, as_json=True, client_timeout=self.timeout_s)
        return [dict(m) for m in index.get("models", [])]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def closed_loop(send: Callable[[Callable], None], *, concurrency: int, requests: int | None = None,
                duration_s: float | None = None) -> LoadResult:
    """Drive ``send(callback)`` with at most ``concurrency`` outstanding calls; callback(result=, error=)."""
    res = LoadResult()
    lock = threading.Lock()
    slots = threading.Semaphore(concurrency)
    all_done = threading.Condition(lock)
    state = {"outstanding": 0}

    def callback(started: float, result=None, error=None) -> None:
        now = time.perf_counter()
        with lock:
            if error is not None:
                res.errors.append(str(error))
            else:
                res.latencies_s.append(now - started)
            state["outstanding"] -= 1
            all_done.notify_all()
        slots.release()

    t0 = time.perf_counter()
    deadline = t0 + duration_s if duration_s is not None else float("inf")
    sent = 0
    while (requests is None or sent < requests) and time.perf_counter() < deadline:
        slots.acquire()
        with lock:
            state["outstanding"] += 1
        try:
            send(functools.partial(callback, time.perf_counter()))
        except Exception as exc:  # noqa: BLE001 - a refused send counts as a failed request
            callback(time.perf_counter(), error=exc)
        sent += 1
    drain_deadline = time.monotonic() + 60.0
    with lock:
        while state["outstanding"] and time.monotonic() < drain_deadline:
            all_done.wait(timeout=1.0)
        if state["outstanding"]:
            res.errors.extend(["no response within 60 s"] * state["outstanding"])
    res.elapsed_s = time.perf_counter() - t0
    return res
