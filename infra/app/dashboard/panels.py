"""The standard panels: which named query each shows, and how.

One list drives both the HTML dashboard (``infra.app.dashboard.page``) and the
generated Grafana dashboard (``infra.app.dashboard.grafana``), so the two never
disagree on what is shown; the SQL itself lives in
``infra/clickhouse/dashboards/<name>.sql``.
"""

from __future__ import annotations

from dataclasses import dataclass

SERIES = ("model_name", "model_version")


@dataclass(frozen=True)
class Panel:
    name: str                       # the named query (SQL file stem)
    title: str
    kind: str                       # 'timeseries' | 'bar' | 'points' | 'table'
    x: str | None = None            # time column (timeseries/points) or category column (bar)
    y: tuple[str, ...] = ()         # value columns drawn
    series: tuple[str, ...] = ()    # columns that together name one series
    unit: str = ""                  # axis label in HTML
    grafana_unit: str = ""          # Grafana unit id
    with_table: bool = False        # also list the rows under the chart
    width: int = 12                 # Grafana grid width (of 24)


PANELS: tuple[Panel, ...] = (
    Panel("requests_per_minute", "Requests per minute", "timeseries", "minute", ("requests",), SERIES,
          "requests / min", "reqpm"),
    Panel("telemetry_losses", "Telemetry lost per minute", "timeseries", "minute", ("dropped", "failed"),
          ("process",), "events / min missing from the requests", "short"),
    Panel("error_rate", "Error rate", "timeseries", "minute", ("error_rate",), SERIES, "share of requests failing",
          "percentunit"),
    Panel("latency_percentiles", "Latency p50 / p95 / p99", "timeseries", "minute", ("p50_us", "p95_us", "p99_us"),
          SERIES, "µs (inside the model server)", "µs"),
    Panel("prediction_distribution", "Prediction distribution", "bar", "prediction", ("count",), SERIES,
          "requests", "short"),
    Panel("model_versions_serving", "Serving versions", "bar", "model_version", ("requests",), ("model_name",),
          "requests in range", "short", with_table=True),
    Panel("recent_deployments", "Recent deployments", "table"),
    Panel("drift_events", "Drift events (PSI)", "points", "event_time", ("psi",), ("model_name", "feature"),
          "PSI", "short", with_table=True, width=24),
    Panel("recent_rejections", "Recent rejections", "table", width=24),
)

BY_NAME = {p.name: p for p in PANELS}


def series_label(row: dict, panel: Panel) -> str:
    """'churn v3' for (model_name, model_version); values joined with spaces otherwise."""
    parts = []
    for col in panel.series:
        value = row.get(col)
        parts.append(f"v{value}" if col == "model_version" else str(value))
    return " ".join(parts) or panel.title
