"""Monitoring dashboard: the named SQL queries drawn as one HTML page (and as a Grafana dashboard).

``render_page(store, filters)`` builds the page (server-side SVG charts, no
scripts, no network), ``DashboardServer`` serves it on loopback, and
``python -m infra.app.dashboard.grafana`` writes the Grafana dashboard from the same
queries and panel list.
"""

from infra.app.dashboard.data import RANGES, Filters, load_panels
from infra.app.dashboard.errors import DashboardError
from infra.app.dashboard.page import render_page
from infra.app.dashboard.panels import PANELS, Panel
from infra.app.dashboard.server import DashboardServer

__all__ = ["PANELS", "RANGES", "DashboardError", "DashboardServer", "Filters", "Panel", "load_panels", "render_page"]
