"""The dashboard as one self-contained HTML document (inline CSS and SVG, no scripts, no external URLs).

Everything that comes from data or from the request (model names, error
messages, cell values, the filter values echoed in the form) is HTML-escaped.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime
from typing import Any

from infra.app.dashboard.charts import render_svg
from infra.app.dashboard.data import RANGES, Filters, PanelData, known_models, load_panels

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;color:#1d2430}
header{background:#1d2430;color:#fff;padding:12px 20px;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
form{display:flex;gap:10px;align-items:center;font-size:14px}
input,select,button{font:inherit;padding:3px 6px}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px;padding:16px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.12);padding:10px 14px;overflow:auto}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:2px 0}
p.what{font-size:12px;color:#5b6575;margin:2px 0 8px}
.empty{color:#8a93a3;font-size:13px;padding:24px 0;text-align:center}
.error{color:#a61b1b;font-family:monospace;white-space:pre-wrap;font-size:12px}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border-bottom:1px solid #e3e6ea;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f0f2f5}
footer{font-size:12px;color:#5b6575;padding:0 20px 16px}
svg.chart{display:block;height:auto}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(value: Any) -> str:
    """A value as one table cell's text (times in UTC, floats to 4 significant digits); the web UI uses it too."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def _table(data: PanelData) -> str:
    if not data.rows:
        return '<div class="empty">No rows in this range.</div>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in data.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(cell(r.get(c)))}</td>" for c in data.columns) + "</tr>"
                   for r in data.rows)
    return f'<table data-rows="{len(data.rows)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _describe(text: str, filters: Filters, since: datetime) -> str:
    """The query's comment with its placeholders replaced by what the filters mean."""
    words = {"since": since.strftime("%Y-%m-%d %H:%M UTC"), "model": "the model filter",
             "limit": str(filters.limit)}
    return re.sub(r"\{(\w+)\}", lambda m: words.get(m.group(1), m.group(0)), text)


def _section(data: PanelData, filters: Filters, since: datetime) -> str:
    panel = data.panel
    parts = [f"<h2>{_esc(panel.title)}</h2>",
             f'<p class="what">{_esc(_describe(data.description, filters, since))}</p>']
    if data.error:
        parts.append(f'<div class="error">{_esc(data.error)}</div>')
    elif panel.kind == "table":
        parts.append(_table(data))
    else:
        svg = render_svg(data)
        parts.append(svg if svg else '<div class="empty">No data in this range.</div>')
        if panel.with_table and data.rows:
            parts.append(_table(data))
    wide = " wide" if panel.width >= 24 else ""
    return (f'<section class="panel{wide}" id="panel-{_esc(panel.name)}" data-panel="{_esc(panel.name)}" '
            f'data-rows="{len(data.rows)}">{"".join(parts)}</section>')


def _form(filters: Filters, models: list[str], static: bool) -> str:
    if static:
        return (f"<div>model: <b>{_esc(filters.model or 'all')}</b> · range: <b>{_esc(filters.range)}</b></div>")
    options = "".join(f'<option value="{_esc(r)}"{" selected" if r == filters.range else ""}>last {_esc(r)}</option>'
                      for r in RANGES)
    suggestions = "".join(f'<option value="{_esc(m)}"></option>' for m in models)
    return ('<form method="get" action="/">'
            f'<label>model <input name="model" list="models" value="{_esc(filters.model)}" '
            'placeholder="all models"></label>'
            f'<datalist id="models">{suggestions}</datalist>'
            f'<label>range <select name="range">{options}</select></label>'
            f'<input type="hidden" name="limit" value="{filters.limit}">'
            '<button type="submit">apply</button></form>')


def render_page(store, filters: Filters, *, static: bool = False, now: datetime | None = None,
                refresh_s: int | None = None) -> str:
    """The whole page for ``filters``; ``static`` (``--once``) leaves out the form that needs the server."""
    now = now or datetime.now(UTC)
    panels = load_panels(store, filters, now)
    models = [] if static else known_models(store, filters, now)
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    body = "".join(_section(p, filters, filters.since(now)) for p in panels)
    generated = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>ModelBus monitoring</title>{refresh}<style>{_CSS}</style></head><body>"
        f"<header><h1>ModelBus monitoring</h1>{_form(filters, models, static)}</header>"
        f"<main>{body}</main>"
        f"<footer>ClickHouse database <b>{_esc(store.database)}</b> · generated {_esc(generated)} · "
        f"since {_esc(filters.since(now).strftime('%Y-%m-%d %H:%M:%S UTC'))}</footer>"
        "</body></html>\n")
