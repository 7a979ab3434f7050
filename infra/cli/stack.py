"""``modelbus up | status | down | topics``: the embedded stack from the command line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.settings import load_settings

app = typer.Typer()
console = Console()


def _table(statuses) -> Table:
    t = Table(title="ModelBus embedded stack")
    for col in ("part", "state", "pid", "endpoint", "detail"):
        t.add_column(col)
    colors = {"running": "green", "stopped": "dim", "unhealthy": "red", "external": "cyan"}
    for s in statuses:
        t.add_row(s.name, f"[{colors.get(s.state, 'white')}]{s.state}[/]", str(s.pid or "-"), s.endpoint, s.detail)
    return t


def _telemetry_table(folder) -> Table | None:
    """The in-model telemetry emitters' last reported counters (their stats files), losses and renewals first."""
    import json
    import time

    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not rows:
        return None
    t = Table(title="In-model telemetry (last report of each emitter)")
    for col in ("emitter", "delivered", "dropped", "failed", "invalid", "producer renewals", "reported"):
        t.add_column(col)
    for r in rows:
        lost = r.get("dropped", 0) or r.get("failed", 0)
        t.add_row(escape(str(r.get("emitter", "?"))), str(r.get("delivered", 0)),
                  f"[{'red' if lost else 'green'}]{r.get('dropped', 0)}[/]", str(r.get("failed", 0)),
                  str(r.get("invalid", 0)), str(r.get("renewals", 0)), f"{time.time() - r.get('at', 0):.0f}s ago")
    return t


@app.command()
def up() -> None:
    """Start the embedded stack (tansu, chdb owner, Triton), create topics and the artifact store."""
    from infra.stack.supervisor import Stack

    stack = Stack(load_settings())
    statuses = stack.up(progress=lambda part, msg: console.print(f"[bold]{part:>10}[/] {msg}"))
    console.print(_table(statuses))


@app.command()
def status() -> None:
    """Show the health of each part of the embedded stack (exit 1 if any part is down)."""
    from infra.stack.supervisor import Stack

    settings = load_settings()
    statuses = Stack(settings).status()
    console.print(_table(statuses))
    telemetry = _telemetry_table(settings.data_dir / "telemetry")
    if telemetry is not None:
        console.print(telemetry)
    if any(s.state not in ("running", "external") for s in statuses):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop every part of the embedded stack."""
    from infra.stack.supervisor import Stack

    Stack(load_settings()).down(progress=lambda part, msg: console.print(f"[bold]{part:>10}[/] {msg}"))


@app.command()
def topics() -> None:
    """List the topic catalogue: topic, events, producers and consumers."""
    from infra.kafka.topics import CATALOGUE

    s = load_settings()
    t = Table(title="Topics")
    for col in ("topic", "events", "produced by", "consumed by"):
        t.add_column(col)
    for spec in CATALOGUE:
        t.add_row(s.topic(spec.name), ", ".join(spec.events), spec.producers, spec.consumers)
    console.print(t)
