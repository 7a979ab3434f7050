"""What the demo shows at the end: read back from events and from ClickHouse with SQL."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from infra.settings import Settings

LATENCY_SQL = """
SELECT model_version,
       count()                                  AS requests,
       countIf(smoke)                           AS smoke,
       countIf(status != 'ok')                  AS errors,
       round(quantile(0.50)(latency_us) / 1000, 3) AS p50_ms,
       round(quantile(0.95)(latency_us) / 1000, 3) AS p95_ms,
       round(quantile(0.99)(latency_us) / 1000, 3) AS p99_ms
FROM inference_telemetry FINAL
WHERE model_name = {model:String}
GROUP BY model_version ORDER BY model_version
"""

LINEAGE_SQL = """
SELECT model_name, model_version, deploy_action, run_id, run_attempts, code_version, params_json,
       dataset_name, dataset_version, dataset_event_id, dataset_uri, dataset_rows, correlation_id
FROM v_model_lineage
WHERE model_name = {model:String}
ORDER BY deployed_at DESC LIMIT 1
"""


def final_report(settings: Settings, store, reg1: dict, reg2: dict, dec1: tuple, dec2: tuple, watcher) -> dict:
    model = reg1["model_name"]
    serving = reg2 if dec2[0] == "ModelDeployed" else reg1
    out: dict[str, Any] = {
        "models": [_model_summary(reg1), _model_summary(reg2)],
        "decision": {"event": dec2[0], "reason": dec2[1].get("reason", "passed every check"),
                     "checks": [dict(c) for c in dec2[1].get("checks", [])]},
        "slices": [dict(s, metrics=dict(s["metrics"])) for s in serving["slice_metrics"]],
        "primary_metric": serving["primary_metric"],
        "latency_sql": store.query_rows(LATENCY_SQL, {"model": model}),
        "lineage": _first(store.query_rows(LINEAGE_SQL, {"model": model})),
        "drift": [{"feature": d["feature"], "psi": d["psi"], "p_value": d["p_value"], "test": d["test"]}
                  for d in watcher.of("DriftDetected")],
        "serving_version": serving["model_version"],
    }
    out["dashboard"] = _dashboard(settings, store, model)
    return out


def _first(rows: list[dict]) -> dict:
    return rows[0] if rows else {}


def _model_summary(reg: dict) -> dict:
    return {"version": reg["model_version"], "dataset_version": reg["dataset_version"],
            "primary_metric": reg["primary_metric"], "metrics": dict(reg["metrics"]),
            "baselines": {k: dict(v) for k, v in reg["baseline_metrics"].items()}}


def _dashboard(settings: Settings, store, model: str) -> str:
    """Writes the self-contained dashboard page and returns its path."""
    from infra.app.dashboard import Filters, render_page

    path = settings.data_dir / "dashboard.html"
    path.write_text(render_page(store, Filters.parse({"model": model, "range": "1h"}), static=True))
    return str(path)


def print_report(console: Console, s: dict) -> None:
    pm = s["primary_metric"]
    t = Table(title="Model vs baselines (test split)")
    t.add_column("model")
    metrics = sorted(s["models"][0]["metrics"])
    for m in metrics:
        t.add_column(m, justify="right")
    for mod in s["models"]:
        t.add_row(f"[bold]churn v{mod['version']}[/] (data {mod['dataset_version'][:8]})",
                  *[f"{mod['metrics'].get(m, float('nan')):.3f}" for m in metrics])
        for name, bm in mod["baselines"].items():
            t.add_row(f"  baseline: {name}", *[f"{bm.get(m, float('nan')):.3f}" for m in metrics])
    console.print(t)

    t = Table(title=f"Per-slice metrics of the serving model (v{s['serving_version']})")
    for col in ("slice", "rows", pm, "accuracy"):
        t.add_column(col, justify="right" if col != "slice" else "left")
    for sl in s["slices"]:
        t.add_row(f"{sl['column']}={sl['value']}", str(sl["count"]), f"{sl['metrics'].get(pm, float('nan')):.3f}",
                  f"{sl['metrics'].get('accuracy', float('nan')):.3f}")
    console.print(t)

    d = s["decision"]
    t = Table(title=f"Promotion decision for the challenger: {d['event']}")
    for col in ("check", "passed", "value", "threshold", "detail"):
        t.add_column(col)
    for c in d["checks"]:
        t.add_row(c["name"], "[green]yes[/]" if c["passed"] else "[red]no[/]",
                  _num(c.get("value")), _num(c.get("threshold")), c.get("detail", ""))
    console.print(t)
    if d["event"] != "ModelDeployed":
        console.print(f"[bold red]rejected:[/] {d['reason']}")

    t = Table(title="Requests and latency, read back from ClickHouse (SQL)")
    for col in ("model version", "requests", "of which smoke tests", "errors", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in s["latency_sql"]:
        t.add_row(str(r["model_version"]), str(r["requests"]), str(r["smoke"]), str(r["errors"]), str(r["p50_ms"]),
                  str(r["p95_ms"]), str(r["p99_ms"]))
    console.print(t)
    tr = s.get("traffic", {})
    if tr:
        console.print(f"client side: {tr['ok']} ok, {tr['errors']} errors, {tr['rps']:.0f} req/s, "
                      f"p50 {tr['p50_ms']:.2f} ms, p99 {tr['p99_ms']:.2f} ms (gRPC round trip)")

    if s["drift"]:
        t = Table(title="Drift detected on live traffic")
        for col in ("feature", "PSI", "test", "p-value"):
            t.add_column(col)
        for x in s["drift"]:
            t.add_row(x["feature"], f"{x['psi']:.3f}", x["test"], f"{x['p_value']:.2e}")
        console.print(t)

    lin = s["lineage"]
    if lin:
        console.print("[bold]Lineage of the serving model[/] (SELECT … FROM v_model_lineage):")
        params = _key_params(lin.get("params_json") or "{}")
        console.print(f"  {lin['model_name']} v{lin['model_version']} ({lin['deploy_action']}) ← run {lin['run_id']} "
                      f"(attempts {lin.get('run_attempts')}, code {lin['code_version']})\n"
                      f"  ← params {params}\n"
                      f"  ← dataset {lin['dataset_name']}@{lin['dataset_version']} ({lin['dataset_rows']} rows, "
                      f"{lin['dataset_uri']})\n  ← DatasetCreated event {lin['dataset_event_id']} "
                      f"(trace {lin['correlation_id']})\n"
                      f"  every parameter, metric and artifact: modelbus runs show {lin['run_id']}")
    times = s.get("stage_seconds", {})
    if times:
        console.print("stage times: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
                      + f"; total {sum(times.values()):.0f}s")
    _print_live_quality(console, s.get("live_quality") or {})
    console.print(f"[bold]Dashboard:[/] {s['dashboard']}  (live, with `demo --keep`: modelbus ui)")


def _print_live_quality(console: Console, lq: dict) -> None:
    """Live quality per version from the outcomes, label coverage, and the label-free estimate beside it."""
    t = Table(title="Live quality from outcomes (v_live_quality, v_label_coverage, v_estimated_quality)")
    for col in ("version", "served rows", "labelled", "coverage", "accuracy", "estimated accuracy", "roc_auc",
                "log_loss", "calibration error", "label delay p50 / max"):
        t.add_column(col, justify="right")
    for v in lq.get("versions", []):
        t.add_row(f"v{v['model_version']}", _num(v.get("rows")), _num(v["labelled"]),
                  f"{v['coverage']:.0%}" if v.get("coverage") is not None else "", _num(v["accuracy"]),
                  _num(v.get("estimated_accuracy")), _num(v["roc_auc"]), _num(v["log_loss"]),
                  _num(v["calibration_error"]),
                  f"{_num(v.get('delay_p50_s'))} s / {_num(v.get('delay_max_s'))} s")
    console.print(t)


KEY_PARAMS = ("model", "hidden_sizes", "epochs", "batch_size", "lr", "lr_schedule", "seed", "device")


def _key_params(params_json: str) -> str:
    """The hyperparameters a reader looks for first; the full set is one command away."""
    try:
        params = json.loads(params_json)
    except ValueError:
        return params_json[:160]
    return ", ".join(f"{k}={params[k]}" for k in KEY_PARAMS if k in params)


def _num(v) -> str:
    if isinstance(v, int):
        return str(v)
    return "-" if v is None else f"{v:.4f}"
