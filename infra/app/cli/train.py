"""``modelbus train`` and ``modelbus runs``: ask for training, watch it, and explain any model afterwards.

``train`` only publishes a TrainingRequested (through the producers SDK); the
training consumers do the work, so the command returns at once unless
``--wait`` follows the run live. ``runs`` answers "what data, code,
parameters, environment and metrics made this model?" from ClickHouse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from infra.errors import ModelBusError

app = typer.Typer(add_completion=False)
runs_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Training runs: what data, code, parameters, environment and metrics made a model.")
app.add_typer(runs_app, name="runs")
console = Console()


class TrainRequestError(ModelBusError):
    """The training request is inconsistent (bad spec file, search without trials, ...)."""


def _json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TrainRequestError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise TrainRequestError(f"{what} {path} must hold a JSON object")
    return doc


def build_spec(spec_file: Path | None, **flags: Any) -> dict[str, Any]:
    """The spec file's fields with command-line flags on top, checked against TrainingSpec."""
    from trainer.spec import check_request_spec

    spec = _json_file(spec_file, "spec file") if spec_file else {}
    spec.update({k: v for k, v in flags.items() if v is not None})
    return check_request_spec(spec)


@app.command()
def train(
    dataset: str = typer.Argument(..., help="DATASET or DATASET@VERSION (a unique version prefix works)"),
    spec_file: Path | None = typer.Option(None, "--spec", exists=True, dir_okay=False,
                                             help="JSON file with training spec fields"),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    lr: float | None = typer.Option(None, "--lr"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    seed: int | None = typer.Option(None, "--seed", min=0),
    arch: str | None = typer.Option(None, "--model", help="mlp, cnn or auto"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
    world_size: int | None = typer.Option(None, "--world-size", min=1, help="DDP processes (torchrun)"),
    model_name: str | None = typer.Option(None, "--model-name", help="registered name (default: the dataset)"),
    search: Path | None = typer.Option(None, "--search", exists=True, dir_okay=False,
                                          help="JSON search space: turns the request into a hyperparameter search"),
    trials: int = typer.Option(0, "--trials", min=0, help="trials of the search"),
    wait: bool = typer.Option(False, "--wait", help="follow the run live until it finishes or fails"),
    timeout: float | None = typer.Option(None, "--timeout", help="with --wait: give up after this many seconds"),
) -> None:
    """Ask the training consumers for a run (or a search) on a dataset version."""
    from consumers.search_state import final_request_id, search_id_for
    from infra.settings import load_settings
    from producers.datasets.registry import DatasetRef
    from producers.sdk import ModelBus

    if bool(search) != bool(trials):
        raise TrainRequestError("--search and --trials go together (a search space and how many trials)")
    ref = DatasetRef.parse(dataset)
    spec = build_spec(spec_file, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, model=arch, device=device,
                      world_size=world_size)
    space = _json_file(search, "search space") if search else None
    settings = load_settings()
    follower = None
    if wait:
        from infra.app.cli.train_follow import Follower

        follower = Follower(settings)   # positioned before the request exists: no update can be missed
    try:
        with ModelBus(settings, name="modelbus.cli") as mb:
            request_id = mb.request_training(ref.name, spec, dataset_version=ref.version, model_name=model_name,
                                             search_space=space, n_trials=trials)
        sid = search_id_for(request_id) if trials else None
        console.print(f"requested {'a search of ' + str(trials) + ' trials on' if trials else 'training of'} "
                      f"[bold]{ref}[/] (request {request_id}" + (f", search {sid})" if sid else ")"))
        if follower is None:
            return
        from infra.app.cli.train_follow import follow

        code = follow(follower, console, request_id=request_id, search_id=sid, n_trials=trials,
                      final_request_id=final_request_id(sid) if sid else None, timeout=timeout)
        if code:
            raise typer.Exit(code)
    finally:
        if follower is not None:
            follower.close()


def _store():
    from infra.clickhouse import connect
    from infra.settings import load_settings

    return connect(load_settings())


def _registry():
    from infra.settings import load_settings
    from producers.datasets.registry import registry_from_settings

    return registry_from_settings(load_settings())


@runs_app.command("list")
def list_runs(dataset: str | None = typer.Option(None, "--dataset", help="only runs on this dataset"),
              limit: int = typer.Option(50, "--limit", min=1, max=10000),
              as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Recent training runs, newest first, with their status and registered model."""
    from infra.app.cli import runs as cli_runs
    from infra.app.cli.output import print_json, show

    with _store() as store:
        rows = cli_runs.list_runs(store, dataset, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no training runs yet" + (f" on {dataset!r}" if dataset else ""))
        return
    show(cli_runs.runs_table(rows), console)


@runs_app.command("show")
def show(run_id: str = typer.Argument(..., help="run id or a unique prefix"),
         as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Everything that made a run: data, code, parameters, environment, metrics, epochs, model."""
    from infra.app.cli import output
    from infra.app.cli import runs as cli_runs

    with _store() as store:
        rec = cli_runs.load_run(store, run_id, _registry())
    if as_json:
        output.print_json({"summary": rec.summary, "events": rec.events, "epochs": rec.epochs, "model": rec.model,
                           "dataset": rec.dataset, "params": rec.params,
                           "gate": [output.table_records(t) for t in rec.gate_tables if isinstance(t, Table)]})
        return
    output.show(cli_runs.show_run(rec), console)


@runs_app.command("compare")
def compare(run_a: str = typer.Argument(..., help="first run (id or prefix)"),
            run_b: str = typer.Argument(..., help="second run (id or prefix)")) -> None:
    """Two runs side by side; what differs is highlighted."""
    from infra.app.cli import runs as cli_runs
    from infra.app.cli.output import show

    with _store() as store:
        registry = _registry()
        a, b = cli_runs.load_run(store, run_a, registry), cli_runs.load_run(store, run_b, registry)
    show(cli_runs.compare_runs(a, b), console)
