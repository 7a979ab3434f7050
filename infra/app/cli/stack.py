"""``modelbus up | status | logs | down | topics``: the platform from the command line.

`up` starts the embedded stack and then every consumer under one detached
supervisor (see ``infra.app.stack.consumers``); `--only stack` starts just the stack.
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.app.cli.output import print_json, show
from infra.settings import load_settings

app = typer.Typer()
console = Console()
err_console = Console(stderr=True)
_COLORS = {"running": "green", "stopped": "dim", "unhealthy": "red", "external": "cyan", "starting": "yellow",
           "backoff": "red", "pending": "yellow"}


class Only(str, Enum):
    all = "all"
    stack = "stack"


def _stack_table(statuses) -> Table:
    t = Table(title="ModelBus embedded stack", title_justify="left")
    for col in ("part", "state", "pid", "endpoint", "detail"):
        t.add_column(col, overflow="fold")
    for s in statuses:
        t.add_row(s.name, f"[{_COLORS.get(s.state, 'white')}]{s.state}[/]", str(s.pid or "-"), s.endpoint, s.detail)
    return t


def _telemetry_table(folder) -> Table | None:
    """The in-model telemetry emitters' last reported counters (their stats files), losses and renewals first."""
    import json
    import time

    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not rows:
        return None
    t = Table(title="In-model telemetry (last report of each emitter)")
    for col in ("emitter", "delivered", "dropped", "failed", "invalid", "producer renewals", "reported"):
        t.add_column(col)
    for r in rows:
        lost = r.get("dropped", 0) or r.get("failed", 0)
        t.add_row(escape(str(r.get("emitter", "?"))), str(r.get("delivered", 0)),
                  f"[{'red' if lost else 'green'}]{r.get('dropped', 0)}[/]", str(r.get("failed", 0)),
                  str(r.get("invalid", 0)), str(r.get("renewals", 0)), f"{time.time() - r.get('at', 0):.0f}s ago")
    return t


def _renewals_table(renewals) -> Table:
    t = Table(title="Kafka producers replaced in the last 24 h (fenced, or every broker gone)", title_justify="left")
    for col in ("process", "kind", "renewals", "last"):
        t.add_column(col)
    for r in renewals:
        t.add_row(escape(r.process), r.kind, f"[yellow]{r.renewals}[/]", r.last_at)
    return t


def _process_table(procs) -> Table:
    t = Table(title="consumers", title_justify="left")
    for col in ("process", "state", "pid", "up", "restarts", "last error"):
        t.add_column(col, overflow="fold")
    for p in procs:
        t.add_row(p.name, f"[{_COLORS.get(p.state, 'white')}]{p.state}[/]", str(p.pid or "-"),
                  f"{p.uptime_s:.0f}s" if p.uptime_s is not None else "-", str(p.restarts), p.last_error or "")
    return t


def _lag_table(lags) -> Table:
    t = Table(title="consumer-group lag", title_justify="left")
    for col in ("group", "topic", "partitions", "committed", "lag"):
        t.add_column(col, overflow="fold")
    for g in lags:
        t.add_row(g.group, g.topic, str(g.partitions), str(g.committed), str(g.lag))
    return t


def _progress(part: str, msg: str) -> None:
    err_console.print(f"[bold]{part:>20}[/] {msg}")


