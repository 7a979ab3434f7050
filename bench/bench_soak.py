"""Soak: inference at a fixed rate for minutes through Triton → Kafka → ClickHouse, every process's memory watched.

The other suites measure bursts; a leak, a queue that never drains or lag that
creeps up only shows when the whole path runs steadily for a while. Everything
is real and started the way ``modelbus up`` starts it (tansu, the ClickHouse
owner, Triton with the reference model and in-model telemetry), plus the
telemetry sink as its own process (``python -m consumers.telemetry_sink``).
One-row requests with unique request ids are sent at a fixed rate (the
closed-loop driver of ``serving.client``, paced), while the resident memory
(RSS) of each process is sampled every second.

Figures (one run, this machine):

* loss: answered requests vs their telemetry rows in ClickHouse (target 0);
* lag: ``completed_at`` (inside the model) → ``inserted_at`` (queryable), p99 < 2 s;
* RSS growth of each process: least-squares slope over the second half of the
  run, after warm-up (target < 5 MB/min; the in-memory broker is reported but
  grows with its log by design). The ClickHouse owner's RSS moves by ±15 MB as
  parts are merged and cleaned up and settles within about a minute, so the
  memory ClickHouse itself tracks (MemoryTracking) is reported beside it;
* achieved vs requested request rate (target ≥ 95 %), and every process alive.

Run: ``python -m bench.bench_soak [--quick] [--duration S] [--rate R]`` (quick: 30 s, full: 3 min).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil

MODEL = "soak"
ROW = {"age": [41.0], "income": [52000.0], "region": ["EU"]}
SLOPE_TARGET_MB_MIN = 5.0
LAG_TARGET_S = 2.0
BROKER = "kafka (tansu)"
TRACKED = "ClickHouse's tracked memory (MemoryTracking)"


class RssSampler(threading.Thread):
    """Samples the RSS of named processes (and of Triton's backend stubs, found as its children) every ``every_s``;
    ``gauges`` are other memory readings in MB sampled alongside (e.g. what ClickHouse itself tracks)."""

    def __init__(self, pids: dict[str, int], every_s: float = 1.0, children_of: str = "triton",
                 gauges: dict[str, Callable[[], float]] | None = None):
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = dict(pids)
        self.gauges = dict(gauges or {})
        self.every_s = every_s
        self.children_of = children_of
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.seen: dict[str, int] = {}     # every process ever sampled, by name (a stub that died stays here)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def _targets(self) -> dict[str, psutil.Process]:
        out = {}
        for name, pid in self.pids.items():
            try:
                proc = out[name] = psutil.Process(pid)
                if name == self.children_of:
                    for child in proc.children(recursive=True):
                        out[f"triton python backend stub (pid {child.pid})"] = child
            except psutil.NoSuchProcess:
                continue
        return out

    def sample(self) -> None:
        t = time.monotonic() - self._t0
        for name, proc in self._targets().items():
            self.seen[name] = proc.pid
            try:
                self.samples.setdefault(name, []).append((t, proc.memory_info().rss / 2**20))
            except psutil.Error:
                continue
        for name, read in self.gauges.items():
            try:
                self.samples.setdefault(name, []).append((t, float(read())))
            except Exception:  # noqa: BLE001 - a reading that fails is a missing sample, not a failed soak
                continue

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


def slope_mb_per_min(samples: list[tuple[float, float]], from_s: float) -> tuple[float, float]:
    """Least-squares slope (MB per minute) of the samples taken after ``from_s``, and its standard error
    (allocators and ClickHouse's part cleanup move RSS by several MB either way: the error says how much
    of a slope that noise alone explains)."""
    pts = [(t, mb) for t, mb in samples if t >= from_s]
    if len(pts) < 4:
        return float("nan"), float("nan")
    t, mb = np.array(pts).T
    x = t / 60.0
    slope, icpt = np.polyfit(x, mb, 1)
    resid = mb - (slope * x + icpt)
    err = np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    return float(slope), float(err)


def clickhouse_tracked_mb(store) -> Callable[[], float]:
    """ClickHouse's own account of the memory it uses (MemoryTracking), which allocator caching does not blur."""
    sql = "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
    return lambda: store.query_rows(sql)[0]["value"] / 2**20


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class SoakResult:
    requested_rate: float
    achieved_rate: float
    duration_s: float
    answered: int
    errors: int
    rows: int
    unique_rows: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    slopes: dict[str, tuple[float, float]] = field(default_factory=dict)   # name → (MB/min, standard error)
    alive: dict[str, bool] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.answered - self.unique_rows


def paced_load(grpc_url: str, model: str, prefix: str, rate: float, duration_s: float, concurrency: int = 16):
    """One-row requests at ``rate`` per second with ids ``prefix<i>``, through ``serving.client.closed_loop``
    (at most ``concurrency`` in flight, so an overloaded server shows as a lower achieved rate)."""
    from serving.client import ModelClient, closed_loop

    client = ModelClient(grpc_url)
    inputs = client.build_inputs(client.signature(model), ROW)
    t0, sent = time.perf_counter(), 0

    def send(callback) -> None:
        nonlocal sent
        delay = t0 + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.predict_async(model, inputs, lambda out, err: callback(result=out, error=err),
                             request_id=f"{prefix}{sent}")
        sent += 1

    try:
        return closed_loop(send, concurrency=concurrency, duration_s=duration_s)
    finally:
        client.close()


def warm_up(grpc_url: str, model: str, store, prefix: str, n: int = 20, timeout_s: float = 60.0) -> None:
    """A few requests end to end first, so process start, group joins and first queries are not measured."""
    paced_load(grpc_url, model, prefix, rate=50.0, duration_s=n / 50.0, concurrency=4)
    deadline = time.monotonic() + timeout_s
    while int(_rows(store, prefix)["u"]) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak warm-up: no telemetry row in ClickHouse after {timeout_s:.0f} s")
        time.sleep(0.2)


_ROWS = """
SELECT count() AS n, uniqExact(request_id) AS u,
       quantiles(0.5, 0.99)(dateDiff('microsecond', completed_at, inserted_at)) AS q,
       max(dateDiff('microsecond', completed_at, inserted_at)) AS mx
FROM inference_telemetry WHERE startsWith(request_id, {p:String})
"""


def _rows(store, prefix: str) -> dict:
    return store.query_rows(_ROWS, {"p": prefix})[0]


def soak(*, grpc_url: str, model: str, store, pids: dict[str, int], rate: float, duration_s: float,
         concurrency: int = 16, sample_every_s: float = 1.0, drain_timeout_s: float = 60.0) -> SoakResult:
    """Drive the load while sampling memory, then wait until the telemetry of every answered request is queryable.

    ``store`` is the ClickHouse store the telemetry sink writes to (its tracked memory is sampled too);
    ``pids`` names the processes to watch (the one named 'triton' has its backend stubs watched too).
    """
    run_id = uuid.uuid4().hex[:8]
    prefix = f"soak-{run_id}-"
    warm_up(grpc_url, model, store, f"warm-{run_id}-")
    sampler = RssSampler(pids, sample_every_s, gauges={TRACKED: clickhouse_tracked_mb(store)})
    sampler.start()
    try:
        load = paced_load(grpc_url, model, prefix, rate, duration_s, concurrency)
    finally:
        sampler.stop()
    alive_now = {name: alive(pid) for name, pid in {**sampler.seen, **pids}.items()}
    answered = len(load.latencies_s)
    deadline, last, last_change = time.monotonic() + drain_timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        got = int(_rows(store, prefix)["u"])
        if got >= answered:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 15:   # no progress: what is missing is lost
            break
        time.sleep(0.2)
    row = _rows(store, prefix)
    q = row["q"] or [float("nan")] * 2
    half = duration_s / 2
    return SoakResult(
        requested_rate=rate, achieved_rate=load.throughput, duration_s=load.elapsed_s, answered=answered,
        errors=len(load.errors), rows=int(row["n"]), unique_rows=int(row["u"]), lag_p50_s=q[0] / 1e6,
        lag_p99_s=q[1] / 1e6, lag_max_s=(row["mx"] or 0) / 1e6, rss=sampler.samples,
        slopes={name: slope_mb_per_min(s, half) for name, s in sampler.samples.items()},
        alive={name: ok and alive(sampler.seen.get(name) or pids[name]) for name, ok in alive_now.items()})


def records(r: SoakResult, quick: bool = False) -> list[dict]:
    """The benchmark report's records for one soak run (RSS records carry their samples, [s, MB])."""
    span = f"{r.duration_s:.0f} s at {r.requested_rate:.0f} req/s"
    # ClickHouse's memory settles within about a minute (caches, parts waiting for merges); half a minute
    # cannot tell that from a leak, so the quick run says so next to its figure.
    settling = " (quick run: within ClickHouse's first-minute warm-up; the full run's slope is the one to judge)"
    ratio = r.achieved_rate / r.requested_rate if r.requested_rate else None
    dup = f", {r.rows - r.unique_rows} duplicate rows" if r.rows != r.unique_rows else ""
    out = [
        {"figure": f"soak: answered requests without a telemetry row in ClickHouse ({r.answered:,} answered, "
                   f"{r.errors} failed, {span}{dup})", "value": r.lost, "unit": "events lost", "baseline": None,
         "baseline_value": None, "ratio": None, "target": "0", "met": r.lost == 0 and r.answered > 0},
        {"figure": f"soak: inference → queryable lag p99 (p50 {r.lag_p50_s:.3f} s, max {r.lag_max_s:.3f} s), {span}",
         "value": round(r.lag_p99_s, 3), "unit": "s", "baseline": None, "baseline_value": None, "ratio": None,
         "target": f"< {LAG_TARGET_S:g} s", "met": bool(r.lag_p99_s < LAG_TARGET_S)},
        {"figure": f"soak: achieved request rate, {span}", "value": round(r.achieved_rate, 1), "unit": "req/s",
         "baseline": "requested rate", "baseline_value": r.requested_rate,
         "ratio": round(ratio, 3) if ratio is not None else None, "target": "≥ 0.95×",
         "met": ratio is not None and ratio >= 0.95},
    ]
    for name, samples in sorted(r.rss.items()):
        slope, err = r.slopes.get(name, (float("nan"), float("nan")))
        second_half = [mb for t, mb in samples if t >= r.duration_s / 2] or [samples[-1][1]]
        start, end = second_half[0], second_half[-1]
        by_design = name == BROKER
        note = " — in-memory broker, grows with its log by design" if by_design else \
            (settling if quick and "clickhouse" in name.lower() else "")
        what = f"growth of {name}" if name == TRACKED else f"RSS growth of {name}"
        out.append({
            "figure": f"soak: {what}, second half ({start:.0f} → {end:.0f} MB, slope ± {err:.1f} MB/min){note}",
            "value": round(slope, 2), "unit": "MB/min", "baseline": None, "baseline_value": None, "ratio": None,
            "target": None if by_design else f"< {SLOPE_TARGET_MB_MIN:g} MB/min",
            "met": None if by_design else bool(slope < SLOPE_TARGET_MB_MIN and r.alive.get(name, True)),
            "samples": [[round(t, 1), round(mb, 1)] for t, mb in samples]})
    dead = sorted(n for n, ok in r.alive.items() if not ok)
    out.append({"figure": "soak: processes alive at the end" + (f" (dead: {', '.join(dead)})" if dead else ""),
                "value": sum(r.alive.values()), "unit": f"of {len(r.alive)}", "baseline": None,
                "baseline_value": None, "ratio": None, "target": "all", "met": not dead})
    return out


def deploy_reference_model(settings, work: Path, model: str = MODEL) -> None:
    """The reference TorchScript model through the real deployer (repository, load, readiness)."""
    from infra.storage.factory import store_from_settings
    from serving.client import ModelClient
    from serving.deploy import Deployer
    from serving.reference_model import write_reference_artifact

    store = store_from_settings(settings)
    checksum = write_reference_artifact(work / "export", model, 1)
    for f in (work / "export").iterdir():
        store.put_file(f"models/{model}/1/{f.name}", f)
    with ModelClient(settings.triton.grpc_url) as client:
        res = Deployer(settings, store, client=client).deploy({
            "model_name": model, "model_version": 1, "artifact_uri": store.uri(f"models/{model}/1"),
            "checksum": checksum})
    if not res.ok:
        raise RuntimeError(f"soak deploy failed at {res.stage}: {res.reason}")


def run(quick: bool, duration_s: float | None = None, rate: float | None = None) -> list[dict]:
    from bench.bench_sink import _sink_process
    from infra.app.stack.process import free_port
    from infra.app.stack.supervisor import Stack
    from infra.clickhouse import connect
    from infra.settings import load_settings

    duration_s = duration_s or (30.0 if quick else 180.0)
    rate = rate or 200.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = Stack(load_settings(
            stack={"data_dir": str(work / "data"), "kafka_port": free_port(), "triton_grpc_port": free_port(),
                   "triton_http_port": free_port(), "triton_metrics_port": free_port(), "start_timeout_s": 120},
            clickhouse={"http_port": free_port()},
            kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}))
        sink = None
        try:
            stack.up()
            assert stack.clickhouse is not None   # no clickhouse.url given: the stack runs its own
            s = stack.settings.with_overrides(clickhouse={"url": stack.clickhouse.url})
            deploy_reference_model(s, work)
            sink = _sink_process(s, work / "sink.log", max_batch=20_000, group="bench-soak")
            found = {"triton": stack.triton.running_pid(), "telemetry sink": sink.pid,
                     "clickhouse owner (chdb)": stack.clickhouse.running_pid(), BROKER: stack.kafka.running_pid()}
            pids = {name: pid for name, pid in found.items() if pid is not None}
            if len(pids) < len(found):   # psutil.Process(None) would watch this process instead
                raise RuntimeError(f"not running after `up`: {', '.join(sorted(found.keys() - pids.keys()))}")
            with connect(s) as store:
                result = soak(grpc_url=s.triton.grpc_url, model=MODEL, store=store, rate=rate,
                              duration_s=duration_s, pids=pids)
        finally:
            if sink is not None and sink.poll() is None:
                sink.send_signal(signal.SIGTERM)
                try:
                    sink.wait(30)
                except subprocess.TimeoutExpired:
                    sink.kill()
            stack.down()
    return records(result, quick)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration", type=float, default=None, help="seconds of load (quick 30, full 180)")
    ap.add_argument("--rate", type=float, default=None, help="requests per second (default 200)")
    args = ap.parse_args()
    for rec in run(args.quick, args.duration, args.rate):
        print({k: v for k, v in rec.items() if k != "samples"})
