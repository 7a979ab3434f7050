"""``modelbus bench``: every performance figure in one report.

The command lives with the benchmarks (the top of the house, above the app it measures);
``infra.app.cli.main`` mounts it by name like every other concern's commands.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer()
console = Console()


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Smoke-sized runs (minutes, not tens of minutes)."),
    out: str = typer.Option("", "--out", help="Directory of latest.json / latest.md (default: bench/results)."),
    only: list[str] = typer.Option(
        [], "--only", help="Run only these suites (kafka, datasets, trainer, serving, sink, loop, soak)."),
) -> None:
    """Run every benchmark and write bench/results/latest.json and latest.md."""
    from bench.runner import RESULTS, SUITES, run_all

    unknown = sorted(set(only) - set(SUITES))
    if unknown:
        raise typer.BadParameter(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}",
                                 param_hint="--only")
    path = run_all(quick=quick, only=only or None, console=console, out_dir=Path(out) if out else RESULTS)
    console.print(f"[bold]report:[/] {path} and {path.with_suffix('.md')}")
