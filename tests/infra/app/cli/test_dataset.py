"""``modelbus dataset push|list|show|pull`` end to end, settings from the environment like a user's shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from infra.app.cli.dataset import dataset_app
from infra.app.stack.triton import settings_env
from infra.kafka import topics
from tests.producers.conftest import read_events

pytestmark = pytest.mark.stack


@pytest.fixture
def env(isolated_settings, tmp_path):
    settings = isolated_settings.with_overrides(artifacts={"root": str(tmp_path / "artifacts")})
    return settings, {**settings_env(settings), "COLUMNS": "200"}


def _run(env, *args):
    return CliRunner().invoke(dataset_app, list(args), env=env, catch_exceptions=False)


def test_push_list_show_pull(env, csv_file, tmp_path):
    settings, environ = env
    r = _run(environ, "push", str(csv_file), "--name", "churn", "--label", "churned", "--slice-by", "region",
             "--tag", "team=growth", "--expect", "age:range=0..120", "--expect", "plan:allowed=basic,pro")
    assert r.exit_code == 0, r.output
    assert "pushed churn@" in r.output and "DatasetCreated event" in r.output
    version = r.output.split("churn@")[1][:16]
    r = _run(environ, "push", str(csv_file), "--name", "churn", "--label", "churned", "--slice-by", "region",
             "--tag", "team=growth", "--expect", "age:range=0..120", "--expect", "plan:allowed=basic,pro")
    assert r.exit_code == 0 and "unchanged" in r.output and "event" not in r.output
    assert len(read_events(settings, topics.DATASETS_CREATED, expect=1, settle=1.0)) == 1

    r = _run(environ, "list")
    assert r.exit_code == 0 and "churn" in r.output and version in r.output
    r = _run(environ, "list", "churn", "--json")
    assert [v["version"] for v in json.loads(r.output)] == [version]
    r = _run(environ, "show", f"churn@{version[:6]}")
    assert r.exit_code == 0 and "feature, slice" in r.output and "label" in r.output and "team=growth" in r.output
    meta = json.loads(_run(environ, "show", "churn", "--json").output)
    assert meta["version"] == version and meta["spec"]["expectations"][0]["max"] == 120

    r = _run(environ, "pull", f"churn@{version}", "-o", str(tmp_path / "out.parquet"))
    assert r.exit_code == 0, r.output
    stored = tmp_path / "artifacts" / "datasets" / "churn" / version / "data" / "part-00000.parquet"
    assert (tmp_path / "out.parquet").read_bytes() == stored.read_bytes()


def test_refusals_exit_2_with_a_report(env, frame, tmp_path):
    _, environ = env
    one_class = tmp_path / "one.csv"
    frame.assign(churned="no", age=frame["age"].astype(object).where(frame.index != 3, "old")).to_csv(
        one_class, index=False)
    r = _run(environ, "push", str(one_class), "--name", "churn", "--label", "churned")
    assert r.exit_code == 2
    assert "single class" in r.output and "'old'" in r.output  # the table lists every failed check
    assert "error: dataset 'churn' refused: 2 check(s) failed" in r.output
    r = _run(environ, "push", str(one_class), "--name", "../etc")
    assert r.exit_code == 2 and "invalid dataset name '../etc'" in r.output
    r = _run(environ, "push", str(one_class), "--name", "x", "--expect", "age:between=1")
    assert r.exit_code == 2 and "unknown rule" in r.output
    r = _run(environ, "pull", "churn@abcdef12")
    assert r.exit_code == 2 and "no dataset named 'churn'" in r.output
    assert not (tmp_path / "artifacts").exists() or list((tmp_path / "artifacts").rglob("*.parquet")) == []


def test_entry_point_exit_code(env, tmp_path):
    _, environ = env
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "infra.app.cli.main", "dataset", "push", str(empty), "--name", "e"],
                          env={**os.environ, **environ}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "file is empty" in proc.stderr
