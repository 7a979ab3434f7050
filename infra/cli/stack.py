"""``modelbus up | status | down | topics``: the embedded stack from the command line."""

from __future__ import annotations

import typer
from rich.console import Console
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

    statuses = Stack(load_settings()).status()
    console.print(_table(statuses))
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
