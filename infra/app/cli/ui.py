"""``modelbus ui``: the live web UI on loopback (``infra.app.ui``), reading ClickHouse and the dead letters."""

from __future__ import annotations

import threading
import webbrowser
from functools import partial

import typer

from infra.app.ui import UIError, UIServer
from infra.settings import load_settings

app = typer.Typer()


@app.command()
def ui(
    port: int = typer.Option(18090, "--port", help="Port to serve on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. The UI shows production data and has "
                             "no login of its own: bind beyond loopback only behind an authenticating proxy."),
    refresh: int = typer.Option(5, "--refresh", min=0, max=3600, help="Seconds between in-place refreshes (0: off)."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the UI in a browser."),
) -> None:
    """Live web UI: models and their gate decisions, runs side by side, lineage, live charts, dead letters."""
    from infra.app.cli.metrics import read_only_store
    from infra.kafka.dead_letters import dead_letters

    settings = load_settings()
    with read_only_store(settings) as store:
        server = UIServer(store, partial(dead_letters, settings), host=host, port=port, refresh_s=refresh)
        try:
            server.start()
        except OSError as exc:
            raise UIError(f"cannot serve on {host}:{port} ({exc.strerror}); pick another --port") from exc
        typer.echo(f"ModelBus UI on {server.url}  (Ctrl-C stops it)")
        if open_browser:
            webbrowser.open(server.url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
