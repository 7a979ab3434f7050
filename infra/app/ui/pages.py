"""The UI's pages: what each reads and what it hands its template.

Each page is ``page(ctx, query) -> (template, title, context)``; the server turns
``UIError`` into a 400 page with the reason and a store failure into a 503, in
one place (``infra.app.ui.server``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Mapping

from infra.app.dashboard.data import RANGES, Filters, known_models
from infra.app.dashboard.panels import PANELS
from infra.app.ui import figures as F
from infra.app.ui.queries import RUN_STATUSES, Reader, RunFilter, one, parse_ids, parse_range
from infra.clickhouse.dashboards import load_dashboard_queries
from infra.clickhouse.errors import ClickHouseError

Query = Mapping[str, Any]
Page = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Context:
    reader: Reader
    dead_letters: Callable[[], list]     # () -> list[DeadLetterTopic], read from Kafka


def models(ctx: Context, query: Query) -> Page:
    model = one(query, "model")
    rows = ctx.reader.rows("model_versions", model=model, limit=500)
    names = [r["model_name"] for r in ctx.reader.rows("model_names")]
    return "models.html", "Models and their versions", {"rows": rows, "model": model, "names": names}


def runs(ctx: Context, query: Query) -> Page:
    f = RunFilter.parse(query)
    rows = ctx.reader.rows("runs", model=f.model, dataset=f.dataset, status=f.status, limit=f.limit)
    return "runs.html", "Training runs", {"rows": rows, "f": f, "statuses": RUN_STATUSES}


def _param_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
    parsed = []
    for r in runs:
        try:
            params = json.loads(r.get("params_json") or "{}")
        except ValueError:
            params = {}
        params = params if isinstance(params, dict) else {}
        parsed.append({**params, "seed": r.get("seed"), "code_version": r.get("code_version"),
                       "dataset_version": r.get("dataset_version")})
    keys = sorted({k for p in parsed for k in p})
    out = []
    for k in keys:
        values = [p.get(k) for p in parsed]
        shown = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
        out.append((k, shown, len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1))
    return out


def _metric_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Run metrics, then each registered model's baselines on the same test rows."""
    keys = sorted({k for r in runs for k in (r.get("metrics") or {})})
    rows = [(k, [(r.get("metrics") or {}).get(k) for r in runs]) for k in keys]
    baselines = sorted({(b, m) for r in runs for b, ms in (r.get("baseline_metrics") or {}).items() for m in ms})
    rows += [(f"baseline:{b} {m}", [((r.get("baseline_metrics") or {}).get(b) or {}).get(m) for r in runs])
             for b, m in baselines]
    return rows


def _slice_rows(runs: list[dict[str, Any]]) -> list[tuple[str, int, list[Any]]]:
    """Each slice's primary metric per run (the run's own primary metric)."""
    table: dict[str, dict[int, Any]] = {}
    counts: dict[str, int] = {}
    for i, r in enumerate(runs):
        metric = r.get("primary_metric")
        for col, val, n, ms in zip(r.get("slice_columns") or [], r.get("slice_values") or [],
                                   r.get("slice_counts") or [], r.get("slice_metrics") or []):
            name = f"{col}={val} ({metric})"
            table.setdefault(name, {})[i] = (ms or {}).get(metric)
            counts[name] = max(counts.get(name, 0), n)
    return [(name, counts[name], [vals.get(i) for i in range(len(runs))]) for name, vals in sorted(table.items())]


def compare(ctx: Context, query: Query) -> Page:
    ids = parse_ids(query)
    runs = ctx.reader.rows("run_detail", ids=ids)
    missing = [i for i in ids if i not in {r["run_id"] for r in runs}]
    curves = ctx.reader.rows("run_curves", ids=ids)
    shared = sorted(set.intersection(*[set(r.get("metrics") or {}) for r in runs])) if runs else []
    curve_metric = "val_loss" if any("val_loss" in (c.get("metrics") or {}) for c in curves) else None
    title = "Run " + ids[0] if len(ids) == 1 else f"{len(ids)} runs side by side"
    return "compare.html", title, {
        "runs": runs, "missing": missing, "params": _param_rows(runs), "metrics": _metric_rows(runs),
        "slices": _slice_rows(runs), "metric_figure": F.to_json(F.metric_bars(runs, shared)),
        "curve_figure": F.to_json(F.curves(curves, curve_metric)) if curve_metric else None}


def dead_letters(ctx: Context, query: Query) -> Page:
    try:
        topics, error = ctx.dead_letters(), None
    except Exception as exc:      # noqa: BLE001 - the broker being down is shown on the page, not raised
        topics, error = [], f"cannot read the dead-letter topics from Kafka: {exc}"
    return "dlq.html", "Dead-letter queues", {"topics": topics, "error": error}


def live(ctx: Context, query: Query, now: datetime | None = None) -> Page:
    now = now or datetime.now(UTC)
    filters = Filters(model=one(query, "model"), range=parse_range(query), limit=50)
    since = filters.since(now)
    queries = load_dashboard_queries()
    panels = []
    for panel in PANELS:
        text = queries[panel.name]
        entry: dict[str, Any] = {"name": panel.name, "title": panel.title, "rows": [], "columns": [],
                                 "figure": None, "error": None}
        try:
            entry["columns"], entry["rows"] = ctx.reader.panel_rows(text, filters.params(text, now))
        except ClickHouseError as exc:
            entry["error"] = str(exc)
        if panel.kind != "table" and not entry["error"]:
            entry["figure"] = F.to_json(F.panel_figure(panel, entry["rows"], since, now))
        panels.append(entry)
    traffic = any(p["rows"] for p in panels if p["name"] == "requests_per_minute")
    quality = ctx.reader.rows("live_quality", model=filters.model, since=since)
    names = ctx.reader.call(known_models, filters, now)
    return "live.html", "Live traffic" + (f": {filters.model}" if filters.model else ""), {
        "panels": panels, "model": filters.model, "range": filters.range, "ranges": list(RANGES),
        "since": since, "now": now, "names": names, "traffic": traffic, "quality": quality,
        "quality_figure": F.to_json(F.quality_figure(quality, since, now)) if quality else None}

