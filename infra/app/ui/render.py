"""Jinja2 templates of the UI, autoescaped: whatever comes from data or from the request is HTML-escaped."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from infra.app.dashboard.page import cell

NAV = (("/", "Models"), ("/runs", "Runs"), ("/live", "Live"), ("/lineage", "Lineage"), ("/dlq", "Dead letters"))
TOP_METRICS = 4


def _query(**values: Any) -> str:
    return urlencode({k: v for k, v in values.items() if v not in ("", None)}, doseq=True)


def _top_metrics(metrics: dict[str, float] | None) -> str:
    """A run's headline numbers: the best validation loss first, then the first few others."""
    if not metrics:
        return ""
    keys = sorted(metrics, key=lambda k: (k != "best_val_loss", k))[:TOP_METRICS]
    return ", ".join(f"{k}={cell(metrics[k])}" for k in keys)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("infra.app.ui", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = cell
    env.filters["top_metrics"] = _top_metrics
    env.globals["q"] = _query
    env.globals["nav"] = NAV
    return env


def render(template: str, *, title: str, here: str, fragment: bool, refresh: int, **context: Any) -> str:
    """A whole page, or with ``fragment`` only what goes inside ``<main>`` (the in-place refresh)."""
    return environment().get_template(template).render(title=title, here=here, fragment=fragment,
                                                       refresh=refresh, **context)
