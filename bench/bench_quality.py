"""Quality of the default model: each real dataset pushed with NO training spec through the real loop.

The embedded stack (tansu, chdb, Triton) and the production consumers (training,
deployer) run as in ``modelbus demo``. For every dataset of
``bench.bench_quality_data.SUITE`` the suite pushes it with no spec, waits for
ModelRegistered and the deployer's decision, and reports the automatic model
against the best baseline: the paired difference (positive = model better) and
its 95% CI as the gate computed them on the test rows, read from the
``beats_baseline:<name>`` check with the best ``reference_value`` in the
ModelDeployed / DeploymentRejected event (``n/a`` where the gate does not carry
them), whether it was deployed, and the training time.

Targets (issue 13): non-inferior to the best baseline (CI lower bound > -0.01;
for rmse the margin is 1 % of the baseline's value, as the gate states it)
on >= 80% of the suite; better than the linear baseline wherever gradient
boosting is; training <= 60 s per dataset. Results: ``bench/results/quality.json``
and ``quality.md``. Run: ``python -m bench.bench_quality [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.bench_quality_data import QUICK, SUITE, QualityDataset
from serving.paired import margin_in_units

RESULTS = Path(__file__).parent / "results"
MARGIN = 0.01
NON_INFERIOR_SHARE = 0.8
TRAIN_BUDGET_S = 60.0
TIMEOUT_S = 600.0


def run(quick: bool = False, out_dir: Path = RESULTS, names: tuple[str, ...] | None = None) -> list[dict]:
    """Runner records (one per dataset plus the suite targets); writes quality.json / quality.md."""
    chosen = [d for d in SUITE if d.name in (names or (QUICK if quick else [d.name for d in SUITE]))]
    rows = _run_loop(chosen)
    write_results(rows, Path(out_dir))
    return records(rows)


def _of_version(version: str) -> Callable[[dict], bool]:
    return lambda v: v["dataset_version"] == version


def _finished_run(run_id: str) -> Callable[[dict], bool]:
    return lambda v: v["run_id"] == run_id and v["status"] == "finished"


def _run_loop(datasets: list[QualityDataset]) -> list[dict[str, Any]]:
    from infra.app.demo.procs import ConsumerGroup
    from infra.app.demo.run import _decision
    from infra.app.demo.watch import EventWatcher
    from infra.app.stack.process import free_port
    from infra.app.stack.supervisor import Stack, embedded_settings
    from infra.settings import load_settings
    from producers.sdk import ModelBus

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        settings = embedded_settings(load_settings(
            stack={"data_dir": str(Path(tmp) / "stack"), "kafka_port": free_port(), "triton_grpc_port": free_port(),
                   "triton_http_port": free_port(), "triton_metrics_port": free_port(), "start_timeout_s": 120},
            clickhouse={"http_port": free_port()}).with_overrides(
                kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}))
        stack, group, watcher = Stack(settings), ConsumerGroup(settings), None
        try:
            stack.up()
            group.start("training", "consumers.training")
            group.start("deployer", "consumers.deployer")
            watcher = EventWatcher(settings, check=group.dead)
            with ModelBus(settings) as mb:
                for ds in datasets:
                    started = time.monotonic()
                    pushed = mb.push_dataset(ds.load(), name=ds.name, label=ds.label, task=ds.task,
                                             source=f"bench:{ds.source}")
                    reg = watcher.wait_for(f"ModelRegistered {ds.name}", functools.partial(
                        watcher.of, "ModelRegistered", _of_version(pushed.version)), TIMEOUT_S)[0]
                    kind, decision = _decision(watcher, reg, TIMEOUT_S)
                    finished = watcher.of("TrainingRunUpdated", _finished_run(reg["run_id"]))
                    rows.append(summarise(ds, reg, kind, decision, finished[0] if finished else {},
                                          time.monotonic() - started, pushed.row_count, pushed.warnings))
        finally:
            if watcher is not None:
                watcher.close()
            group.stop()
            stack.down()
    return rows


def summarise(ds: QualityDataset, reg: dict, kind: str, decision: dict, finished: dict, loop_s: float,
              rows: int, push_warnings: tuple[str, ...] = ()) -> dict[str, Any]:
    """One table row from the loop's own events."""
    primary, higher = reg["primary_metric"], bool(reg["higher_is_better"])
    sign = 1.0 if higher else -1.0
    base = {name: float(ms[primary]) for name, ms in (reg.get("baseline_metrics") or {}).items() if primary in ms}
    model = float(reg["metrics"][primary])
    best_name = max(base, key=lambda k: sign * base[k]) if base else None
    check = _best_baseline_check(decision.get("checks") or [], higher)
    ci = (check.get("ci_low"), check.get("ci_high")) if check else (None, None)
    margin = margin_in_units(primary, MARGIN, check.get("reference_value") if check else None)
    diff = check.get("difference") if check and check.get("difference") is not None else (
        sign * (model - base[best_name]) if best_name else None)
    boosting = [k for k in base if "boost" in k or k.startswith("hgb") or k.startswith("hist")]
    boost_beats_linear = bool(boosting) and "linear" in base and sign * (base[boosting[0]] - base["linear"]) > 0
    return {
        "dataset": ds.name, "task": ds.task, "source": ds.source, "rows": rows,
        "primary_metric": primary, "higher_is_better": higher, "model": model, "baselines": base,
        "best_baseline": check["name"].split(":", 1)[1] if check else best_name,
        "best_baseline_value": check["reference_value"] if check else base.get(best_name) if best_name else None,
        "difference": diff, "ci_low": ci[0], "ci_high": ci[1], "ci_confidence": (check or {}).get("confidence"),
        "margin": margin, "test_rows": (check or {}).get("n"),
        "non_inferior": None if ci[0] is None else bool(ci[0] > -margin),
        "verdict": verdict(ci[0], ci[1], margin),
        "test_rows_needed": rows_needed((check or {}).get("n"), diff, ci[0], ci[1], margin),
        "beats_linear": None if "linear" not in base else bool(sign * (model - base["linear"]) > 0),
        "boosting_beats_linear": boost_beats_linear if boosting else None,
        "deployed": kind == "ModelDeployed", "decision_reason": decision.get("reason", ""),
        "train_s": (finished.get("metrics") or {}).get("train_evaluate_s"), "loop_s": round(loop_s, 1),
        "null_warnings": [w for w in push_warnings if "missing" in w],
    }


