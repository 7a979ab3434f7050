"""The one output rule of every command: whole tab-separated rows off a terminal, one parseable JSON document."""

from __future__ import annotations

import datetime as dt
import json

from rich.console import Group
from rich.table import Table

from infra.app.cli import output


def _table() -> Table:
    t = Table(title="[bold]training runs[/] (2)")
    for col in ("run", "status", "metrics"):
        t.add_column(col)
    t.add_row("churn-" + "a" * 60, "[green]finished[/]", "roc_auc=0.81\tf1=0.7")
    t.add_row("churn-b", "[red]failed[/]", "line one\nline two")
    return t


def test_a_table_off_a_terminal_is_whole_tab_separated_rows(capsys, monkeypatch):
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: False)
    output.show(Group(_table(), "[dim]a note that stays one line however long it is " + "x" * 200 + "[/]"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["# training runs (2)", "run\tstatus\tmetrics",
                         f"churn-{'a' * 60}\tfinished\troc_auc=0.81 f1=0.7", "churn-b\tfailed\tline one line two"]
    assert len(lines) == 5 and lines[4].endswith("x" * 200)


def test_json_is_one_document_with_dates_and_no_nan(capsys):
    output.print_json({"when": dt.datetime(2026, 1, 2, 3, 4, 5), "loss": float("nan"), "rows": [(1, 2)]})
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"when": "2026-01-02T03:04:05", "loss": None, "rows": [[1, 2]]}


def test_a_table_as_json_records():
    doc = output.table_records(_table())
    assert doc["title"] == "training runs (2)" and doc["rows"][1] == {
        "run": "churn-b", "status": "failed", "metrics": "line one line two"}
