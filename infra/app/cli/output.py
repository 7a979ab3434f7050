"""What every command prints: rich tables on a terminal, whole tab-separated rows elsewhere, or JSON.

The rule, one for every command:

* ``--json``: exactly one JSON document on stdout and nothing else there (notes
  and progress go to stderr), for scripts and ``jq``;
* stdout is a terminal: rich tables, sized to the terminal (long cells fold
  inside their column instead of breaking the table);
* stdout is not a terminal (a pipe, a file, CI logs): each table is a header
  line and one line per row, cells separated by tabs, markup stripped, never
  wrapped; a table's title comes first as a ``# title`` line. Whole rows survive
  ``grep``, ``cut -f`` and ``sort``, whatever width the reader has.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
from decimal import Decimal
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _plain(cell: Any) -> str:
    text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
    return " ".join(text.split("\t")).replace("\r", " ").replace("\n", " ")


def table_lines(table: Table) -> list[str]:
    """A rich table as whole tab-separated lines (title, header, rows)."""
    lines = [f"# {_plain(table.title)}"] if table.title else []
    if table.show_header:
        lines.append("\t".join(_plain(c.header) for c in table.columns))
    cells = [list(c.cells) for c in table.columns]
    for row in zip(*cells):
        lines.append("\t".join(_plain(c) for c in row))
    return lines


def table_records(table: Table) -> dict[str, Any]:
    """A rich table as JSON-ready data: its title and one {column: text} object per row."""
    heads = [_plain(c.header) for c in table.columns]
    rows = [dict(zip(heads, (_plain(c) for c in row))) for row in zip(*(list(c.cells) for c in table.columns))]
    return {"title": _plain(table.title) if table.title else None, "rows": rows}


def show(renderable: RenderableType, console: Console | None = None) -> None:
    """Print a table (or a group of them, or text) by the rule above."""
    if stdout_is_terminal():
        (console or Console()).print(renderable)
        return
    parts = renderable.renderables if isinstance(renderable, Group) else [renderable]
    for part in parts:
        if isinstance(part, Table):
            sys.stdout.write("\n".join(table_lines(part)) + "\n")
        else:
            Console(soft_wrap=True, highlight=False).print(part)


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "tolist"):        # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON: they become null, so every reader can parse the document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json(doc: Any) -> None:
    """One JSON document on stdout (datetimes as ISO text, NaN as null)."""
    text = json.dumps(_finite(json.loads(json.dumps(doc, default=_default, allow_nan=True))), ensure_ascii=False,
                      allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
