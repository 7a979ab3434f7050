"""``modelbus sql`` and ``modelbus dashboard``: the metrics store from the command line.

Both talk to the ClickHouse of the settings (``infra.clickhouse.connect``: the
embedded owner over loopback HTTP, or a configured server). Values given on the
command line are always bound to ``{name:Type}`` placeholders, never spliced
into the SQL, and ClickHouse's own error message is shown as it is.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import webbrowser
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from infra.clickhouse.binding import placeholders
from infra.clickhouse.errors import ClickHouseError
from infra.settings import load_settings

app = typer.Typer()
console = Console()
err_console = Console(stderr=True)

# Statements that answer rows; anything else runs as a command (DDL, INSERT, OPTIMIZE, ...).
_ROW_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK"}
_LEADING = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_STRING_TYPES = re.compile(r"^(?:Nullable\(|LowCardinality\()*(?:String|FixedString\(\d+\)|Enum(?:8|16)?\(.*)",
                           re.DOTALL)


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ClickHouseText:
    """A parameter value already written in ClickHouse's text form of its declared type (e.g. ``[1,2]``).

    It still travels as a bound parameter (HTTP ``param_<name>``), where
    ClickHouse parses it as the placeholder's type; only the client-side
    quoting of Python strings is skipped, which would otherwise turn ``['a']``
    into ``[\\'a\\']``.
    """

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def parse_params(sql: str, raw: list[str]) -> dict[str, Any]:
    """``name=value`` options → bound values: text for String placeholders, ClickHouse text for the others."""
    declared = placeholders(sql)
    params: dict[str, Any] = {}
    for item in raw:
        m = _PARAM.match(item)
        if not m:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE (NAME a {{NAME:Type}} placeholder of the query)",
                                     param_hint="--param")
        name, value = m.group(1), m.group(2)
        if name in params:
            raise typer.BadParameter(f"{name} given twice", param_hint="--param")
        kind = declared.get(name, "String")
        params[name] = value if _STRING_TYPES.match(kind) else ClickHouseText(value)
    return params


def returns_rows(sql: str) -> bool:
    m = _LEADING.match(sql)
    return m is not None and m.group(1).upper() in _ROW_STATEMENTS


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def print_rows(columns: list[str], rows: list[dict[str, Any]], fmt: OutputFormat,
               numeric: frozenset[str] = frozenset()) -> None:
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, default=str, ensure_ascii=False, indent=2) + "\n")
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r[c]) if r[c] is not None else "" for c in columns] for r in rows)
    else:
        table = Table(caption=f"{len(rows)} row{'s' if len(rows) != 1 else ''}", show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold", justify="right" if c in numeric else "left")
        for r in rows:
            table.add_row(*(_cell(r[c]) for c in columns))
        # markup/emoji off: values are data, never rich markup.
        console.print(table, markup=False, emoji=False, highlight=False)


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL to run; '-' reads it from standard input."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output: table, csv or json."),
    param: list[str] = typer.Option([], "--param", "-p", metavar="NAME=VALUE",
                                    help="Bind VALUE to the {NAME:Type} placeholder (repeatable); never spliced."),
) -> None:
    """Run SQL against the metrics store (ClickHouse) and print the result."""
    from infra.clickhouse import connect

    text = sys.stdin.read() if query == "-" else query
    params = parse_params(text, param)
    try:
        with connect(load_settings()) as store:
            if returns_rows(text):
                table = store.query_arrow(text, params)
                numeric = frozenset(f.name for f in table.schema
                                    if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                                    or pa.types.is_decimal(f.type))
                print_rows(table.column_names, table.to_pylist(maps_as_pydicts="lossy"), fmt, numeric)
            else:
                store.command(text, params)
                err_console.print("OK", markup=False, highlight=False)
    except ClickHouseError as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def read_only_store(settings):
    """The store as the read-only user (a page that only reads cannot write even if it tried); exit 2 with
    ClickHouse's message when it cannot connect."""
    from infra.clickhouse import connect

    try:
        return connect(settings, read_only=True)
    except ClickHouseError as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def dashboard(
    port: int = typer.Option(18088, "--port", help="Loopback port to serve on (0: any free port)."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in a browser."),
    once: Path | None = typer.Option(None, "--once", metavar="OUT.html", dir_okay=False,
                                        help="Write one self-contained HTML page and exit."),
    model: str = typer.Option("", "--model", help="Show one model only (default: every model)."),
    range_: str = typer.Option("1h", "--range", help="Time range: 15m, 1h, 6h, 24h or 7d."),
) -> None:
    """Monitoring dashboard: traffic, errors, latency, predictions, versions, deployments, drift."""
    from infra.app.dashboard import DashboardError, DashboardServer, Filters, render_page

    filters = Filters.parse({"model": model, "range": range_})
    with read_only_store(load_settings()) as store:
        if once is not None:
            once.parent.mkdir(parents=True, exist_ok=True)
            once.write_text(render_page(store, filters, static=True), encoding="utf-8")
            typer.echo(str(once.resolve()))
            return
        try:
            server = DashboardServer(store, port=port, default_filters=filters)
        except OSError as exc:
            raise DashboardError(f"cannot serve on 127.0.0.1:{port} ({exc.strerror}); pick another --port") from exc
        typer.echo(f"dashboard on {server.url}  (Ctrl-C stops it)")
        if open_browser:
            webbrowser.open(server.url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
