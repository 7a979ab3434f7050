"""The live web UI (``modelbus ui``): models, runs and their comparison, lineage, live charts, dead letters.

Server: aiohttp; pages: Jinja2 templates over named SQL (``sql/``) with bound
parameters; charts: Plotly, with plotly.js served from the installed package,
so the UI works with no internet. It refreshes itself in place
(``static/ui.js``). The live charts draw the same named queries as the static
dashboard and the Grafana dashboards (``infra/clickhouse/dashboards``).
"""

from infra.app.ui.queries import UIError
from infra.app.ui.server import UIServer

__all__ = ["UIError", "UIServer"]
