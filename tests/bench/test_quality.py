"""The quality suite on its two quick datasets, through the real embedded loop (stack, training and deployer
processes): its JSON and table have the documented shape and hold the loop's real numbers."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROW_KEYS = {"dataset", "task", "source", "rows", "primary_metric", "higher_is_better", "model", "baselines",
            "best_baseline", "best_baseline_value", "difference", "ci_low", "ci_high", "ci_confidence",
            "non_inferior", "beats_linear", "boosting_beats_linear", "deployed", "decision_reason", "train_s",
            "loop_s", "null_warnings", "margin", "test_rows", "verdict", "test_rows_needed"}


def test_quick_quality_suite_reports_the_loop_s_models_against_their_baselines(tmp_path, monkeypatch):
    from bench import bench_quality as Q
    from bench.bench_quality_data import QUICK

    for key in [k for k in os.environ if k.startswith("MODELBUS_")]:
        monkeypatch.delenv(key)
    records = Q.run(quick=True, out_dir=tmp_path)
    doc = json.loads((tmp_path / "quality.json").read_text())
    rows = {r["dataset"]: r for r in doc["rows"]}
    assert list(rows) == list(QUICK) and all(set(r) == ROW_KEYS for r in rows.values())
    for r in rows.values():
        sign = 1 if r["higher_is_better"] else -1
        assert r["best_baseline"] in r["baselines"] and r["best_baseline_value"] == pytest.approx(
            r["baselines"][r["best_baseline"]], abs=0.05)
        assert r["difference"] == pytest.approx(sign * (r["model"] - r["best_baseline_value"]), abs=0.05)
        # deployed is the gate's real verdict (paired, on the same rows), reported either way, never assumed
        assert isinstance(r["deployed"], bool) and 0 < r["train_s"] <= Q.TRAIN_BUDGET_S and r["loop_s"] >= r["train_s"]
        assert r["deployed"] or r["decision_reason"]   # a rejection always says why
        assert (r["ci_low"] is None) == (r["non_inferior"] is None)   # CI from the gate, or clearly n/a
        if r["ci_low"] is not None:   # the margin is in the metric's units and the CI says on how many rows
            assert r["margin"] > 0 and r["test_rows"] > 0
            assert r["non_inferior"] == (r["ci_low"] > -r["margin"]) == (r["verdict"] == "non-inferior")
            assert (r["verdict"] == "inferior") == (r["ci_high"] < -r["margin"])
    assert rows["penguins_species"]["rows"] == 344 and rows["penguins_species"]["null_warnings"]
    assert rows["diabetes"]["primary_metric"] == "rmse" and rows["diabetes"]["higher_is_better"] is False
    table = (tmp_path / "quality.md").read_text()
    assert table.startswith("| dataset | task | metric | model |") and all(name in table for name in QUICK)
    assert doc["targets"]["datasets"] == 2 and doc["targets"]["deployed"] == sum(r["deployed"] for r in rows.values())
    assert [r["met"] for r in records][-1] is True and len(records) == len(QUICK) + 2


def test_verdict_and_rows_needed_read_the_interval_as_a_non_inferiority_trial():
    from bench.bench_quality import rows_needed, verdict

    assert [verdict(-0.005, 0.02, 0.01), verdict(-0.05, 0.02, 0.01), verdict(-0.05, -0.02, 0.01),
            verdict(None, None, 0.01)] == ["non-inferior", "inconclusive", "inferior", "n/a"]
    # gain 0, half-width 0.04 on 50 rows: the half-width must fall to 0.01, i.e. 16x the rows
    assert rows_needed(50, 0.0, -0.04, 0.04, 0.01) == 800
    assert rows_needed(50, -0.02, -0.06, 0.02, 0.01) is None      # the observed gain itself is below -margin
    assert rows_needed(50, 0.0, -0.005, 0.005, 0.01) is None      # already non-inferior
