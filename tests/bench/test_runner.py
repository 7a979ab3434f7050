"""`modelbus bench`: the installed command runs a suite for real and writes the report in its documented shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RECORD_KEYS = {"figure", "value", "unit", "baseline", "baseline_value", "ratio", "target", "met"}


def _modelbus(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    # run from elsewhere than the repository: the bench package must come from the installation
    return subprocess.run([sys.executable, "-m", "infra.app.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_quick_kafka_suite_writes_json_and_markdown_reports(tmp_path):
    out = tmp_path / "results"
    proc = _modelbus("bench", "--quick", "--only", "kafka", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    assert report["quick"] is True and report["failures"] == []
    assert {"python", "cpus", "torch", "cuda"} <= set(report["machine"])
    records = report["records"]
    assert records and all(RECORD_KEYS <= set(r) for r in records)
    ratios = [r for r in records if r["baseline"] is not None]
    assert ratios and all(r["ratio"] == pytest.approx(r["value"] / r["baseline_value"], abs=2e-3) for r in ratios)
    assert all(isinstance(r["met"], bool) for r in ratios if r["target"] is not None)
    md = (out / "latest.md").read_text()
    assert all(r["figure"] in md for r in records)


def test_unknown_suite_is_refused_with_the_known_ones(tmp_path):
    proc = _modelbus("bench", "--only", "kafak", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "kafak" in proc.stderr and "kafka" in proc.stderr
    assert not (tmp_path / "latest.json").exists()
