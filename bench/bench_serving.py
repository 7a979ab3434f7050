"""Serving benchmark: the same TorchScript model served three ways in one run.

1. in-process torch (the floor: no network, no server);
2. ModelBus on Triton (Python backend, dynamic batching, in-model telemetry on);
3. PyTriton (nvidia-pytriton's ``Triton`` + ``bind`` with ``@batch``), run in a
   child process so its Python inference does not share the load generator's GIL.

Every server is measured with the same gRPC client code (tritonclient): p50/p99
of sequential requests (concurrency 1) and closed-loop throughput at
concurrency 1, 8 and 32. Both servers stay up and are measured in alternating
short blocks (an idle server costs no CPU), so drifting background load on a
shared machine hits both alike. Telemetry cost is measured on the same
ModelBus server with interleaved on/off blocks (two deployments of the model).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

MODEL = "bench"
ROW = {"age": np.array([[41.0]], dtype=np.float32), "income": np.array([[52000.0]], dtype=np.float32),
       "region": np.array([[b"EU"]], dtype=object)}
CONCURRENCY = (1, 8, 32)


def _inputs(rows: int = 1) -> list[grpcclient.InferInput]:
    """One request of ``rows`` copies of ROW."""
    out = []
    for name, row in ROW.items():
        arr = np.repeat(row, rows, axis=0)
        inp = grpcclient.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0


def sequential_latency(url: str, model: str, n: int, rows: int = 1) -> list[float]:
    """Seconds per request of ``rows`` rows, one request at a time (after a short warm-up)."""
    client = grpcclient.InferenceServerClient(url)
    inputs = _inputs(rows)
    for _ in range(20):
        client.infer(model, inputs)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.infer(model, inputs)
        lat.append(time.perf_counter() - t0)
    client.close()
    return lat


def throughput(url: str, model: str, concurrency: int, duration_s: float) -> tuple[int, float, int]:
    """Closed loop keeping ``concurrency`` requests in flight: (completed, seconds, failures)."""
    from serving.client import closed_loop

    client = grpcclient.InferenceServerClient(url)
    inputs = _inputs()
    send = lambda cb: client.async_infer(model, inputs, cb)  # noqa: E731
    closed_loop(send, concurrency=concurrency, requests=concurrency * 4)  # warm-up
    res = closed_loop(send, concurrency=concurrency, duration_s=duration_s)
    client.close()
    return len(res.latencies_s), res.elapsed_s, len(res.errors)


def measure(servers: dict[str, tuple[str, str]], n: int, duration_s: float, rounds: int,
            settle_s: float = 0.5) -> dict[str, dict]:
    """Latency and throughput of each server, measured in interleaved blocks.

    The machine's background load drifts; alternating short blocks of each
    server spreads that drift evenly instead of handing it to whichever ran last.
    """
    lat: dict[str, list[float]] = {k: [] for k in servers}
    done = {k: {c: [0, 0.0] for c in CONCURRENCY} for k in servers}
    errors = {k: 0 for k in servers}
    for _ in range(rounds):
        for key, (url, model) in servers.items():
            lat[key].extend(sequential_latency(url, model, n // rounds))
        for c in CONCURRENCY:
            for key, (url, model) in servers.items():
                count, secs, failed = throughput(url, model, c, duration_s / rounds)
                done[key][c][0] += count
                done[key][c][1] += secs
                errors[key] += failed
                time.sleep(settle_s)  # let queued background work (telemetry) finish before the next block
    return {key: {"p50": _pct(lat[key], 50), "p99": _pct(lat[key], 99), "errors": errors[key],
                  **{f"rps_c{c}": done[key][c][0] / done[key][c][1] for c in CONCURRENCY}} for key in servers}


def in_process(model_path: Path, n: int) -> dict:
    import torch

    torch.set_num_threads(1)  # as in the served model
    module = torch.jit.load(str(model_path)).eval()

    def call():
        with torch.inference_mode():
            module(torch.from_numpy(ROW["age"]), torch.from_numpy(ROW["income"]),
                   [v.decode() for v in ROW["region"].reshape(-1)])

    for _ in range(max(50, n // 10)):
        call()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t0)
    return {"p50": _pct(lat, 50), "p99": _pct(lat, 99)}


@contextmanager
def modelbus_server(work: Path):
    """tansu + ModelBus Triton with the model deployed twice: telemetry on (MODEL) and off (MODEL_off)."""
    from infra.app.stack.process import free_port
    from infra.app.stack.tansu import TansuBroker
    from infra.app.stack.triton import TritonServer
    from infra.kafka.admin import ensure_topics
    from infra.settings import load_settings
    from infra.storage import open_store
    from serving.client import ModelClient
    from serving.deploy import Deployer
    from serving.reference_model import write_reference_artifact

    broker = TansuBroker("127.0.0.1", free_port(), work / "tansu")
    broker.start(timeout=30)
    triton = None
    try:
        base = load_settings(stack={"data_dir": str(work / "data"), "triton_grpc_port": free_port(),
                                    "triton_http_port": free_port(), "triton_metrics_port": free_port()},
                             kafka={"bootstrap_servers": broker.bootstrap, "topic_prefix": "bench"},
                             artifacts={"root": str(work / "artifacts")})
        ensure_topics(base)
        gc.collect()  # release ensure_topics' admin client before the broker goes away at the end
        triton = TritonServer(base, repository=str(work / "repo"))
        triton.start(timeout=60)
        settings = triton.client_settings()
        store = open_store(settings.artifact_root)
        checksum = write_reference_artifact(work / "export", MODEL, 1)
        for f in (work / "export").iterdir():
            store.put_file(f"models/{MODEL}/1/{f.name}", f)
        with ModelClient(triton.grpc_url) as client:
            for name, telemetry in ((MODEL, True), (MODEL + "_off", False)):
                s = settings.with_overrides(triton={"telemetry": telemetry})
                res = Deployer(s, store, client=client).deploy({
                    "model_name": name, "model_version": 1, "artifact_uri": store.uri(f"models/{MODEL}/1"),
                    "checksum": checksum})
                if not res.ok:
                    raise RuntimeError(f"bench deploy of {name} failed at {res.stage}: {res.reason}")
        yield triton.grpc_url
    finally:
        if triton is not None:
            triton.stop()
        broker.stop()


@contextmanager
def pytriton_server(work: Path):
    """PyTriton serving the same model.pt from a child process; yields its gRPC address."""
    from infra.app.stack.process import free_port
    from serving.reference_model import write_reference_artifact

    write_reference_artifact(work / "pyt-export", MODEL, 1)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = open(work / "pytriton.log", "wb")
    # PyTriton's stub must load this interpreter's libpython (not another 3.11 on the loader path), the
    # same requirement ModelBus's TritonServer meets; PyTriton appends its own libraries to this.
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_serving", "--pytriton-server",
                             str(work / "pyt-export" / "model.pt"), str(grpc_port), str(http_port), str(metrics_port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                            cwd=str(Path(__file__).resolve().parent.parent))
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"PyTriton exited with {proc.returncode}: "
                                   + (work / "pytriton.log").read_text(errors="replace")[-800:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("PyTriton did not become ready within 120 s")
            time.sleep(0.2)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _serve_pytriton(model_path: str, grpc_port: int, http_port: int, metrics_port: int) -> None:
    """Child process: the same TorchScript module bound with PyTriton's documented API."""
    import torch
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    torch.set_num_threads(1)
    module = torch.jit.load(model_path).eval()

    @batch
    def infer(age, income, region):
        with torch.inference_mode():
            scores, label = module(torch.from_numpy(age), torch.from_numpy(income),
                                   [v.decode() for v in region.reshape(-1)])
        return {"scores__0": scores.numpy(), "label__1": label.numpy()}

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=grpc_port, http_address="127.0.0.1",
                          http_port=http_port, metrics_address="127.0.0.1", metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind(model_name=MODEL, infer_func=infer,
                    inputs=[Tensor(name="age", dtype=np.float32, shape=(1,)),
                            Tensor(name="income", dtype=np.float32, shape=(1,)),
                            Tensor(name="region", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="scores__0", dtype=np.float32, shape=(2,)),
                             Tensor(name="label__1", dtype=np.int64, shape=(1,))],
                    config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher()))
        triton.serve()


