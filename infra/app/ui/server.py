"""The UI's HTTP server (aiohttp), with every error mapped to a page in one place.

A refused filter is a 400 page with the reason, the store being down a 503
and a query ClickHouse refuses a 502, each with ClickHouse's message, anything else a 500 that says to look at the log;
no stack trace ever reaches the browser. Pages are built in worker threads
(the store client is synchronous) so a slow query does not stall the static
files. Nothing is loaded from another origin: plotly.js is served from the
installed ``plotly`` package.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Callable

import plotly
from aiohttp import web

from infra.app.ui import pages as P
from infra.app.ui.lineage import lineage
from infra.app.ui.queries import Reader, UIError
from infra.app.ui.render import render
from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable

log = logging.getLogger("modelbus.ui")

LOOPBACK = "127.0.0.1"
FRAGMENT_HEADER = "X-ModelBus-Fragment"
STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
PAGES: dict[str, Callable[[P.Context, P.Query], P.Page]] = {
    "/": P.models, "/runs": P.runs, "/compare": P.compare, "/live": P.live, "/lineage": lineage,
    "/dlq": P.dead_letters}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self' data:")


def _html(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})


def _problem(status: int, title: str, message: str, fragment: bool) -> web.Response:
    return _html(status, render("error.html", title=title, here="", fragment=fragment, refresh=0, message=message))


class UIServer:
    def __init__(self, store, dead_letters: Callable[[], list], *, host: str = LOOPBACK, port: int = 0,
                 refresh_s: int = 5):
        self.context = P.Context(Reader(store), dead_letters)
        self.host, self.port, self.refresh_s = host, port, refresh_s
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/static/plotly.min.js", self._plotly)
        self.app.router.add_get("/favicon.ico", self._no_icon)
        self.app.router.add_static("/static/", STATIC)
        for path in PAGES:
            self.app.router.add_get(path, self._page)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _no_icon(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _plotly(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(PLOTLY_JS, headers={"Cache-Control": "max-age=86400"})

    async def _page(self, request: web.Request) -> web.Response:
        fragment = request.headers.get(FRAGMENT_HEADER) == "1"
        query: dict[str, Any] = {k: request.query.getall(k) for k in request.query}
        page = PAGES[request.path]
        try:
            template, title, context = await asyncio.to_thread(page, self.context, query)
        except UIError as exc:
            return _problem(400, "Cannot show that", str(exc), fragment)
        except ClickHouseUnavailable as exc:
            return _problem(503, "ClickHouse unavailable", str(exc), fragment)
        except ClickHouseError as exc:
            return _problem(502, "ClickHouse refused the query", str(exc), fragment)
        except Exception:
            log.exception("UI page %s failed", request.path_qs)
            return _problem(500, "Internal error", "the UI failed to build this page; its log has the details",
                            fragment)
        refresh = self.refresh_s if request.query.get("refresh", "") == "" else _refresh(request.query["refresh"])
        return _html(200, render(template, title=title, here=request.path, fragment=fragment, refresh=refresh,
                                 **context))

    # -- running ------------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]  # the port bound

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> UIServer:
        """Serve from a thread of its own, with its own event loop (tests, the CLI); ``stop`` ends it.

        Raises OSError when the port is taken. The loop lives in the thread so a
        caller that runs an event loop of its own (Playwright's sync API does) is
        not disturbed.
        """
        started, failure = threading.Event(), []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:       # noqa: BLE001 - handed to the caller of start()
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="ui", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)


def _refresh(text: str) -> int:
    return int(text) if text.isdigit() and int(text) <= 3600 else 0
