"""``runs show`` model tables: slices, behavioural tests and the gate's checks with intervals, from ClickHouse."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from consumers.deploy_events import rejected_event
from infra.app.cli.train_gate import model_tables
from infra.clickhouse.migrate import migrate
from infra.clickhouse.rows import json_each_row, rows_for
from infra.clickhouse.store import ChdbStore
from infra.settings import load_settings
from schemas.events import new_header
from serving.gate import GatePolicy, evaluate
from serving.paired import PairedRows


def test_show_lists_slices_behaviour_and_gate_checks_with_intervals(tmp_path):
    settings = load_settings()
    store = ChdbStore(tmp_path / "ch", database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    behaviour = [{"name": "region_swap", "kind": "invariance", "passed": False, "n": 40, "value": 0.25,
                  "threshold": 0.0, "detail": "changed on 25%"}]
    registered = {"header": new_header("tests"), "model_name": "churn", "model_version": 2, "run_id": "run-1",
                  "dataset_name": "churn", "dataset_version": "v1", "artifact_uri": "file:///a", "checksum": "0" * 64,
                  "task": "binary", "primary_metric": "roc_auc", "higher_is_better": True,
                  "metrics": {"roc_auc": 0.9}, "baseline_metrics": {"linear": {"roc_auc": 0.8}},
                  "slice_metrics": [{"column": "region", "value": "EU", "count": 40, "metrics": {"roc_auc": 0.91}}],
                  "reference_stats": [], "signature_json": "{}", "labels": ["no", "yes"], "params_json": "{}",
                  "code_version": "", "report_uri": None, "test_predictions_uri": "file:///a/p.parquet",
                  "behaviour_tests": behaviour}
    y = np.array([0, 1] * 20)
    p = lambda v: np.stack([1 - v, v], axis=1)  # noqa: E731
    rows = PairedRows("binary", np.array([str(i) for i in range(40)], dtype=object), y,
                      {"candidate": p(y * 0.9), "linear": p(np.full(40, 0.5)), "champion": p(y * 0.8)})
    decision = evaluate(registered, {"model_name": "churn", "model_version": 1, "metrics": {"roc_auc": 1.0}},
                        GatePolicy(), rows)
    assert not decision.passed   # the behavioural test failed
    rejected = rejected_event(registered, decision, stage="gate", reason=decision.reason, champion_version=1)
    for event_type, value in (("ModelRegistered", registered), ("DeploymentRejected", rejected)):
        for table, table_rows in rows_for(event_type, value).items():
            store.insert_raw(table, json_each_row(table_rows), "JSONEachRow")

    tables = model_tables(store, "run-1", {"model_name": "churn", "model_version": 2, "primary_metric": "roc_auc"})
    console = Console(width=200, record=True)
    for t in tables:
        console.print(t)
    text = console.export_text()
    assert [t.title for t in tables] == ["slices (test split)", "behavioural tests", "gate (rejected)"]
    assert "region=EU" in text and "0.91" in text and "region_swap" in text and "0.25" in text
    champ = next(c for c in decision.checks if c["name"] == "beats_champion")
    assert f"[{champ['ci_low']:+.4g}, {champ['ci_high']:+.4g}]" in text and "non_inferiority" in text
    assert "behaviour:region_swap" in text
