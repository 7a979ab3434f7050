"""Monitoring dashboard: the named SQL queries drawn as one HTML page (and as a Grafana dashboard).

``render_page(store, filters)`` builds the page (server-side SVG charts, no
scripts, no network), ``DashboardServer`` serves it on loopback, and
``python -m infra.dashboard.grafana`` writes the Grafana dashboard from the same
queries and panel list.
"""

from infra.dashboard.data import RANGES, Filters, load_panels
from infra.dashboard.errors import DashboardError
from infra.dashboard.page import render_page
from infra.dashboard.panels import PANELS, Panel
from infra.dashboard.server import DashboardServer

__all__ = ["PANELS", "RANGES", "DashboardError", "DashboardServer", "Filters", "Panel", "load_panels", "render_page"]
