"""``modelbus runs list|show|compare``: what data, code, parameters, environment and metrics made a model.

Answers come from the ClickHouse lifecycle tables the metadata sink fills
(``training_runs``, ``models``, ``datasets``), so they cover every run of every
consumer, finished or not. A run is named by its id or any unique prefix of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from infra.app.cli.train_gate import model_tables
from infra.errors import ModelBusError

_RUNS_SQL = """
SELECT run_id,
       argMax(status, event_time)          AS status_,
       max(attempt)                        AS attempts_,
       any(dataset_name)                   AS dataset_name_,
       argMax(dataset_version, event_time) AS dataset_version_,
       argMax(model_name, event_time)      AS model_name_,
       min(event_time)                     AS first_seen_,
       max(event_time)                     AS last_seen_,
       argMaxIf(metrics, event_time, status IN ('finished', 'failed'))    AS final_metrics_,
       argMaxIf(duration_s, event_time, status IN ('finished', 'failed')) AS duration_s_,
       any(search_id)                      AS search_id_,
       any(trial_number)                   AS trial_number_
FROM (SELECT * FROM training_runs FINAL WHERE {where})
GROUP BY run_id
ORDER BY first_seen_ DESC
LIMIT {limit:UInt32}
"""  # aliases end in '_' so they never shadow the columns they aggregate

_MODELS_SQL = """
SELECT run_id, model_name, model_version, primary_metric, higher_is_better, metrics, baseline_metrics,
       artifact_uri, checksum, event_time