def verdict(ci_low: float | None, ci_high: float | None, margin: float) -> str:
    """How a non-inferiority trial reads the interval: shown, credibly inferior, or not decidable on these rows."""
    if ci_low is None or ci_high is None:
        return "n/a"
    if ci_low > -margin:
        return "non-inferior"
    return "inferior" if ci_high < -margin else "inconclusive"


def rows_needed(n: int | None, diff: float | None, ci_low: float | None, ci_high: float | None,
                margin: float) -> int | None:
    """Test rows at which this gain's interval would clear ``-margin``: a planning figure, not a result.

    With the interval shrinking as 1/sqrt(n) around the observed gain ``d``, its
    lower end clears ``-margin`` once its half-width is below ``d + margin``:
    ``n * (half-width / (d + margin))**2``. None where the interval already
    clears it (or is degenerate), or where the observed gain is itself below
    ``-margin``: no number of rows shows that gain non-inferior.
    """
    if n is None or diff is None or ci_low is None or ci_high is None or ci_low > -margin:
        return None
    half = (ci_high - ci_low) / 2
    if diff + margin <= 0 or half <= 0:
        return None
    return int(math.ceil(n * (half / (diff + margin)) ** 2))


def _best_baseline_check(checks: list[dict], higher: bool) -> dict | None:
    """The ``beats_baseline:*`` check whose baseline scored best on the same rows (None without the fields)."""
    sign = 1.0 if higher else -1.0
    found = [c for c in checks if str(c.get("name", "")).startswith("beats_baseline:")
             and c.get("reference_value") is not None]
    return max(found, key=lambda c: sign * float(c["reference_value"])) if found else None


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    known = [r for r in rows if r["non_inferior"] is not None]
    verdicts = {v: sum(r["verdict"] == v for r in rows) for v in ("non-inferior", "inconclusive", "inferior")}
    share = sum(r["non_inferior"] for r in known) / len(known) if known else None
    where_boost = [r for r in rows if r["boosting_beats_linear"]]
    times = [r["train_s"] for r in rows if r["train_s"] is not None]
    return {"non_inferior_share": share, "non_inferior_target": NON_INFERIOR_SHARE,
            "non_inferior_met": None if share is None else share >= NON_INFERIOR_SHARE,
            "beats_linear_where_boosting_does": all(r["beats_linear"] for r in where_boost) if where_boost else None,
            "max_train_s": max(times) if times else None, "train_budget_s": TRAIN_BUDGET_S,
            "train_budget_met": bool(times) and max(times) <= TRAIN_BUDGET_S,
            "deployed": sum(r["deployed"] for r in rows), "datasets": len(rows), "verdicts": verdicts}


