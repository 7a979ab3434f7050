"""``modelbus models list | predict | rollback``: served models from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import load_settings
from serving.errors import ServingError

app = typer.Typer()
models_app = typer.Typer(help="Models in the Triton repository.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()


@models_app.command("list")
def list_models() -> None:
    """Every model in the repository: serving version, versions kept for rollback, Triton state."""
    from serving.client import ModelClient
    from serving.repository import ModelRepository

    settings = load_settings()
    repo = ModelRepository.from_settings(settings)
    states: dict[tuple[str, str], str] = {}
    triton_note = ""
    try:
        with ModelClient.from_settings(settings) as client:
            for m in client.models():
                states[(m.get("name", ""), str(m.get("version", "")))] = m.get("state", "") or m.get("reason", "")
    except ServingError as exc:
        triton_note = f"Triton unreachable: {exc}"
    table = Table(title=f"Models in {repo.uri}")
    for col in ("model", "serving", "kept versions", "triton state", "checksum", "run"):
        table.add_column(col)
    for name in repo.models():
        serving = repo.serving_versions(name)
        current = serving[-1] if serving else None
        info = repo.version_info(name, current) if current and repo.has_version(name, current) else {}
        state = states.get((name, str(current)), "unreachable" if triton_note else "not loaded")
        color = "green" if state == "READY" else "red"
        table.add_row(name, str(current or "-"), ", ".join(map(str, repo.versions(name))), f"[{color}]{state}[/]",
                      str(info.get("checksum", ""))[:12], str(info.get("run_id", "")))
    console.print(table)
    if triton_note:
        console.print(f"[yellow]{triton_note}[/]")


def _read_columns(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ServingError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ServingError(f"{path} must be a JSON object mapping each column to a list of values")
    return {k: v if isinstance(v, list) else [v] for k, v in data.items()}


@app.command()
def predict(
    model: str = typer.Argument(..., help="Served model name."),
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False,
                               help="JSON object: column name → list of values (one per row)."),
    version: Optional[int] = typer.Option(None, "--version", help="Version to ask for (default: the serving one)."),
) -> None:
    """Send rows to a served model and print its predictions."""
    from serving.client import ModelClient

    columns = _read_columns(input)
    with ModelClient.from_settings(load_settings()) as client:
        sig = client.signature(model)
        out = client.predict(model, columns, version=version)
    scores, label = (out[o.name] for o in sig.outputs)
    table = Table(title=f"{model}" + (f" v{version}" if version else ""))
    keys = list(columns)
    for k in keys:
        table.add_column(k, style="dim")
    if sig.is_classification:
        table.add_column("prediction", style="bold")
        table.add_column("confidence")
    else:
        table.add_column("prediction", style="bold")
    for row in range(scores.shape[0]):
        cells = [str(columns[k][row]) if row < len(columns[k]) else "" for k in keys]
        if sig.is_classification:
            idx = int(np.asarray(label[row]).reshape(-1)[0])
            name = sig.labels[idx] if 0 <= idx < len(sig.labels) else str(idx)
            cells += [name, f"{float(scores[row].reshape(-1)[idx]):.3f}"]
        else:
            cells += [f"{float(scores[row].reshape(-1)[0]):.6g}"]
        table.add_row(*cells)
    console.print(table)


@app.command()
def rollback(
    model: str = typer.Argument(..., help="Served model name."),
    to: Optional[int] = typer.Option(None, "--to", help="Version to serve (default: the newest older one kept)."),
) -> None:
    """Serve an older version kept in the repository again, and announce it (ModelDeployed, action 'rollback').

    The announcement is what makes the deployer treat that version as the champion again.
    """
    from consumers.deploy_events import rollback_event
    from infra.errors import DeliveryError
    from infra.kafka import EventProducer
    from infra.kafka.topics import MODELS_DEPLOYED
    from serving.deploy import Deployer

    settings = load_settings()
    deployer = Deployer(settings)
    result = deployer.rollback(model, to)
    if not result.ok:
        raise ServingError(f"rollback of {model} to v{result.model_version} failed at {result.stage}: {result.reason}")
    event = rollback_event(result, deployer.repo.version_info(model, result.model_version))
    try:
        EventProducer(settings, name="serving.cli").publish(settings.topic(MODELS_DEPLOYED), "ModelDeployed", event,
                                                            key=model)
    except DeliveryError as exc:
        raise ServingError(f"{model} now serves v{result.serving_version}, but announcing the rollback failed "
                           f"({exc}); until it is announced the deployer still treats v{result.previous_version} as the champion "
                           "- run the rollback again") from exc
    console.print(f"[green]{model}[/]: v{result.previous_version} → v{result.serving_version} "
                  f"({result.duration_s:.1f}s), announced as event {event['header']['event_id']}")
