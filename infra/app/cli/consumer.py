"""``modelbus consumer NAME [ARGS]``: run one long-lived ModelBus consumer in the foreground.

The names are ``consumers.registry.CONSUMERS``, owned by the consumers floor.
"""

from __future__ import annotations

import importlib

import typer

from consumers.registry import CONSUMERS

app = typer.Typer(help="Run a ModelBus consumer: " + ", ".join(CONSUMERS))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(ctx: typer.Context, name: str = typer.Argument(..., help="one of: " + ", ".join(CONSUMERS))) -> None:
    """Run consumer NAME; extra arguments go to it (its own options: `modelbus consumer run NAME -- --help`)."""
    if name not in CONSUMERS:
        raise typer.BadParameter(f"unknown consumer {name!r}; choose one of {', '.join(CONSUMERS)}")
    module = importlib.import_module(CONSUMERS[name][0])
    module.main(list(ctx.args))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """List the consumers and what each does."""
    from rich.table import Table

    from infra.app.cli.output import print_json, show

    rows = [{"name": name, "module": module, "does": what} for name, (module, what) in CONSUMERS.items()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="consumers (`modelbus up` runs each once)", title_justify="left")
    for col in ("name", "does", "module"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["does"], f"python -m {r['module']}")
    show(table)
