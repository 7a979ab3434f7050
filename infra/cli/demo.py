"""``modelbus demo`` (the main job) and ``modelbus bench`` (every performance figure in one report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from infra.settings import load_settings

app = typer.Typer()
console = Console()


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep/--stop", help="Leave the stack and consumers running afterwards."),
    requests: int = typer.Option(3000, help="gRPC inference calls sent by the load generator."),
    shifted_share: float = typer.Option(0.35, help="Share of requests drawn from a shifted distribution."),
    data_dir: Optional[str] = typer.Option(
        None, help="Data directory of the demo's stack (default: MODELBUS_STACK__DATA_DIR, else var/demo). "
        "Wiped first, but only when an earlier demo created it."),
) -> None:
    """Run the whole loop on the embedded stack and show what happened."""
    from infra.demo.run import run_demo

    configured = load_settings()
    if data_dir is None:
        data_dir = configured.stack.data_dir if "data_dir" in configured.stack.model_fields_set else "var/demo"
    settings = configured.with_overrides(stack={"data_dir": data_dir})
    run_demo(settings, keep=keep, requests=requests, shifted_share=shifted_share, console=console)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Smoke-sized runs (minutes, not tens of minutes)."),
    out: str = typer.Option("", "--out", help="Directory of latest.json / latest.md (default: bench/results)."),
    only: list[str] = typer.Option([], "--only", help="Run only these suites (kafka, datasets, trainer, serving, sink, loop, soak)."),
) -> None:
    """Run every benchmark and write bench/results/latest.json and latest.md."""
    from bench.runner import RESULTS, SUITES, run_all

    unknown = sorted(set(only) - set(SUITES))
    if unknown:
        raise typer.BadParameter(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}",
                                 param_hint="--only")
    path = run_all(quick=quick, only=only or None, console=console, out_dir=Path(out) if out else RESULTS)
    console.print(f"[bold]report:[/] {path} and {path.with_suffix('.md')}")