def write_results(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "margin": MARGIN,
                           "rows": rows, "targets": targets(rows)}
    path = out_dir / "quality.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "quality.md").write_text(table(rows, doc["targets"]))
    return path


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]], tg: dict[str, Any]) -> str:
    lines = ["| dataset | task | metric | model | best baseline | baseline value | difference | 95% CI | "
             "test rows | margin | verdict | test rows needed | beats linear | deployed | train s |",
             "|" + "---|" * 15]
    for r in rows:
        ci = "n/a" if r["ci_low"] is None else f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
        lines.append(f"| {r['dataset']} | {r['task']} | {r['primary_metric']} | {_f(r['model'])} | "
                     f"{_f(r['best_baseline'])} | {_f(r['best_baseline_value'])} | {_f(r['difference'])} | {ci} | "
                     f"{_f(r.get('test_rows'))} | {_f(r.get('margin'), 3)} | {r['verdict']} | "
                     f"{_f(r.get('test_rows_needed'))} | "
                     f"{_f(r['beats_linear'])} | {_f(r['deployed'])} | "
                     f"{_f(r['train_s'], 3)} |")
    lines += ["", f"non-inferior (margin {MARGIN}, for rmse {MARGIN:.0%} of the baseline): "
              f"{_f(tg['non_inferior_share'], 3)} of the suite "
              f"(target {NON_INFERIOR_SHARE}); beats linear wherever boosting does: "
              f"{_f(tg['beats_linear_where_boosting_does'])}; slowest training {_f(tg['max_train_s'], 3)} s "
              f"(budget {TRAIN_BUDGET_S:.0f} s); deployed {tg['deployed']} of {tg['datasets']}",
              "", "verdicts: " + ", ".join(f"{k} {v}" for k, v in tg["verdicts"].items())
              + ". Inconclusive: the interval straddles -margin, so these test rows can show neither "
              "non-inferiority nor inferiority; 'test rows needed' is where this gain's interval would clear "
              "-margin (interval shrinking as 1/sqrt(n); a planning figure)."]
    return "\n".join(lines) + "\n"


def records(rows: list[dict[str, Any]]) -> list[dict]:
    """The runner's records: the model's gain over the best baseline per dataset, then the suite targets."""
    out = [{"figure": f"{r['dataset']}: {r['primary_metric']} gain over {r['best_baseline']} (95% CI "
                      + ("n/a" if r["ci_low"] is None else f"{r['ci_low']:.3g}..{r['ci_high']:.3g}") + ")",
            "value": r["difference"], "unit": "", "baseline": r["best_baseline"],
            "baseline_value": r["best_baseline_value"], "ratio": None, "target": f"CI low > -{_f(r.get('margin'), 3)}",
            "met": r["non_inferior"]} for r in rows]
    tg = targets(rows)
    out.append({"figure": "share of datasets non-inferior to the best baseline", "value": tg["non_inferior_share"],
                "unit": "", "baseline": None, "baseline_value": None, "ratio": None,
                "target": f">= {NON_INFERIOR_SHARE}", "met": tg["non_inferior_met"]})
    out.append({"figure": "slowest training of the suite", "value": tg["max_train_s"], "unit": "s",
                "baseline": None, "baseline_value": None, "ratio": None, "target": f"<= {TRAIN_BUDGET_S:.0f} s",
                "met": tg["train_budget_met"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", nargs="*", help="dataset names")
    args = parser.parse_args()
    run(quick=args.quick, names=tuple(args.only) if args.only else None)
    print((RESULTS / "quality.md").read_text())


if __name__ == "__main__":
    main()
