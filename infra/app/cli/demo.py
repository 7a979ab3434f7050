"""``modelbus demo``: the main job, the whole loop on the embedded stack."""

from __future__ import annotations

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
    data_dir: str | None = typer.Option(
        None, help="Data directory of the demo's stack (default: MODELBUS_STACK__DATA_DIR, else var/demo). "
        "Wiped first, but only when an earlier demo created it."),
) -> None:
    """Run the whole loop on the embedded stack and show what happened."""
    from infra.app.demo.run import run_demo

    configured = load_settings()
    if data_dir is None:
        data_dir = configured.stack.data_dir if "data_dir" in configured.stack.model_fields_set else "var/demo"
    settings = configured.with_overrides(stack={"data_dir": data_dir})
    run_demo(settings, keep=keep, requests=requests, shifted_share=shifted_share, console=console)
