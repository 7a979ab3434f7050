"""``modelbus train --wait``: follow a run (or a search) live from its TrainingRunUpdated events.

The follower reads the topics from their current end with the Kafka layer's
TopicReader (no consumer group, nothing committed, the configured codec), and
is positioned *before* the request is published, so not a single update of the
run can be missed.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.errors import ModelBusError
from infra.kafka import topics as T
from infra.kafka.reader import TopicReader
from infra.settings import Settings
from schemas.events import will_be_retried


class FollowTimeout(ModelBusError):
    """The run did not finish within --timeout (it goes on; follow it with `modelbus runs show`)."""


class Follower:
    """Decoded TrainingRunUpdated / ModelRegistered events published after it was created."""

    def __init__(self, settings: Settings, timeout: float = 10.0):
        self.reader = TopicReader(settings, [settings.topic(T.TRAINING_RUNS), settings.topic(T.MODELS_REGISTERED)],
                                  start="end", name="cli-follow", timeout=timeout)

    def events(self, poll_s: float = 0.5) -> Iterator[tuple[str, dict[str, Any]] | None]:
        """Yields (event type, value), or None after each quiet poll so callers can check deadlines."""
        while True:
            envs = self.reader.poll(100, poll_s)
            if not envs:
                yield None
            for env in envs:
                yield env.event_type, env.value

    def close(self) -> None:
        self.reader.close()


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _epoch_text(v: dict[str, Any], total: int | None) -> str:
    m = v["metrics"]
    parts = [f"epoch {v['epoch']}" + (f"/{total}" if total else "")]
    parts += [f"{k}={m[k]:.4g}" for k in ("train_loss", "val_loss", "val_accuracy") if k in m]
    return " ".join(parts)


def follow(follower: Follower, console: Console, *, request_id: str, search_id: str | None = None,
           n_trials: int = 0, final_request_id: str | None = None, timeout: float | None = None) -> int:
    """Show the run's (or search's) progress until it finishes (0) or fails (1)."""
    from infra.app.cli.runs import _metrics_table

    deadline = None if timeout is None else time.monotonic() + timeout
    target = request_id if search_id is None else final_request_id
    finished: dict[str, Any] | None = None
    with _progress(console) as progress:
        bar = progress.add_task(f"search {search_id[:8]}: trials" if search_id else "waiting for a trainer",
                                total=n_trials or None)
        epochs_total: int | None = None
        told: set[int] = set()
        models: dict[str, dict[str, Any]] = {}
        for item in follower.events():
            if deadline is not None and time.monotonic() > deadline:
                raise FollowTimeout(f"gave up waiting after {timeout:.0f}s; the run goes on")
            if item is None:
                if finished is not None and time.monotonic() > finished["_wait_model_until"]:
                    break
                continue
            kind, v = item
            if kind == "ModelRegistered":   # may come before the finished update: another topic, no order
                models[v["run_id"]] = v
                if finished is not None and v["run_id"] == finished["run_id"]:
                    break
                continue
            if kind != "TrainingRunUpdated":
                continue
            if search_id and v["run_id"] == f"search-{search_id}":   # the search's summary
                if v["status"] == "failed":
                    progress.console.print(f"[red]search failed:[/] {v['failure_reason']}")
                    return 1
                best = json.loads(v["params_json"]).get("best_params")
                progress.console.print(f"best trial #{v['trial_number']}: {best}; training the final model")
                progress.update(bar, description="final run", completed=0, total=None)
                continue
            if search_id and v.get("search_id") == search_id and v.get("trial_number") is not None:
                if v["status"] in ("finished", "failed") and v["trial_number"] not in told:
                    told.add(v["trial_number"])
                    progress.advance(bar)
                    what = ("[green]finished[/] val_loss=" + f"{v['metrics'].get('best_val_loss', float('nan')):.4g}"
                            if v["status"] == "finished" else f"[red]failed[/]: {v['failure_reason']}")
                    progress.console.print(f"trial #{v['trial_number']} {what}")
                continue
            if v.get("request_id") != target:
                continue
            status = v["status"]
            if status == "started":
                epochs_total = json.loads(v["params_json"]).get("epochs")
                progress.update(bar, description=f"run {v['run_id']} attempt {v['attempt']}", total=epochs_total,
                                completed=0)
            elif status == "epoch":
                progress.update(bar, completed=v["epoch"], description=_epoch_text(v, epochs_total))
            elif status == "failed":
                if will_be_retried(v):
                    progress.console.print(f"[yellow]attempt {v['attempt']} failed, retrying:[/] {v['failure_reason']}")
                    continue
                progress.console.print(f"[red]run {v['run_id']} failed:[/] {v['failure_reason']}")
                return 1
            elif status == "finished":
                # early stopping: the bar ends where the run did
                done = next(t.completed for t in progress.tasks if t.id == bar) or epochs_total or 1
                progress.update(bar, completed=done, total=done, description=f"run {v['run_id']} finished"
                                + (f" (stopped early at epoch {done:.0f} of {epochs_total})"
                                   if epochs_total and done < epochs_total else ""))
                finished = {**v, "_wait_model_until": time.monotonic() + 10.0}
                if v["run_id"] in models or not json.loads(v["params_json"] or "{}").get("register_model", True):
                    break
    if finished is not None:
        console.print(_metrics_table(finished["metrics"]))
        reg = models.get(finished["run_id"])
        if reg is not None:
            console.print(f"[green]registered[/] {reg['model_name']} v{reg['model_version']} "
                          f"({reg['primary_metric']}={reg['metrics'].get(reg['primary_metric'], float('nan')):.4g})"
                          f" at {reg['artifact_uri']}")
        elif (finished.get("artifact_uris") or {}).get("artifact"):
            console.print(f"artifact: {finished['artifact_uris']['artifact']}")
    return 0
