"""The deployer's gate evidence with real parts: a dataset pushed into a real (local) artifact store, two models
trained by the real trainer, and the champion's TorchScript artifact scored on the challenger's test rows."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from consumers.gate_evidence import paired_rows
from infra.settings import load_settings
from infra.storage.factory import store_from_settings
from producers.datasets import push_dataset
from producers.datasets.registry import ArtifactDatasetRegistry
from serving.gate import GatePolicy, evaluate
from trainer.predictions import read_test_predictions
from trainer.run import train_and_evaluate
from trainer.spec import DatasetInfo, TrainingSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SPEC = dict(epochs=3, batch_size=64, hidden_sizes=(16,), device="cpu", min_slice_rows=5)


def _register(store, tmp_path, data, info, version, seed, dataset_version):
    out = tmp_path / f"export-{version}"
    result = train_and_evaluate(data, info, TrainingSpec(seed=seed, **SPEC), out, model_version=version)
    key = f"models/churn/{version}"
    for rel in result.files.values():
        store.put_file(f"{key}/{rel}", out / rel)
    uri = store.uri(key)
    value = {"model_name": "churn", "model_version": version, "dataset_name": "churn",
             "dataset_version": dataset_version, "artifact_uri": uri, "checksum": result.checksum,
             "task": result.task, "labels": result.labels, "primary_metric": result.primary_metric,
             "higher_is_better": result.higher_is_better, "metrics": result.metrics,
             "baseline_metrics": result.baseline_metrics, "slice_metrics": result.slice_metrics,
             "test_predictions_uri": f"{uri}/{result.files['test_predictions']}", "behaviour_tests": []}
    return value, read_test_predictions(out / result.files["test_predictions"])


def test_champion_and_challenger_are_compared_on_the_same_rows(tmp_path, churn_data, one_torch_thread):
    settings = load_settings(artifacts={"root": str(tmp_path / "artifacts")})
    store = store_from_settings(settings)
    pushed = push_dataset(churn_data(n=400), {"name": "churn", "label": "churned", "slice_by": ["region"]},
                          store=store, publisher=None, topic="unused")
    registry = ArtifactDatasetRegistry(store)
    info = DatasetInfo.from_event(registry.get(f"churn@{pushed.version}").metadata)
    data = pq.read_table(registry.pull(f"churn@{pushed.version}", tmp_path / "data")).to_pandas()

    champion, (champ_ids, _, champ_out, _) = _register(store, tmp_path, data, info, 1, 0, pushed.version)
    challenger, (ids, y, outputs, slices) = _register(store, tmp_path, data, info, 2, 5, pushed.version)
    shutil.rmtree(tmp_path / "export-1")   # the champion is scored from the store, not from a local copy

    rows = paired_rows(store, challenger, champion)
    assert list(rows.row_ids) == list(ids) == list(champ_ids), "a seed change did not move the test rows"
    assert np.array_equal(rows.y, y) and set(rows.outputs) == {"candidate", "majority", "linear", "boosting",
                                                                "champion"}
    # The deployer's in-process scoring of the champion artifact reproduces the champion's own test outputs.
    assert rows.outputs["champion"] == pytest.approx(champ_out["candidate"], abs=1e-5)
    assert np.array_equal(rows.slices["region"], slices["region"])

    decision = evaluate(challenger, champion, GatePolicy(), rows)
    checks = {c["name"]: c for c in decision.checks}
    c = checks["beats_champion"]
    assert c["n"] == len(ids) and c["ci_low"] <= c["difference"] <= c["ci_high"]
    assert c["reference_value"] == pytest.approx(champion["metrics"][champion["primary_metric"]], abs=1e-6)
    assert {f"slice:region={v}" for v in set(slices["region"])} <= set(checks)
    assert {"beats_baseline:boosting", "beats_baseline:linear", "beats_baseline:majority"} <= set(checks)


def test_a_candidate_without_stored_predictions_has_no_paired_rows(tmp_path):
    store = store_from_settings(load_settings(artifacts={"root": str(tmp_path / "artifacts")}))
    assert paired_rows(store, {"model_name": "churn", "test_predictions_uri": None}, None) is None