@app.command()
def up(
    only: Only = typer.Option(Only.all, "--only", help="'stack': the broker, ClickHouse and Triton, no consumers."),
    scale: list[str] = typer.Option([], "--scale", metavar="NAME=COUNT",
                                    help="Instances of a consumer (repeatable; 0 leaves it out). "
                                    "Default: every consumer once, or MODELBUS_STACK__CONSUMERS."),
) -> None:
    """Start the platform: the embedded stack, then every consumer under one supervisor."""
    from infra.app.stack.consumers import ConsumerSupervisor, consumer_plan, parse_scale
    from infra.app.stack.supervisor import Stack
    from infra.app.stack.triton import settings_env

    settings = load_settings()
    stack = Stack(settings)
    plan = consumer_plan(stack.settings, parse_scale(scale)) if only is Only.all else {}
    statuses = stack.up(progress=_progress)
    procs = []
    if plan:
        sup = ConsumerSupervisor(stack.settings)
        pid = sup.running_pid()
        if pid:
            _progress("consumers", f"already supervised (pid {pid}); `modelbus down` first to change them")
            procs = sup.processes()
        else:
            try:
                _progress("consumers", f"supervisor pid {sup.start(plan, {**settings_env(stack.settings)})}")
                procs = sup.wait_started(stack.settings.stack.consumer_grace_s + stack.settings.stack.start_timeout_s,
                                         progress=_progress)
            except BaseException:
                sup.stop()
                stack.stop_started()
                raise
    show(_stack_table(statuses), console)
    if procs:
        show(_process_table(procs), console)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Every process of the platform: health, restarts, last error, and consumer-group lag per topic.

    Exits 1 when a part of the stack is down or a consumer is not running.
    """
    from infra.app.stack.consumers import ConsumerSupervisor
    from infra.app.stack.supervisor import Stack

    stack = Stack(load_settings())
    statuses = stack.status()
    procs = ConsumerSupervisor(stack.settings).processes()
    lags, lag_error = [], ""
    if any(s.name == "kafka" and s.state == "running" for s in statuses):
        from infra.app.stack.lag import group_lags

        try:
            lags = group_lags(stack.settings)
        except Exception as exc:  # noqa: BLE001 - lag is advisory; status still shows the processes
            lag_error = f"lag unavailable: {exc}"
    renewals, renewal_error = [], ""
    if any(s.name == "clickhouse" and s.state in ("running", "external") for s in statuses):
        from infra.app.stack.renewals import renewals_of

        try:
            renewals = renewals_of(stack.settings)
        except Exception as exc:  # noqa: BLE001 - advisory like lag: status still shows the processes
            renewal_error = f"producer renewals unavailable: {exc}"
    bad = any(s.state not in ("running", "external") for s in statuses) or any(p.state != "running" for p in procs)
    if as_json:
        print_json({"stack": statuses, "consumers": procs, "lag": lags, "lag_error": lag_error or None,
                    "producer_renewals": renewals, "producer_renewals_error": renewal_error or None,
                    "healthy": not bad})
    else:
        show(_stack_table(statuses), console)
        if procs:
            show(_process_table(procs), console)
        if lags:
            show(_lag_table(lags), console)
        if lag_error:
            err_console.print(f"[yellow]{lag_error}[/]")
        telemetry = _telemetry_table(stack.settings.data_dir / "telemetry")
        if telemetry is not None:
            show(telemetry, console)
        if renewals:
            show(_renewals_table(renewals), console)
        if renewal_error:
            err_console.print(f"[yellow]{renewal_error}[/]")
    if bad:
        raise typer.Exit(1)


@app.command()
def logs(
    name: str = typer.Argument(..., help="A process as `status` names it: kafka, clickhouse, triton, supervisor, "
                               "training-1, ... (a consumer's name alone means its first instance)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what the process writes."),
    lines: int = typer.Option(50, "--lines", "-n", min=0, help="Lines of the end of the log to print first."),
) -> None:
    """Print the end of one process's log (under <data_dir>/logs), and follow it with -f."""
    from infra.app.stack.consumers import log_path

    path = log_path(load_settings(), name)
    with open(path, "rb") as fh:
        tail = fh.read().decode(errors="replace").splitlines()[-lines:] if lines else []
        sys.stdout.write("".join(line + "\n" for line in tail))
        sys.stdout.flush()
        while follow:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.25)


@app.command()
def down() -> None:
    """Stop every consumer, then every part of the embedded stack; no process is left behind."""
    from infra.app.stack.consumers import ConsumerSupervisor
    from infra.app.stack.supervisor import Stack

    stack = Stack(load_settings())
    sup = ConsumerSupervisor(stack.settings)
    if sup.running_pid():
        _progress("consumers", "stopping")
        sup.stop()
        _progress("consumers", "stopped")
    stack.down(progress=_progress)


@app.command()
def topics(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """List the topic catalogue: topic, events, producers and consumers."""
    from infra.kafka.topics import CATALOGUE

    s = load_settings()
    rows: list[dict[str, Any]] = [{"topic": s.topic(spec.name), "events": list(spec.events),
                                   "produced_by": spec.producers, "consumed_by": spec.consumers}
                                  for spec in CATALOGUE]
    if as_json:
        print_json(rows)
        return
    t = Table(title="Topics", title_justify="left")
    for col in ("topic", "events", "produced by", "consumed by"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["topic"], ", ".join(r["events"]), r["produced_by"], r["consumed_by"])
    show(t, console)
