"""Writes the Grafana dashboard from the same named SQL files and panel list as the HTML page.

``python -m infra.app.dashboard.grafana`` regenerates
``infra/deploy/grafana/dashboards/modelbus.json`` (``--check`` only compares);
a test fails when the file and the SQL drift apart.

Grafana splices variables into SQL as text, so the named queries' bound
placeholders become expressions that cannot be broken out of:

* ``{model:String}`` → ``decodeURLComponent('${model:percentencode}')``:
  Grafana's percent-encoding leaves only ``A-Z a-z 0-9 - _ . ~`` and ``%XX``
  inside the quotes, so no quote or backslash of a value reaches the SQL text;
* ``{limit:UInt32}`` → the same, read with ``toUInt32OrZero``;
* ``{since:DateTime64(6)}`` → ``$__fromTime_ms`` (the plugin's macro for the
  start of the dashboard's time range, ``fromUnixTimestamp64Milli(<ms>)``).

Time series are returned long (time, series label, values): the plugin turns
them wide per series label.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from infra.app.dashboard.errors import DashboardError
from infra.app.dashboard.panels import PANELS, Panel
from infra.clickhouse.binding import PLACEHOLDER
from infra.clickhouse.dashboards import describe, load_dashboard_queries

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD_FILE = DEPLOY_DIR / "dashboards" / "modelbus.json"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "modelbus-clickhouse"}

# Placeholder name → the Grafana expression standing for it (see the module docstring).
MACROS = {
    "model": "decodeURLComponent('${model:percentencode}')",
    "limit": "toUInt32OrZero(decodeURLComponent('${limit:percentencode}'))",
    "since": "$__fromTime_ms",
}
_PANEL_TYPES = {"timeseries": "timeseries", "points": "timeseries", "bar": "barchart", "table": "table"}
_HEIGHT = {"table": 8}


def _body(sql: str) -> str:
    """The query without its leading comment (it becomes the panel's description)."""
    lines = sql.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


def to_grafana_sql(sql: str) -> str:
    """Replace each ``{name:Type}`` placeholder by its Grafana expression; unknown names are an error."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in MACROS:
            raise DashboardError(f"no Grafana expression for the placeholder {{{name}:{m.group(2)}}}; add one "
                                 "to infra.app.dashboard.grafana.MACROS")
        return MACROS[name]
    return PLACEHOLDER.sub(sub, _body(sql))


def _series_expr(panel: Panel) -> str:
    parts = []
    for col in panel.series:
        parts.append(f"'v', toString({col})" if col == "model_version" else f"toString({col})")
    sep = ", ' ', "
    return f"concat({sep.join(parts)})" if parts else "''"


def panel_sql(panel: Panel, sql: str) -> str:
    """The SQL a panel runs in Grafana: the named query, reshaped for the panel type."""
    inner = to_grafana_sql(sql)
    if panel.kind in ("timeseries", "points"):
        values = ", ".join(panel.y)
        return (f"SELECT {panel.x} AS time, {_series_expr(panel)} AS series, {values}\nFROM (\n{inner}\n)\n"
                "ORDER BY time")
    if panel.kind == "bar":
        x = f"'v', toString({panel.x})" if panel.x == "model_version" else f"toString({panel.x})"
        return (f"SELECT concat({_series_expr(panel)}, ' ', {x}) AS label, {panel.y[0]}\nFROM (\n{inner}\n)")
    return inner


def _panel(i: int, panel: Panel, sql: str, pos: tuple[int, int]) -> dict:
    ptype = _PANEL_TYPES[panel.kind]
    timeseries = panel.kind in ("timeseries", "points")
    target = {"refId": "A", "datasource": DATASOURCE, "editorType": "sql",
              "queryType": "timeSeries" if timeseries else "table", "format": 0 if timeseries else 1,
              "rawSql": panel_sql(panel, sql)}
    custom = {"drawStyle": "points", "pointSize": 8} if panel.kind == "points" else {}
    out = {"id": i, "type": ptype, "title": panel.title, "description": describe(sql),
           "datasource": DATASOURCE,
           "gridPos": {"x": pos[0], "y": pos[1], "w": panel.width, "h": _HEIGHT.get(panel.kind, 9)},
           "targets": [target],
           "fieldConfig": {"defaults": {"unit": panel.grafana_unit, "custom": custom} if panel.grafana_unit
                           else {"custom": custom}, "overrides": []},
           "options": {}}
    if panel.kind == "bar":
        out["options"] = {"xField": "label", "orientation": "auto", "showValue": "auto"}
    if panel.kind == "table":
        out["options"] = {"showHeader": True}
    return out


def build_dashboard() -> dict:
    queries = load_dashboard_queries()
    missing = sorted(set(queries) - {p.name for p in PANELS})
    unknown = sorted({p.name for p in PANELS} - set(queries))
    if missing or unknown:
        raise DashboardError(f"named queries without a panel: {missing}; panels without a query: {unknown}")
    panels, x, y, row_h = [], 0, 0, 0
    for i, panel in enumerate(PANELS, start=1):
        if x + panel.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel(i, panel, queries[panel.name], (x, y)))
        row_h = max(row_h, panels[-1]["gridPos"]["h"])
        x += panel.width
    return {
        "uid": "modelbus-monitoring", "title": "ModelBus monitoring", "tags": ["modelbus"],
        "description": "Generated by `python -m infra.app.dashboard.grafana` from infra/clickhouse/dashboards/*.sql; "
                       "do not edit by hand.",
        "editable": False, "schemaVersion": 39, "version": 1, "timezone": "utc", "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "model", "label": "model (empty: all)", "type": "textbox", "query": "",
             "current": {"text": "", "value": ""}, "hide": 0},
            {"name": "limit", "label": "rows", "type": "custom", "query": "20,50,200",
             "current": {"text": "50", "value": "50"}, "hide": 0,
             "options": [{"text": v, "value": v, "selected": v == "50"} for v in ("20", "50", "200")]},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.app.dashboard.grafana", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DASHBOARD_FILE, help="where to write the dashboard JSON")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m infra.app.dashboard.grafana", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
