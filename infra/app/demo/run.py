"""The main job: dataset → training → gated deployment → gRPC traffic → ClickHouse → drift → challenger.

Every stage has a stable name (shown live, timed, and reused in the summary).
Parts are real: the tansu broker, Triton, chdb behind ClickHouse's HTTP
interface, the artifact store, and each consumer as its own process.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.errors import ModelBusError
from infra.settings import Settings

STAGES = ("stack", "consumers", "dataset-v1", "train-v1", "deploy-v1", "traffic", "telemetry", "drift", "outcomes",
          "dataset-v2", "challenger", "report")
DATASET = "churn"


@dataclass
class StageBoard:
    """One live status line per stage, with its duration."""

    console: Console
    rows: dict[str, list[str]] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    live: Live | None = None

    def __post_init__(self) -> None:
        self.rows = {s: ["[dim]pending[/]", "", ""] for s in STAGES}

    def render(self) -> Table:
        t = Table(title="ModelBus demo", expand=False)
        for col in ("stage", "status", "time", "detail"):
            t.add_column(col)
        for name, (status, secs, detail) in self.rows.items():
            t.add_row(name, status, secs, detail)
        return t

    def set(self, stage: str, status: str, detail: str = "") -> None:
        self.rows[stage][0] = status
        if detail:
            self.rows[stage][2] = detail
        if self.live:
            self.live.update(self.render())

    @contextmanager
    def stage(self, name: str) -> Iterator[StageBoard]:
        start = time.monotonic()
        self.set(name, "[yellow]running[/]")
        try:
            yield self
        except BaseException:
            self.rows[name][1] = f"{time.monotonic() - start:.1f}s"
            self.set(name, "[red]failed[/]")
            raise
        self.times[name] = time.monotonic() - start
        self.rows[name][1] = f"{self.times[name]:.1f}s"
        self.set(name, "[green]done[/]")


def run_demo(settings: Settings, *, keep: bool, requests: int = 3000, shifted_share: float = 0.35,
             console: Console | None = None) -> dict[str, Any]:
    from infra.app.demo.data import generate_churn, request_rows
    from infra.app.demo.outcomes import labelled, labelled_traffic, live_quality, report_outcomes
    from infra.app.demo.report import final_report
    from infra.app.demo.watch import EventWatcher
    from infra.app.stack.consumers import ConsumerSupervisor, consumer_plan
    from infra.app.stack.supervisor import Stack, embedded_settings

    console = console or Console()
    settings = embedded_settings(settings.with_overrides(
        kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500},
        monitoring={"drift_window_s": 600, "min_samples": 200},
        stack={"consumers": {"search-coordinator": 0, "metrics-scraper": 0},
               "consumer_args": {"drift-monitor": ["--interval", "2"]}},
    ))
    refuse_foreign_dir(settings.data_dir)   # before stopping anything that may run there
    stack = Stack(settings)
    group = ConsumerSupervisor(settings)
    group.stop()                            # what an earlier `demo --keep` left running
    if any(p.state == "running" for p in stack.status()):
        stack.down()
    fresh_demo_dir(settings.data_dir)   # a demo starts from nothing: no stale versions
    board = StageBoard(console)
    watcher = None
    summary: dict[str, Any] = {}
    ok = False
    try:
        with Live(board.render(), console=console, refresh_per_second=4, transient=False) as live:
            board.live = live
            with board.stage("stack"):
                stack.up(progress=lambda part, msg: board.set("stack", "[yellow]running[/]", f"{part}: {msg}"))
                board.set("stack", "[yellow]running[/]", "kafka, clickhouse, triton healthy")
            with board.stage("consumers"):   # the consumers `modelbus up` runs, under the same supervisor
                from infra.app.stack.triton import settings_env

                group.start(consumer_plan(settings), settings_env(settings))
                names = [p.name for p in group.wait_started(settings.stack.consumer_grace_s
                                                            + settings.stack.start_timeout_s)]
                watcher = EventWatcher(settings, check=lambda: [
                    f"{p.name} crashed: {p.last_error} (log {p.log})" for p in group.processes() if p.restarts])
                board.set("consumers", "[yellow]running[/]", ", ".join(names))
            from producers.sdk import ModelBus

            with ModelBus(settings) as mb:
                with board.stage("dataset-v1"):
                    v1 = mb.push_dataset(generate_churn(6000, seed=7), name=DATASET, label="churned",
                                         slice_by=("region", "contract"), source="demo:generate_churn(seed=7)")
                    board.set("dataset-v1", "[yellow]running[/]", f"{DATASET}@{v1.version} ({v1.row_count} rows)")
                with board.stage("train-v1"):
                    reg1 = watcher.wait_for("ModelRegistered v1", lambda: watcher.of(
                        "ModelRegistered", lambda v: v["dataset_version"] == v1.version), 240)[0]
                    board.set("train-v1", "[yellow]running[/]",
                              f"{reg1['model_name']} v{reg1['model_version']} {reg1['primary_metric']}="
                              f"{reg1['metrics'].get(reg1['primary_metric'], float('nan')):.3f}")
                with board.stage("deploy-v1"):
                    dec1 = _decision(watcher, reg1, 180)
                    if dec1[0] != "ModelDeployed":
                        raise ModelBusError(f"first model was rejected: {dec1[1]['reason']}")
                    board.set("deploy-v1", "[yellow]running[/]",
                              f"serving {reg1['model_name']} v{reg1['model_version']}")
                with board.stage("traffic"):
                    load = _send_traffic(settings, reg1["model_name"], request_rows(requests, 11, shifted_share))
                    summary["traffic"] = load
                    board.set("traffic", "[yellow]running[/]",
                              f"{load['ok']} ok / {load['errors']} errors, {load['rps']:.0f} req/s, "
                              f"p50 {load['p50_ms']:.2f} ms")
                with board.stage("telemetry"):
                    from infra.clickhouse import connect

                    store = connect(settings)
                    watcher.wait_for("telemetry rows in ClickHouse", lambda: _telemetry_count(
                        store, reg1["model_name"]) >= load["ok"], 120)
                    board.set("telemetry", "[yellow]running[/]", f"{_telemetry_count(store, reg1['model_name'])} rows")
                with board.stage("drift"):
                    drift = watcher.wait_for("DriftDetected", lambda: watcher.of("DriftDetected"), 120)
                    board.set("drift", "[yellow]running[/]", ", ".join(sorted({d["feature"] for d in drift})))
                with board.stage("outcomes"):   # the upstream app reports what really happened
                    truth = labelled_traffic(settings, reg1["model_name"])
                    half, late = truth[:len(truth) // 2], truth[len(truth) // 2:len(truth) * 3 // 4]
                    report_outcomes(settings, reg1["model_name"], half, by_key=False)
                    watcher.wait_for("outcomes joined to their rows", lambda: labelled(
                        store, reg1["model_name"]) >= len(half), 120)
                    board.set("outcomes", "[yellow]running[/]", f"{len(truth)} labelled rows served in batches of "
                              f"64; {len(half)} outcomes reported, {len(late)} to come late")
                with board.stage("dataset-v2"):
                    v2 = mb.push_dataset(generate_churn(6000, seed=8, shift=1.0), name=DATASET, label="churned",
                                         slice_by=("region", "contract"),
                                         source="demo:generate_churn(seed=8, shift=1.0)")
                    board.set("dataset-v2", "[yellow]running[/]", f"{DATASET}@{v2.version} (parent {v1.version})")
                with board.stage("challenger"):
                    reg2 = watcher.wait_for("ModelRegistered v2", lambda: watcher.of(
                        "ModelRegistered", lambda v: v["dataset_version"] == v2.version), 240)[0]
                    dec2 = _decision(watcher, reg2, 180)
                    verdict = "promoted" if dec2[0] == "ModelDeployed" else "rejected: " + dec2[1]["reason"]
                    board.set("challenger", "[yellow]running[/]", f"v{reg2['model_version']} {verdict}")
                with board.stage("report"):
                    report_outcomes(settings, reg1["model_name"], late, by_key=True)   # late, by the app's keys
                    watcher.wait_for("the late outcomes joined", lambda: labelled(
                        store, reg1["model_name"]) >= len(half) + len(late), 120)
                    summary.update(final_report(settings, store, reg1, reg2, dec1, dec2, watcher))
                    summary["live_quality"] = live_quality(store, reg1["model_name"])
                    store.close()
            board.live = None
        summary["stage_seconds"] = board.times
        from infra.app.demo.report import print_report

        console.print()
        print_report(console, summary)
        ok = True
        return summary
    finally:
        if watcher:
            watcher.close()
        if not (keep and ok):
            group.stop()
            stack.down()
        else:
            console.print(f"[bold]Stack and consumers left running[/] (data in {settings.data_dir}); "
                          f"stop with: MODELBUS_STACK__DATA_DIR={settings.data_dir} modelbus down")


DEMO_MARKER = ".modelbus-demo"


def fresh_demo_dir(path: Path) -> None:
    """Empty ``path`` for a new demo, but only when the demo made it: it never wipes a directory it did not create.

    The demo marks each directory it creates; an existing directory without the
    mark (a platform's data, anything else) is refused, not deleted.
    """
    refuse_foreign_dir(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / DEMO_MARKER).write_text("created by `modelbus demo`; the demo wipes this directory on its next run\n")


def refuse_foreign_dir(path: Path) -> None:
    if path.exists() and any(path.iterdir()) and not (path / DEMO_MARKER).is_file():
        raise DemoDirRefused(f"{path} is not empty and was not created by the demo (no {DEMO_MARKER} file); "
                             "the demo will not wipe it: choose another with --data-dir or MODELBUS_STACK__DATA_DIR")


class DemoDirRefused(ModelBusError):
    """The demo's data directory holds data the demo did not create."""


def _decision(watcher, reg: dict, timeout: float) -> tuple[str, dict]:
    def match(v):
        return v["model_name"] == reg["model_name"] and v["model_version"] == reg["model_version"]

    def found():
        dep = watcher.of("ModelDeployed", match)
        if dep:
            return ("ModelDeployed", dep[0])
        rej = watcher.of("DeploymentRejected", match)
        return ("DeploymentRejected", rej[0]) if rej else None

    return watcher.wait_for(f"the deployer's decision on {reg['model_name']} v{reg['model_version']}", found,
                            timeout)


def _send_traffic(settings: Settings, model: str, rows: list[dict[str, list]], concurrency: int = 8) -> dict:
    """Closed-loop gRPC load: each request is one raw row; latencies measured at the client."""
    from serving.client import ModelClient

    with ModelClient.from_settings(settings) as client:
        res = client.run_load(model, rows, concurrency=concurrency, requests=len(rows))
    return {"ok": len(res.latencies_s), "errors": len(res.errors), "rps": res.throughput,
            "p50_ms": res.percentile(50) * 1000, "p99_ms": res.percentile(99) * 1000}


def _telemetry_count(store, model: str) -> int:
    """Rows of the load generator's requests (the deployer's smoke inferences are not counted)."""
    rows = store.query_rows("SELECT count() AS n FROM inference_telemetry FINAL WHERE model_name = {m:String}"
                            " AND NOT smoke", {"m": model})
    return int(rows[0]["n"]) if rows else 0


def dashboard_path(settings: Settings) -> Path:
    return settings.data_dir / "dashboard.html"
