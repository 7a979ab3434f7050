"""``modelbus models list | predict | rollback``: served models from the command line."""

from __future__ import annotations

import json
from pathlib import Path

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
err_console = Console(stderr=True)


@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Every model in the repository: serving version, versions kept for rollback, Triton state."""
    from infra.app.cli.output import print_json, show
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
    rows = []
    for name in repo.models():
        serving = repo.serving_versions(name)
        current = serving[-1] if serving else None
        info = repo.version_info(name, current) if current and repo.has_version(name, current) else {}
        rows.append({"model": name, "serving": current, "versions": repo.versions(name),
                     "triton_state": states.get((name, str(current)), "unreachable" if triton_note else "not loaded"),
                     "checksum": info.get("checksum", ""), "run_id": info.get("run_id", "")})
    if as_json:
        print_json({"repository": repo.uri, "models": rows, "triton_error": triton_note or None})
        return
    table = Table(title=f"Models in {repo.uri}", title_justify="left")
    for col in ("model", "serving", "kept versions", "triton state", "checksum", "run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        color = "green" if r["triton_state"] == "READY" else "red"
        table.add_row(r["model"], str(r["serving"] or "-"), ", ".join(map(str, r["versions"])),
                      f"[{color}]{r['triton_state']}[/]", str(r["checksum"])[:12], str(r["run_id"]))
    show(table, console)
    if triton_note:
        err_console.print(f"[yellow]{triton_note}[/]")


def _read_columns(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ServingError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ServingError(f"{path} must be a JSON object mapping each column to a list of values")
    return {k: v if isinstance(v, list) else [v] for k, v in data.items()}


def _prediction_rows(sig, answer, columns: dict[str, list], show_inputs: bool) -> list[dict]:
    """One dict per row: index, prediction and confidence first, then its prediction id (and key) for reporting
    its outcome; the inputs only when asked for."""
    out = answer.outputs
    scores, label = (out[o.name] for o in sig.outputs)
    ids = answer.prediction_ids
    rows = []
    for row in range(scores.shape[0]):
        r: dict = {"row": row}
        if sig.is_classification:
            idx = int(np.asarray(label[row]).reshape(-1)[0])
            r["prediction"] = sig.labels[idx] if 0 <= idx < len(sig.labels) else str(idx)
            r["confidence"] = float(scores[row].reshape(-1)[idx])
        else:
            r["prediction"] = float(scores[row].reshape(-1)[0])
        r["prediction_id"] = ids[row]
        if answer.row_keys is not None:
            r["key"] = answer.row_keys[row]
        if show_inputs:
            r["inputs"] = {k: v[row] for k, v in columns.items() if row < len(v)}
        rows.append(r)
    return rows


def _cell(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."   # an image's pixels would swamp the table


@app.command()
def predict(
    model: str = typer.Argument(..., help="Served model name."),
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False,
                               help="JSON object: column name → list of values (one per row)."),
    version: int | None = typer.Option(None, "--version", help="Version to ask for (default: the serving one)."),
    show_inputs: bool = typer.Option(False, "--show-inputs", help="Also show each row's inputs (long ones cut)."),
    key_column: str | None = typer.Option(None, "--key-column", help="Input column holding your own row keys "
                                          "(not sent as a feature): outcomes can then be reported by those keys."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (inputs in full)."),
) -> None:
    """Send rows to a served model and print row, prediction and confidence."""
    from infra.app.cli.output import print_json, show
    from serving.client import ModelClient

    columns = _read_columns(input)
    keys = None
    if key_column is not None:
        if key_column not in columns:
            raise typer.BadParameter(f"no column {key_column!r} in {input}", param_hint="--key-column")
        keys = [str(k) for k in columns.pop(key_column)]
    with ModelClient.from_settings(load_settings()) as client:
        sig = client.signature(model)
        answer = client.predict_rows(model, columns, version=version, row_keys=keys)
    rows = _prediction_rows(sig, answer, columns, show_inputs)
    if as_json:
        print_json({"model": model, "version": version, "request_id": answer.request_id, "predictions": rows})
        return
    table = Table(title=f"{model}" + (f" v{version}" if version else ""), title_justify="left")
    table.add_column("row", justify="right")
    table.add_column("prediction", style="bold", no_wrap=True)
    if sig.is_classification:
        table.add_column("confidence", no_wrap=True)
    table.add_column("prediction id" if keys is None else "key", style="dim", no_wrap=True)
    shown = list(columns) if show_inputs else []
    for k in shown:
        table.add_column(k, style="dim", overflow="ellipsis")
    for r in rows:
        cells = [str(r["row"]), str(r["prediction"]) if sig.is_classification else f"{r['prediction']:.6g}"]
        if sig.is_classification:
            cells.append(f"{r['confidence']:.3f}")
        cells.append(r["prediction_id"] if keys is None else r["key"])
        cells += [_cell(r["inputs"].get(k, "")) for k in shown]
        table.add_row(*cells)
    show(table, console)


@app.command()
def rollback(
    model: str = typer.Argument(..., help="Served model name."),
    to: int | None = typer.Option(None, "--to", help="Version to serve (default: the newest older one kept)."),
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
        EventProducer(settings, name="infra.app.cli.models").publish(settings.topic(MODELS_DEPLOYED), "ModelDeployed",
                                                                     event, key=model)
    except DeliveryError as exc:
        raise ServingError(f"{model} now serves v{result.serving_version}, but announcing the rollback failed "
                           f"({exc}); until it is announced the deployer still treats v{result.previous_version} "
                           "as the champion - run the rollback again") from exc
    console.print(f"[green]{model}[/]: v{result.previous_version} → v{result.serving_version} "
                  f"({result.duration_s:.1f}s), announced as event {event['header']['event_id']}")