def _rec(figure, value, unit, baseline, baseline_value, ratio, target, met) -> dict:
    return {"figure": figure, "value": round(value, 3), "unit": unit, "baseline": baseline,
            "baseline_value": None if baseline_value is None else round(baseline_value, 3),
            "ratio": None if ratio is None else round(ratio, 3), "target": target, "met": met}


def run(quick: bool = False) -> list[dict]:
    """Benchmark records (see module doc); quick: fewer requests and shorter throughput windows."""
    n, duration_s, rounds = (600, 3.0, 3) if quick else (3000, 9.0, 5)
    with tempfile.TemporaryDirectory(prefix="modelbus-bench-serving-") as tmp:
        work = Path(tmp)
        from serving.reference_model import write_reference_artifact

        write_reference_artifact(work / "inproc", MODEL, 1)
        local = in_process(work / "inproc" / "model.pt", n * 3)
        with modelbus_server(work) as mb_url, pytriton_server(work) as pt_url:
            on, off, on64, off64 = [], [], [], []
            blocks = 4 * rounds
            for _ in range(blocks):  # telemetry cost: same server, many short interleaved on/off blocks
                off.extend(sequential_latency(mb_url, MODEL + "_off", n // rounds))
                on.extend(sequential_latency(mb_url, MODEL, n // rounds))
                off64.extend(sequential_latency(mb_url, MODEL + "_off", n // rounds // 4, rows=64))
                on64.extend(sequential_latency(mb_url, MODEL, n // rounds // 4, rows=64))
            figures = measure({"mb": (mb_url, MODEL), "pt": (pt_url, MODEL)}, n, duration_s, rounds)
    mb, pt = figures["mb"], figures["pt"]
    tele = {"on": _pct(on, 50), "off": _pct(off, 50), "on64": _pct(on64, 50), "off64": _pct(off64, 50)}
    pyt = "PyTriton (same model, @batch, max_batch 64)"
    recs = [
        _rec("gRPC p50 latency, concurrency 1", mb["p50"], "ms", pyt, pt["p50"], mb["p50"] / pt["p50"],
             "≤ 0.5× PyTriton", mb["p50"] <= 0.5 * pt["p50"]),
        _rec("gRPC p99 latency, concurrency 1", mb["p99"], "ms", pyt, pt["p99"], mb["p99"] / pt["p99"], None, None),
    ]
    for c in CONCURRENCY:
        ratio = mb[f"rps_c{c}"] / pt[f"rps_c{c}"]
        target, met = ("≥ 2× PyTriton", ratio >= 2.0) if c == 32 else (None, None)
        recs.append(_rec(f"throughput, concurrency {c}", mb[f"rps_c{c}"], "req/s", pyt, pt[f"rps_c{c}"], ratio,
                         target, met))
    overhead = mb["p50"] - local["p50"]
    recs.append(_rec("p50 overhead over in-process torch (gRPC + Triton + telemetry)", overhead, "ms",
                     "in-process torch p50 (ms)", local["p50"], mb["p50"] / local["p50"], "≤ 1.5 ms",
                     overhead <= 1.5))
    cost = (tele["on"] - tele["off"]) / tele["off"] * 100.0
    recs.append(_rec("per-row telemetry on vs off, p50 latency cost, batch 1", cost, "%",
                     "ModelBus telemetry off p50 (ms)", tele["off"], tele["on"] / tele["off"], "≤ 5 %", cost <= 5.0))
    cost64 = (tele["on64"] - tele["off64"]) / tele["off64"] * 100.0
    recs.append(_rec("per-row telemetry on vs off, p50 latency cost, batch 64", cost64, "%",
                     "ModelBus telemetry off p50 (ms), batch 64", tele["off64"], tele["on64"] / tele["off64"],
                     "≤ 5 %", cost64 <= 5.0))
    recs.append(_rec("failed requests during the serving benchmark", mb["errors"] + pt["errors"], "requests",
                     None, None, None, "0", mb["errors"] + pt["errors"] == 0))
    return recs


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pytriton-server", nargs=4, metavar=("MODEL_PT", "GRPC", "HTTP", "METRICS"))
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    if args.pytriton_server:
        path, g, h, m = args.pytriton_server
        _serve_pytriton(path, int(g), int(h), int(m))
    else:
        for r in run(quick=not args.full):
            print(r)
