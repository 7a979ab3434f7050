"""``modelbus outcome push``: report what really happened to served predictions, from a file.

Every row is checked before anything is published (a bad row fails the file with its row number and
exit code 2); then the outcomes go out as one batch of ``OutcomeObserved`` events, with a progress bar
for large files.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from infra.settings import load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Report outcomes (ground truth) of predictions.")
console = Console()
err_console = Console(stderr=True)
BIG = 10_000


@app.command("push")
def push(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet: columns model_name, "
                                "prediction_id or key, label or value, and optionally observed_at and source."),
    model: str | None = typer.Option(None, "--model", help="Model of every row (instead of a model_name column)."),
    source: str | None = typer.Option(None, "--source", help="Source of every row without one (default: the file)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Publish one OutcomeObserved per row; a row may name its prediction by id or by your own row key."""
    from producers.outcomes import read_outcomes
    from producers.sdk import ModelBus

    outcomes = read_outcomes(path, model_name=model, source=source if source is not None else path.name)
    columns = [TextColumn("[bold]reporting[/] outcomes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with ModelBus(load_settings()) as mb, Progress(*columns, console=err_console, transient=True,
                                                    disable=len(outcomes) < BIG) as bar:
        task = bar.add_task("outcomes", total=len(outcomes))
        ids = mb.report_outcomes(outcomes, progress=lambda done, _total: bar.update(task, completed=done))
    by_model: dict[str, int] = {}
    for o in outcomes:
        by_model[o.model_name] = by_model.get(o.model_name, 0) + 1
    if as_json:
        typer.echo(json.dumps({"published": len(ids), "by_model": by_model, "first_event_id": ids[0] if ids else None}))
        return
    console.print(f"[green]reported[/] {len(ids)} outcome(s): "
                  + ", ".join(f"{m} {n}" for m, n in sorted(by_model.items())), highlight=False)
