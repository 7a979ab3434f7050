"""Filters of the dashboard and the rows of each panel, read with bound parameters only.

A filter value (model name, time range) reaches ClickHouse only as a bound
parameter of the named query (``{model:String}``, ``{since:DateTime64(6)}``),
whatever characters it holds; it is validated here only where the value is a
choice (the range) or a size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Mapping
from urllib.parse import urlencode

from infra.app.dashboard.errors import DashboardError
from infra.app.dashboard.panels import PANELS, Panel
from infra.clickhouse.binding import placeholders
from infra.clickhouse.dashboards import load_dashboard_queries
from infra.clickhouse.errors import ClickHouseError

RANGES: dict[str, timedelta] = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6),
                                "24h": timedelta(hours=24), "7d": timedelta(days=7)}
MAX_MODEL_LEN = 512

MODELS_SQL = """
SELECT name FROM (
    SELECT DISTINCT model_name AS name FROM telemetry_minute WHERE minute >= toStartOfMinute({since:DateTime64(6)})
    UNION DISTINCT
    SELECT DISTINCT model_name AS name FROM models
)
ORDER BY name
LIMIT 500
"""


def _first(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Filters:
    """What the page shows: one model ('' = all), a time range ending now, rows per table."""

    model: str = ""
    range: str = "1h"
    limit: int = 50

    @classmethod
    def parse(cls, query: Mapping[str, Any]) -> Filters:
        """From a query string (``parse_qs`` shape) or plain options; bad values are refused with the reason."""
        model = _first(query.get("model", "")).strip()
        rng = _first(query.get("range", "")) or "1h"
        limit = _first(query.get("limit", "")) or "50"
        if len(model) > MAX_MODEL_LEN:
            raise DashboardError(f"model filter longer than {MAX_MODEL_LEN} characters")
        if rng not in RANGES:
            raise DashboardError(f"unknown range {rng!r}; choose one of {', '.join(RANGES)}")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise DashboardError("limit must be a whole number from 1 to 1000")
        return cls(model=model, range=rng, limit=int(limit))

    def since(self, now: datetime) -> datetime:
        return now - RANGES[self.range]

    def params(self, sql: str, now: datetime) -> dict[str, Any]:
        """The filter values the query declares, to be bound by the store."""
        values = {"model": self.model, "since": self.since(now), "limit": self.limit}
        return {k: v for k, v in values.items() if k in placeholders(sql)}

    def query_string(self, **changes: Any) -> str:
        data = {"model": self.model, "range": self.range, "limit": self.limit, **changes}
        return urlencode({k: v for k, v in data.items() if v not in ("", None)})


@dataclass
class PanelData:
    panel: Panel
    description: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def load_panels(store, filters: Filters, now: datetime | None = None) -> list[PanelData]:
    """Rows of every panel; a query ClickHouse refuses shows its error in that panel only."""
    from infra.clickhouse.dashboards import describe

    now = now or datetime.now(UTC)
    queries = load_dashboard_queries()
    out = []
    for panel in PANELS:
        sql = queries[panel.name]
        data = PanelData(panel, describe(sql))
        try:
            table = store.query_arrow(sql, filters.params(sql, now))
            data.columns = table.column_names
            data.rows = table.to_pylist(maps_as_pydicts="lossy")
        except ClickHouseError as exc:
            data.error = str(exc)
        out.append(data)
    return out


def known_models(store, filters: Filters, now: datetime | None = None) -> list[str]:
    """Model names for the filter's suggestions (traffic in range, or registered)."""
    now = now or datetime.now(UTC)
    try:
        return [r["name"] for r in store.query_rows(MODELS_SQL, {"since": filters.since(now)})]
    except ClickHouseError:
        return []
