"""Serves the dashboard page on loopback with the standard library's HTTP server.

One request at a time (``HTTPServer``, not threading): the page is rendered per
request from a single ClickHouse client, and a monitoring page for one person
needs no more. Filters come from the query string and reach ClickHouse as bound
parameters (see ``infra.app.dashboard.data``).
"""

from __future__ import annotations

import html
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from infra.app.dashboard.data import Filters
from infra.app.dashboard.errors import DashboardError
from infra.app.dashboard.page import render_page
from infra.clickhouse.errors import ClickHouseError

log = logging.getLogger("modelbus.dashboard")

LOOPBACK = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "modelbus-dashboard"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # Nothing on the page may load from elsewhere, and nothing scripted runs.
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self._send(200, "ok\n", "text/plain; charset=utf-8")
        if url.path not in ("/", "/index.html"):
            return self._send(404, "not found\n", "text/plain; charset=utf-8")
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            filters = Filters.parse(query) if query else self.server.default_filters
            refresh = query.get("refresh", [""])[0]
            page = render_page(self.server.store, filters, refresh_s=int(refresh) if refresh.isdigit() else None)
        except DashboardError as exc:
            return self._send(400, f"<!DOCTYPE html><title>bad filter</title><p>{_esc(exc)}</p>")
        except ClickHouseError as exc:  # the store itself is gone (owner stopped)
            return self._send(503, f"<!DOCTYPE html><title>ClickHouse unavailable</title><pre>{_esc(exc)}</pre>")
        self._send(200, page)


def _esc(value) -> str:
    return html.escape(str(value))


class DashboardServer(HTTPServer):
    """The page server; bound to loopback only (the page shows production traffic data)."""

    def __init__(self, store, *, port: int = 0, host: str = LOOPBACK, default_filters: Filters | None = None):
        if host not in (LOOPBACK, "localhost", "::1"):
            raise DashboardError(f"the dashboard binds to loopback only, not {host!r}")
        super().__init__((host, port), _Handler)
        self.store = store
        self.default_filters = default_filters or Filters()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, (bytes, bytearray)) else host}:{port}/"

    def start(self) -> DashboardServer:
        """Serve from a background thread (tests, notebooks); ``stop`` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            super().serve_forever(poll_interval)
        except KeyboardInterrupt:
            pass