FROM models FINAL WHERE run_id IN {runs:Array(String)}
ORDER BY event_time LIMIT 1 BY run_id
"""


class RunNotFound(ModelBusError):
    """No run (or more than one run) matches the given id."""


@dataclass
class RunRecord:
    """Everything the tables know about one run."""

    summary: dict[str, Any]
    events: list[dict[str, Any]]
    model: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    gate_tables: list[Any] = field(default_factory=list)   # slices, behavioural tests, gate checks

    @property
    def final(self) -> dict[str, Any] | None:
        done = [e for e in self.events if e["status"] in ("finished", "failed")]
        return done[-1] if done else None

    @property
    def latest(self) -> dict[str, Any]:
        return self.final or self.events[-1]

    @property
    def epochs(self) -> list[dict[str, Any]]:
        last: dict[int, dict] = {}
        for e in self.events:   # a resumed run repeats nothing, but keep the newest attempt's epoch anyway
            if e["status"] == "epoch" and e["epoch"] is not None:
                last[e["epoch"]] = e
        return [last[k] for k in sorted(last)]


def list_runs(store, dataset: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    where = "dataset_name = {dataset:String}" if dataset else "1"
    params: dict[str, Any] = {"limit": limit, **({"dataset": dataset} if dataset else {})}
    rows = [_plain(r) for r in store.query_rows(_RUNS_SQL.replace("{where}", where), params)]
    models = _models(store, [r["run_id"] for r in rows])
    for r in rows:
        r["model"] = models.get(r["run_id"])
    return rows


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k.removesuffix("_"): v for k, v in row.items()}


def _models(store, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not run_ids:
        return {}
    return {m["run_id"]: m for m in store.query_rows(_MODELS_SQL, {"runs": run_ids})}


def resolve_run_id(store, prefix: str) -> str:
    rows = store.query_rows("SELECT DISTINCT run_id FROM training_runs WHERE startsWith(run_id, {p:String}) "
                            "ORDER BY run_id LIMIT 6", {"p": prefix})
    ids = [r["run_id"] for r in rows]
    if not ids:
        raise RunNotFound(f"no training run matches {prefix!r}")
    if prefix in ids:
        return prefix
    if len(ids) > 1:
        raise RunNotFound(f"{prefix!r} matches several runs: {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}")
    return ids[0]


def load_run(store, prefix: str, registry: Any = None) -> RunRecord:
    """A run's events, summary, model and dataset; the dataset comes from the artifact store's registry
    (``registry``) when ClickHouse has no DatasetCreated row for it (a version that was never announced)."""
    run_id = resolve_run_id(store, prefix)
    summary = _plain(store.query_rows(_RUNS_SQL.replace("{where}", "run_id = {run:String}"),
                                      {"run": run_id, "limit": 1})[0])
    events = store.query_rows("SELECT * FROM training_runs FINAL WHERE run_id = {run:String} "
                              "ORDER BY event_time, attempt", {"run": run_id})
    rec = RunRecord(summary=summary, events=events, model=_models(store, [run_id]).get(run_id))
    rec.gate_tables = model_tables(store, run_id, rec.model)
    ds = store.query_rows("SELECT name, version, uri, checksum, row_count, size_bytes, event_time FROM datasets FINAL "
                          "WHERE name = {n:String} AND version = {v:String} ORDER BY event_time LIMIT 1",
                          {"n": summary["dataset_name"], "v": summary["dataset_version"]})
    rec.dataset = ds[0] if ds else _from_registry(registry, summary["dataset_name"], summary["dataset_version"])
    with_params = [e for e in events if e["params_json"] not in ("", "{}")]
    try:
        rec.params = json.loads((rec.final or (with_params[-1] if with_params else events[-1]))["params_json"])
    except ValueError:
        rec.params = {}
    return rec


def _from_registry(registry: Any, name: str, version: str) -> dict[str, Any] | None:
    if registry is None or not version:
        return None
    try:
        m = registry.get(f"{name}@{version}").metadata
    except ModelBusError:
        return None
    return {"name": name, "version": version, "uri": m.get("uri"), "checksum": m.get("checksum"),
            "row_count": m.get("row_count"), "size_bytes": m.get("size_bytes"), "event_time": m.get("created_at")}


# -- rendering --------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _status(s: str) -> str:
    return {"finished": "[green]finished[/]", "failed": "[red]failed[/]"}.get(s, f"[yellow]{s}[/]")


def runs_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"training runs ({len(rows)})", title_justify="left")
    for col in ("run", "status", "att.", "dataset", "model", "primary metric", "duration", "started"):
        t.add_column(col, overflow="fold")
    for r in rows:
        m = r.get("model")
        model = f"{m['model_name']} v{m['model_version']}" if m else (r["model_name"] + " (unregistered)")
        metric = f"{m['primary_metric']}={_fmt(m['metrics'].get(m['primary_metric']))}" if m else \
            _fmt((r["final_metrics"] or {}).get("best_val_loss")) + " val_loss"
        trial = f" trial {r['trial_number']}" if r.get("trial_number") is not None else ""
        t.add_row(r["run_id"], _status(r["status"]) + trial, str(r["attempts"]),
                  f"{r['dataset_name']}@{(r['dataset_version'] or '')[:8]}", model, metric,
                  f"{r['duration_s']:.1f}s" if r.get("duration_s") else "—", _fmt(r["first_seen"]))
    return t


def _kv(title: str, items: dict[str, Any]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in items.items():
        t.add_row(str(k), _fmt(v))
    return t


def _metrics_table(metrics: dict[str, float], title: str = "metrics (test split)") -> Table:
    """Model vs baselines side by side: rows are metrics, columns the model and each baseline."""
    test = {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}
    baselines: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        if k.startswith("baseline_"):
            name, _, metric = k[9:].partition("_")
            baselines.setdefault(name, {})[metric] = v
    t = Table(title=title, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("model")
    for b in baselines:
        t.add_column(f"baseline {b}")
    for name in sorted(set(test) | {m for ms in baselines.values() for m in ms}):
        t.add_row(name, _fmt(test.get(name)), *(_fmt(baselines[b].get(name)) for b in baselines))
    rest = {k: v for k, v in metrics.items() if not k.startswith(("test_", "baseline_"))}
    for k, v in sorted(rest.items()):
        t.add_row(f"[dim]{k}[/]", _fmt(v), *("" for _ in baselines))
    return t


def show_run(rec: RunRecord) -> Group:
    s, final = rec.summary, rec.final
    latest = rec.latest
    run = {"run id": s["run_id"], "status": s["status"], "attempts": s["attempts"], "started": s["first_seen"],
           "last update": s["last_seen"], "duration (s)": s["duration_s"], "request": latest.get("request_id"),
           "search": f"{s['search_id']} trial {s['trial_number']}" if s.get("search_id") else None,
           "failure": final.get("failure_reason") if final else None}
    ds = rec.dataset or {}
    data = {"dataset": f"{s['dataset_name']}@{s['dataset_version']}", "uri": ds.get("uri"),
            "checksum": ds.get("checksum"), "rows": ds.get("row_count"), "pushed": ds.get("event_time")}
    parts: list[Any] = [_kv("run", {k: v for k, v in run.items() if v is not None}), _kv("data", data),
                        _kv("code", {"code version": latest.get("code_version") or "—"})]
    params = {k: v for k, v in rec.params.items() if k not in ("warnings",)}
    parts.append(_kv("parameters", params))
    if rec.params.get("warnings"):
        parts.append(_kv("warnings", {str(i + 1): w for i, w in enumerate(rec.params["warnings"])}))
    parts.append(_kv("environment", dict(latest.get("environment") or {})))
    if final and final.get("metrics"):
        parts.append(_metrics_table(final["metrics"]))
    if rec.epochs:
        t = Table(title="epochs", title_justify="left")
        keys = [k for k in ("train_loss", "val_loss", "val_accuracy", "lr", "epoch_s")
                if any(k in e["metrics"] for e in rec.epochs)]
        for col in ("epoch", "attempt", *keys):
            t.add_column(col)
        for e in rec.epochs:
            t.add_row(str(e["epoch"]), str(e["attempt"]), *(_fmt(e["metrics"].get(k)) for k in keys))
        parts.append(t)
    if rec.model:
        m = rec.model
        parts.append(_kv("registered model", {"model": f"{m['model_name']} v{m['model_version']}",
                                              "primary metric": f"{m['primary_metric']} = "
                                              f"{_fmt(m['metrics'].get(m['primary_metric']))}",
                                              "artifact": m["artifact_uri"], "checksum": m["checksum"]}))
    parts.extend(rec.gate_tables)
    if final and final.get("artifact_uris"):
        uris = final["artifact_uris"]
        parts.append(_kv("artifacts", {k: uris[k] for k in ("artifact", "report", "checkpoint") if k in uris}))
    return Group(*parts)


def compare_runs(a: RunRecord, b: RunRecord) -> Group:
    """Side by side; rows that differ are highlighted, so the cause of a metric change is easy to spot."""
    def table(title: str, left: dict[str, Any], right: dict[str, Any], *, only_diff: bool = False) -> Table:
        t = Table(title=title, title_justify="left")
        t.add_column("", style="bold")
        t.add_column(a.summary["run_id"], overflow="fold")
        t.add_column(b.summary["run_id"], overflow="fold")
        hidden = 0
        for k in sorted(set(left) | set(right), key=str):
            lv, rv = left.get(k), right.get(k)
            same = _fmt(lv) == _fmt(rv)
            if only_diff and same:
                hidden += 1
                continue
            t.add_row(str(k), _fmt(lv), _fmt(rv), style="" if same else "yellow")
        if hidden:
            t.caption = f"{hidden} identical {'entries' if t.row_count else 'entries: nothing differs'} not shown"
        return t

    def facts(r: RunRecord) -> dict[str, Any]:
        s = r.summary
        return {"status": s["status"], "attempts": s["attempts"],
                "dataset": f"{s['dataset_name']}@{s['dataset_version']}",
                "code version": r.latest.get("code_version"), "duration (s)": s["duration_s"],
                "model": f"{r.model['model_name']} v{r.model['model_version']}" if r.model else None}

    ma, mb = (r.final["metrics"] if r.final else {} for r in (a, b))
    metrics = Table(title="metrics", title_justify="left")
    for col in ("metric", a.summary["run_id"], b.summary["run_id"], "Δ (b - a)"):
        metrics.add_column(col, overflow="fold")
    for k in sorted(set(ma) | set(mb)):
        va, vb = ma.get(k), mb.get(k)
        delta = vb - va if isinstance(va, float) and isinstance(vb, float) else None
        metrics.add_row(k, _fmt(va), _fmt(vb), _fmt(delta), style="" if not delta else "yellow")
    noise = ("warnings", "attempt", "resumed_from_shared_checkpoint")   # facts of an attempt, not parameters
    pa = {k: v for k, v in a.params.items() if k not in noise}
    pb = {k: v for k, v in b.params.items() if k not in noise}
    return Group(table("run", facts(a), facts(b)), table("parameters (differences)", pa, pb, only_diff=True),
                 table("environment (differences)", dict(a.latest.get("environment") or {}),
                       dict(b.latest.get("environment") or {}), only_diff=True), metrics)


def print_group(console: Console, group: Group) -> None:
    for part in group.renderables:
        console.print(part)
