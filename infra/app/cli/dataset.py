"""``modelbus dataset push|list|show|pull``: the dataset manager from a shell.

A refused push prints the validation report as a table and one ``error:`` line,
and exits with code 2 (nothing was stored or published); any other expected
failure (unreadable file, bad name, storage, broker) exits 2 with one line too.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from infra.app.cli import output
from producers.datasets.report import ValidationReport
from producers.datasets.spec import Expectation
from producers.errors import DatasetValidationError

dataset_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="Push, list, show and pull versioned datasets.")
console = Console()
err_console = Console(stderr=True)
BIG_BYTES = 32 << 20
BIG_ROWS = 1_000_000


def _csv(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@contextmanager
def _refusals() -> Iterator[None]:
    """Expected errors → report table (if any) + one clear line + exit code 2."""
    from infra.app.cli.errors import expected_errors

    try:
        yield
    except DatasetValidationError as exc:
        print_report(exc.report, err_console)
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except expected_errors() as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def print_report(report: ValidationReport, con: Console, title: str = "validation report") -> None:
    if not report.issues:
        return
    table = Table(title=f"{title}: {report.summary()}", show_lines=False, title_justify="left")
    for col in ("column", "check", "rows", "examples", "first rows", "message"):
        table.add_column(col, overflow="fold")
    for row in report.as_table():
        table.add_row(row["column"], row["rule"], str(row["rows"] or ""), row["examples"], row["example_rows"],
                      row["message"], style="red" if row["severity"] == "failure" else "yellow")
    con.print(table)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def _client():
    from infra.settings import load_settings
    from producers.sdk import ModelBus

    return ModelBus(load_settings())


@contextmanager
def _progress(path: Path) -> Iterator[Any]:
    size = path.stat().st_size if path.is_file() else 0
    big = size >= BIG_BYTES
    columns = [TextColumn("[bold]pushing[/] {task.description}"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if path.suffix.lower() != ".parquet" else \
        [MofNCompleteColumn()]
    with Progress(*columns, TimeRemainingColumn(), console=err_console, transient=True, disable=not big) as bar:
        task = bar.add_task(path.name, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@dataset_app.command("push")
def push(
    path: Path = typer.Argument(..., help="CSV (UTF-8, optionally .gz) or Parquet file."),
    name: str | None = typer.Option(None, "--name", "-n", help="Dataset name: lowercase letters, digits, _ and -."),
    label: str | None = typer.Option(None, "--label", "-l", help="Target column (default 'label')."),
    task: str | None = typer.Option(None, help="binary | multiclass | regression (inferred if omitted)."),
    features: list[str] | None = typer.Option(None, "--features", "-f", help="Feature columns (comma list)."),
    exclude: list[str] | None = typer.Option(None, "--exclude", help="Columns stored but not used as features."),
    slice_by: list[str] | None = typer.Option(None, "--slice-by", "-s", help="Slice columns (comma list)."),
    time_column: str | None = typer.Option(None, "--time-column", help="Timestamp column (time splits)."),
    categorical: list[str] | None = typer.Option(None, "--categorical", help="Force columns to categories."),
    numeric: list[str] | None = typer.Option(None, "--numeric", help="Columns that must be numeric."),
    image_shape: str | None = typer.Option(None, "--image-shape", help="Per-sample image shape, e.g. 1,28,28."),
    expect: list[str] | None = typer.Option(None, "--expect", "-e",
                                               help="Rule COL:RULE[=ARG]: range=0..120, min=0, max=1, "
                                                    "allowed=a,b, not_null, unique, pattern=REGEX."),
    tag: list[str] | None = typer.Option(None, "--tag", "-t", help="Tag KEY=VALUE (repeatable)."),
    spec_file: Path | None = typer.Option(None, "--spec", help="JSON file with DatasetSpec fields."),
    no_duplicates: bool = typer.Option(False, "--no-duplicates", help="Refuse duplicate rows (default: warn)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate a file, store it as an immutable version, and publish one DatasetCreated event."""
    with _refusals():
        from producers.datasets.spec import build_spec
        from producers.errors import InvalidSpecError

        base: dict[str, Any] = {}
        if spec_file is not None:
            try:
                base = json.loads(spec_file.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidSpecError(f"{spec_file}: not a readable JSON spec: {exc}") from exc
        try:
            expectations = [Expectation.parse(e) for e in expect or []]
            tags = dict(t.split("=", 1) for t in tag or [])
            shape = tuple(int(d) for d in image_shape.split(",")) if image_shape else None
        except ValueError as exc:
            raise InvalidSpecError(f"invalid option: {exc}") from exc
        if expectations:
            base["expectations"] = [*base.get("expectations", []), *expectations]
        if tags:
            base["tags"] = {**base.get("tags", {}), **tags}
        if no_duplicates:
            base["allow_duplicate_rows"] = False
        if not (name or base.get("name")):
            raise InvalidSpecError("a dataset name is required: --name NAME (or 'name' in --spec)")
        spec = build_spec(base, name=name, label=label, task=task, features=_csv(features),
                          exclude=_csv(exclude), slice_by=_csv(slice_by), time_column=time_column,
                          categorical=_csv(categorical), numeric=_csv(numeric), image_shape=shape)
        with _client() as mb, _progress(path) as progress:
            res = mb.push_dataset(path, spec, progress=progress)
    if as_json:
        output.print_json({k: v for k, v in res.__dict__.items() if k != "report"} |
                   {"report": res.report.model_dump(mode="json")})
        return
    print_report(res.report, console, title="warnings")
    if res.created:
        console.print(f"[green]pushed[/] [bold]{res.ref}[/]: {res.row_count} rows, {res.size_bytes / 1e6:.2f} MB, "
                      f"task {res.task}" + (f", parent {res.parent_version}" if res.parent_version else ""))
    else:
        console.print(f"[cyan]unchanged[/] [bold]{res.ref}[/]: the same data is already stored")
    if res.published:
        console.print(f"DatasetCreated event {res.event_id} published")


@dataset_app.command("list")
def list_(name: str | None = typer.Argument(None, help="Show the versions of this dataset."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """List datasets, or the committed versions of one dataset (oldest first)."""
    with _refusals(), _client() as mb:
        reg = mb.datasets
        if name:
            versions = reg.versions(name)
            if not versions:
                from producers.errors import DatasetNotFoundError

                raise DatasetNotFoundError(f"no dataset named {name!r}")
            rows = [{"version": v.version, "created_at": v.created_at, "rows": v.row_count,
                     "size_bytes": v.size_bytes, "task": v.task, "parent": v.parent_version or "",
                     "warnings": len(v.metadata.get("warnings", []))} for v in versions]
        else:
            rows = []
            for n in reg.names():
                vs = reg.versions(n)
                rows.append({"name": n, "versions": len(vs), "latest": vs[-1].version, "rows": vs[-1].row_count,
                             "task": vs[-1].task, "created_at": vs[-1].created_at})
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        console.print("no datasets")
        return
    table = Table(title=f"versions of {name}" if name else "datasets", title_justify="left")
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    output.show(table, console)


@dataset_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME, NAME@VERSION (or a unique prefix) or NAME@latest."),
         as_json: bool = typer.Option(False, "--json", help="Print the full metadata JSON.")) -> None:
    """Show one version: schema, column roles, statistics, warnings."""
    with _refusals(), _client() as mb:
        v = mb.datasets.get(ref)
    m = v.metadata
    if as_json:
        output.print_json(m)
        return
    console.print(f"[bold]{v.ref}[/]  {v.row_count} rows  {v.size_bytes / 1e6:.2f} MB  task {v.task}  "
                  f"created {v.created_at}")
    console.print(f"uri {m['uri']}\nchecksum {v.checksum}  parent {v.parent_version or '-'}  "
                  f"source {m.get('source', '')}")
    if m.get("tags"):
        console.print("tags " + ", ".join(f"{k}={val}" for k, val in m["tags"].items()))
    roles = {m["label_column"]: "label", **{c: "slice" for c in m["slice_columns"]}}
    if m.get("time_column"):
        roles[m["time_column"]] = "time"
    table = Table(title="columns", title_justify="left")
    for col in ("column", "type", "role", "nulls", "distinct", "mean", "std", "min", "max", "top categories"):
        table.add_column(col, overflow="fold")
    for s in m["statistics"]:
        role = roles.get(s["name"], "feature" if s["name"] in m["feature_columns"] else "-")
        if s["name"] in m["feature_columns"] and role == "slice":
            role = "feature, slice"
        top = ", ".join(f"{c} ({n})" for c, n in zip(s["categories"][:5], s["category_counts"][:5]))
        table.add_row(s["name"], s["dtype"], role, str(s["null_count"]), str(s.get("distinct_count") or ""),
                      _num(s["mean"]), _num(s["std"]), _num(s["min"]), _num(s["max"]), top)
    output.show(table, console)
    if m.get("image_shape"):
        console.print(f"image_shape {m['image_shape']}")
    print_report(ValidationReport.model_validate(m["validation"]), console, title="warnings")


@dataset_app.command("pull")
def pull(ref: str = typer.Argument(..., help="NAME@VERSION (or NAME for the newest)."),
         output: Path = typer.Option(Path("."), "--output", "-o", help="Destination file or directory.")) -> None:
    """Copy a version's Parquet data out of the store, verifying its checksum."""
    with _refusals(), _client() as mb:
        v = mb.datasets.get(ref)
        path = mb.datasets.pull(v.ref, output)
    console.print(f"pulled [bold]{v.ref}[/] → {path} (sha256 {v.checksum[:16]}… verified)")
