"""Runs every benchmark suite and writes one report of every figure against its same-run baseline.

Each suite module exposes ``run(quick: bool) -> list[dict]`` returning records
``{figure, value, unit, baseline, baseline_value, ratio, target, met}``. The
figures come from this run on this machine; nothing is copied in by hand.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SUITES = {
    "kafka": "bench.bench_kafka",
    "datasets": "bench.bench_datasets",
    "trainer": "bench.bench_trainer",
    "loop": "bench.bench_loop_latency",
    "serving": "bench.bench_serving",
    "sink": "bench.bench_sink",
    "outcomes": "bench.bench_outcomes",
    "soak": "bench.bench_soak",
    "quality": "bench.bench_quality",
}


def machine_info() -> dict:
    import psutil
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_all(quick: bool, only: list[str] | None = None, console=None, out_dir: Path = RESULTS) -> Path:
    records, failures = [], []
    for name, module in SUITES.items():
        if only and name not in only:
            continue
        if console:
            console.print(f"[bold]bench[/] {name} …")
        try:
            recs = importlib.import_module(module).run(quick)
            for r in recs:
                r.setdefault("suite", name)
            records.extend(recs)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            failures.append({"suite": name, "error": f"suite {module} not present"})
        except Exception as exc:  # noqa: BLE001 - one failing suite must not hide the others' figures
            failures.append({"suite": name, "error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc(limit=5)})
            if console:
                console.print(f"[red]{name} failed:[/] {exc}")
    report = {"generated_at": dt.datetime.now(dt.UTC).isoformat(), "quick": quick,
              "machine": machine_info(), "records": records, "failures": failures}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "latest.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(report))
    if console:
        console.print(markdown(report))
    return path


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# ModelBus benchmark report ({'quick' if report['quick'] else 'full'})", "",
             f"{report['generated_at']} · Python {m['python']} · {m['cpus']} CPUs · {m['memory_gb']} GiB · "
             f"torch {m['torch']} · {'GPU ' + str(m['gpu']) if m['cuda'] else 'CPU only'}", "",
             "| suite | figure | value | baseline | baseline value | ratio | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["records"]:
        lines.append("| {suite} | {figure} | {v} {unit} | {baseline} | {bv} | {ratio} | {target} | {met} |".format(
            suite=r.get("suite", ""), figure=r["figure"], v=_fmt(r.get("value")), unit=r.get("unit", ""),
            baseline=r.get("baseline") or "-", bv=_fmt(r.get("baseline_value")), ratio=_fmt(r.get("ratio")),
            target=r.get("target") or "-", met={True: "yes", False: "**no**", None: "-"}[r.get("met")]))
    for f in report["failures"]:
        lines.append(f"\n**{f['suite']} did not run:** {f['error']}")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
