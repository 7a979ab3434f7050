"""Panels drawn server-side with matplotlib as inline SVG.

Inline SVG needs no JavaScript and no network: the page renders the same from
``modelbus dashboard``'s server, from a file written with ``--once`` and in a
sandbox without internet. Each chart's element ids are prefixed with its panel
name (several SVGs share one HTML document) and every drawn series carries a
stable id (``<panel>-series-<label>``, bars ``<panel>-bar-<label>-<i>``), which
the browser tests use to find what was drawn.
"""

from __future__ import annotations

import io
import re

import matplotlib
import matplotlib.dates as mdates
import matplotlib.ticker
from matplotlib.figure import Figure

from infra.app.dashboard.data import PanelData
from infra.app.dashboard.panels import Panel, series_label

matplotlib.rcParams.update({
    "svg.fonttype": "none",          # text stays text: smaller, selectable, searchable
    "svg.hashsalt": "modelbus",      # deterministic ids
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
})
_LINESTYLES = ("-", "--", ":")
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def slug(text: str) -> str:
    return _SLUG.sub("_", text).strip("_") or "x"


def _series(data: PanelData) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in data.rows:
        groups.setdefault(series_label(row, data.panel), []).append(row)
    return groups


def _lines(ax, data: PanelData) -> None:
    panel = data.panel
    for label, rows in _series(data).items():
        rows = sorted(rows, key=lambda r: r[panel.x])
        xs = [r[panel.x] for r in rows]
        color = None
        for k, col in enumerate(panel.y):
            name = label if len(panel.y) == 1 else f"{label} {col.removesuffix('_us')}"
            (line,) = ax.plot(xs, [r[col] for r in rows], marker="o", markersize=3, linewidth=1.4,
                              linestyle=_LINESTYLES[k % len(_LINESTYLES)], color=color, label=name,
                              gid=f"series-{slug(name)}")
            color = line.get_color()       # the percentiles of one version share its color
    _time_axis(ax)


def _points(ax, data: PanelData) -> None:
    panel = data.panel
    for label, rows in _series(data).items():
        ax.plot([r[panel.x] for r in rows], [r[panel.y[0]] for r in rows], linestyle="none", marker="o",
                markersize=6, alpha=0.8, label=label, gid=f"series-{slug(label)}")
    _time_axis(ax)


def _time_axis(ax) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _bars(ax, data: PanelData) -> None:
    panel = data.panel
    groups = _series(data)
    cats: list[str] = []
    for rows in groups.values():
        for r in rows:
            if str(r[panel.x]) not in cats:
                cats.append(str(r[panel.x]))
    if panel.x == "model_version":
        cats = [f"v{c}" for c in cats]
    width = 0.8 / max(len(groups), 1)
    for i, (label, rows) in enumerate(groups.items()):
        value = {(f"v{r[panel.x]}" if panel.x == "model_version" else str(r[panel.x])): r[panel.y[0]] for r in rows}
        xs = [j + (i - (len(groups) - 1) / 2) * width for j, c in enumerate(cats) if c in value]
        heights = [value[c] for c in cats if c in value]
        bars = ax.bar(xs, heights, width=width * 0.95, label=label)
        for j, patch in enumerate(bars.patches):
            patch.set_gid(f"bar-{slug(label)}-{j}")
    ax.set_xticks(range(len(cats)), cats, rotation=0 if len(cats) < 8 else 45)


_DRAW = {"timeseries": _lines, "points": _points, "bar": _bars}


def _inline(svg: str, prefix: str) -> str:
    """Standalone SVG document → an element for HTML: no prolog, ids unique to this chart, fluid width."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\sid="([^"]+)"', lambda m: f' id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\sheight="[^"]*"', r'<svg\1 width="100%"', svg, count=1)
    return svg.replace("<svg", f'<svg role="img" aria-label="{prefix}" class="chart"', 1)


def render_svg(data: PanelData) -> str | None:
    """The panel as an inline SVG element, or None when it has nothing to draw (or is a table)."""
    panel: Panel = data.panel
    draw = _DRAW.get(panel.kind)
    if draw is None or not data.rows or data.error:
        return None
    wide = panel.width >= 24
    fig = Figure(figsize=(13.0 if wide else 6.4, 3.0))
    ax = fig.add_subplot()
    draw(ax, data)
    ax.set_ylabel(panel.unit)
    if panel.grafana_unit == "percentunit":
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylim(bottom=0)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    # Fixed margins, legend on the right: a layout engine would draw every figure twice.
    fig.subplots_adjust(left=0.06 if wide else 0.12, right=(0.88 if wide else 0.78) if handles else 0.97,
                        bottom=0.16, top=0.95)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return _inline(buf.getvalue(), panel.name)
