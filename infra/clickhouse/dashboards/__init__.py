"""Named standard queries, shared by the HTML dashboard, ``modelbus dashboard`` and Grafana.

Each ``<name>.sql`` holds one SELECT over the store's database with bound
parameters only (``{model:String}``, ``{since:DateTime64(6)}``, ``{limit:UInt32}``);
its leading ``--`` comment says what it shows.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from infra.clickhouse.binding import placeholders

DASHBOARD_DIR = Path(__file__).parent


@lru_cache(maxsize=1)
def _load() -> tuple[tuple[str, str], ...]:
    return tuple((p.stem, p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.sql")))


def load_dashboard_queries() -> dict[str, str]:
    """Query name → SQL."""
    return dict(_load())


def describe(sql: str) -> str:
    """The leading comment of a dashboard query (its title for people)."""
    lines = [ln[2:].strip() for ln in sql.splitlines() if ln.startswith("--")]
    return " ".join(lines)


def parameters(sql: str) -> dict[str, str]:
    """Parameter name → ClickHouse type the query expects."""
    return placeholders(sql)
