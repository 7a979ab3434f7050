"""The UI's charts as Plotly figures (JSON), drawn in the browser by the plotly.js that ships with plotly.

Time axes are pinned to the range the person asked for (``since`` → ``now``),
so one minute of data shows as one minute, not as years; the page test reads
that range back from the drawn chart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Sequence

import plotly.graph_objects as go

from infra.app.dashboard.panels import Panel, series_label

HEIGHT = 300


def _layout(fig: go.Figure, title: str, y_title: str = "", height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 40, "b": 40}, yaxis_title=y_title,
                      legend={"orientation": "h", "y": -0.2}, uirevision="keep")
    return fig


def to_json(fig: go.Figure) -> str:
    """The figure as JSON safe inside a ``<script type="application/json">`` element."""
    return fig.to_json().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _groups(rows: Iterable[dict[str, Any]], panel: Panel) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(series_label(row, panel), []).append(row)
    return out


def panel_figure(panel: Panel, rows: list[dict[str, Any]], since: datetime, now: datetime) -> go.Figure:
    """One standard dashboard panel (``infra.app.dashboard.panels``) drawn with Plotly."""
    fig = go.Figure()
    x = panel.x or ""           # every drawn kind names its x column
    for label, group in _groups(rows, panel).items():
        for y in panel.y:
            name = label if len(panel.y) == 1 else f"{label} {y}"
            xs, ys = [r[x] for r in group], [r[y] for r in group]
            if panel.kind == "bar":
                fig.add_trace(go.Bar(x=[str(v) for v in xs], y=ys, name=name))
            else:
                mode = "markers" if panel.kind == "points" else "lines+markers"
                fig.add_trace(go.Scatter(x=xs, y=ys, mode=mode, name=name))
    _layout(fig, panel.title, panel.unit)
    if not fig.data:
        fig.add_annotation(text="No data in this range", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"color": "#6b7485", "size": 14})
        fig.update_yaxes(visible=False)
    if panel.grafana_unit == "percentunit":
        fig.update_yaxes(range=[0, 1], tickformat=".0%")
    if panel.kind in ("timeseries", "points"):
        fig.update_xaxes(type="date", range=[since, now], autorange=False)
    else:
        fig.update_layout(barmode="group")
    return fig


def metric_bars(runs: Sequence[dict[str, Any]], metrics: Sequence[str]) -> go.Figure:
    """Compared runs' metrics, one group per metric, one bar per run."""
    fig = go.Figure()
    for run in runs:
        values = run.get("metrics") or {}
        fig.add_trace(go.Bar(x=list(metrics), y=[values.get(m) for m in metrics], name=run["run_id"]))
    return _layout(fig.update_layout(barmode="group"), "Metrics side by side")


def curves(rows: Sequence[dict[str, Any]], metric: str) -> go.Figure:
    """Per-epoch ``metric`` of each run (its learning curve)."""
    fig = go.Figure()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if metric in (r.get("metrics") or {}):
            by_run.setdefault(r["run_id"], []).append(r)
    for run_id, points in by_run.items():
        fig.add_trace(go.Scatter(x=[p["epoch"] for p in points], y=[p["metrics"][metric] for p in points],
                                 mode="lines+markers", name=run_id))
    _layout(fig, f"{metric} per epoch", metric)
    return fig.update_xaxes(title="epoch", dtick=1)


COLOURS = {"ok": "#2e7d32", "bad": "#c62828", "none": "#757575"}


def lineage_graph(nodes: Sequence[dict[str, Any]]) -> go.Figure:
    """Lineage as a left-to-right graph: each node ``{"kind", "title", "detail", "state"}``, edges between
    neighbours (upstream event → dataset version → run → model → decisions → prediction)."""
    xs = list(range(len(nodes)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[0] * len(nodes), mode="lines", line={"color": "#9e9e9e", "width": 2},
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(
        x=xs, y=[0] * len(nodes), mode="markers+text", showlegend=False,
        marker={"size": 28, "symbol": "square", "color": [COLOURS.get(n.get("state", "none"), COLOURS["none"])
                                                          for n in nodes]},
        text=[f"<b>{n['kind']}</b><br>{n['title']}" for n in nodes], textposition="top center",
        hovertext=[n.get("detail", "") for n in nodes], hoverinfo="text"))
    _layout(fig, "Lineage", height=260)
    fig.update_xaxes(visible=False, range=[-0.6, max(len(nodes) - 0.4, 0.6)])
    return fig.update_yaxes(visible=False, range=[-0.6, 1.2])


def quality_figure(rows: Sequence[dict[str, Any]], since: datetime, now: datetime) -> go.Figure:
    """Accuracy per model version and hour: realised from outcomes (solid) and estimated (dotted)."""
    fig = go.Figure()
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['model_name']} v{r['model_version']}", []).append(r)
    for label, group in series.items():
        xs = [r["window_start"] for r in group]
        fig.add_trace(go.Scatter(x=xs, y=[r["realised_accuracy"] for r in group], mode="lines+markers",
                                 name=f"{label} realised"))
        fig.add_trace(go.Scatter(x=xs, y=[r["estimated_accuracy"] for r in group], mode="lines+markers",
                                 line={"dash": "dot"}, name=f"{label} estimated"))
    _layout(fig, "Live accuracy: realised from outcomes, estimated from confidences", "accuracy")
    fig.update_yaxes(range=[0, 1])
    return fig.update_xaxes(type="date", range=[since, now], autorange=False)
