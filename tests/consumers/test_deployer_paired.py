"""The deployer's paired gate on the real stack: real trained models, their test predictions in the real
artifact store, the champion scored on the challenger's rows, decisions announced over a real broker and
served by the real tritonserver."""

from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq
import pytest

from infra.kafka import EventProducer
from infra.kafka.topics import MODELS_DEPLOYED, MODELS_REGISTERED, MODELS_REJECTED
from producers.datasets import push_dataset
from producers.datasets.registry import ArtifactDatasetRegistry
from schemas.events import new_header
from tests.consumers.test_deployer import DeployerProcess, TopicLog
from trainer.predictions import read_test_predictions
from trainer.run import train_and_evaluate
from trainer.spec import DatasetInfo, TrainingSpec

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
SPEC = dict(epochs=3, batch_size=64, hidden_sizes=(16,), device="cpu", min_slice_rows=5)


class Trained:
    """Models trained once on one pushed dataset, registered under any name and version."""

    def __init__(self, store, tmp_path, churn_data):
        self.store, self.tmp = store, tmp_path
        dataset = f"churn{uuid.uuid4().hex[:6]}"
        pushed = push_dataset(churn_data(n=400), {"name": dataset, "label": "churned", "slice_by": ["region"]},
                              store=store, publisher=None, topic="unused")
        registry = ArtifactDatasetRegistry(store)
        self.ref = (dataset, pushed.version)
        self.info = DatasetInfo.from_event(registry.get(f"{dataset}@{pushed.version}").metadata)
        self.data = pq.read_table(registry.pull(f"{dataset}@{pushed.version}", tmp_path / "data")).to_pandas()
        self.runs: dict[int, tuple] = {}

    def train(self, seed: int, **spec):
        key = (seed, json.dumps(spec, sort_keys=True))
        if key not in self.runs:
            out = self.tmp / f"run-{len(self.runs)}"
            result = train_and_evaluate(self.data, self.info, TrainingSpec(**{**SPEC, "seed": seed, **spec}), out)
            self.runs[key] = (result, out)
        return self.runs[key]

    def register(self, name: str, version: int, seed: int, **spec) -> dict:
        result, out = self.train(seed, **spec)
        key = f"models/{name}/{version}"
        sig = {**result.signature, "model_name": name, "model_version": version}
        (out / "signature.json").write_text(json.dumps(sig))
        for rel in result.files.values():
            self.store.put_file(f"{key}/{rel}", out / rel)
        uri = self.store.uri(key)
        return {"header": new_header("tests"), "model_name": name, "model_version": version, "run_id": f"r{seed}",
                "dataset_name": self.ref[0], "dataset_version": self.ref[1], "artifact_uri": uri,
                "checksum": result.checksum, "task": result.task, "primary_metric": result.primary_metric,
                "higher_is_better": result.higher_is_better, "metrics": result.metrics,
                "baseline_metrics": result.baseline_metrics, "slice_metrics": result.slice_metrics,
                "reference_stats": result.reference_stats, "signature_json": json.dumps(sig),
                "labels": result.labels, "params_json": "{}", "code_version": "", "report_uri": None,
                "test_predictions_uri": f"{uri}/{result.files['test_predictions']}",
                "behaviour_tests": list(result.behaviour_tests)}

    def test_ids(self, seed: int) -> list[str]:
        result, out = self.train(seed)
        return list(read_test_predictions(out / result.files["test_predictions"])[0])


def test_paired_gate_on_the_real_stack(isolated_settings, serving_settings, artifact_store, churn_data,
                                       one_torch_thread, tmp_path):
    lenient, strict, behave = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("pair", "strict", "behave"))
    s = isolated_settings.with_overrides(
        triton=serving_settings.triton.model_dump(), artifacts=serving_settings.artifacts.model_dump(),
        serving={"policies": {lenient: {"baseline_margin": 1.0, "primary_metric_margin": 1.0},
                              strict: {"baseline_margin": 1.0, "champion_rule": "superiority",
                                       "primary_metric_margin": 0.0},
                              behave: {"baseline_margin": 1.0}}})
    models = Trained(artifact_store, tmp_path, churn_data)
    assert models.test_ids(0) == models.test_ids(5), "the seed does not move the test rows"
    n_test = len(models.test_ids(0))
    producer = EventProducer(s, name="tests")
    deployed, rejected = TopicLog(s, MODELS_DEPLOYED), TopicLog(s, MODELS_REJECTED)
    proc = DeployerProcess(s, tmp_path / "deployer.log")

    def register(value):
        producer.publish(s.topic(MODELS_REGISTERED), "ModelRegistered", value, key=value["model_name"])

    try:
        proc.start()
        v1 = models.register(lenient, 1, seed=0)
        register(v1)
        ev = deployed.wait(lambda vs: any(v["model_name"] == lenient for v in vs), timeout=120,
                           why=f"{lenient} v1 deployed\n{proc.log()}")[-1]
        base = {c["name"]: c for c in ev["checks"]}["beats_baseline:boosting"]
        assert base["n"] == n_test and base["rule"] == "non_inferiority" and base["ci_low"] is not None

        # A challenger with another seed: the champion's artifact is scored on the challenger's rows.
        register(models.register(lenient, 2, seed=5))
        ev = deployed.wait(lambda vs: sum(v["model_name"] == lenient for v in vs) >= 2, timeout=120,
                           why=f"{lenient} v2 deployed\n{proc.log()}")[-1]
        champ = {c["name"]: c for c in ev["checks"]}["beats_champion"]
        assert ev["model_version"] == 2 and champ["n"] == n_test
        assert champ["reference_value"] == pytest.approx(v1["metrics"][v1["primary_metric"]], abs=1e-5)
        assert champ["ci_low"] <= champ["difference"] <= champ["ci_high"]
        assert any(c["name"].startswith("slice:region=") and c["n"] for c in ev["checks"])

        # The same model again is a tie (gain exactly 0): superiority rejects it, with its numbers.
        register(models.register(strict, 1, seed=0))
        deployed.wait(lambda vs: any(v["model_name"] == strict for v in vs), timeout=120,
                      why=f"{strict} v1 deployed\n{proc.log()}")
        register(models.register(strict, 2, seed=0))
        rej = rejected.wait(lambda vs: any(v["model_name"] == strict for v in vs), timeout=120,
                            why=f"{strict} v2 rejected\n{proc.log()}")[-1]
        tie = {c["name"]: c for c in rej["checks"]}["beats_champion"]
        assert (rej["model_version"], rej["stage"]) == (2, "gate") and not tie["passed"]
        assert (tie["difference"], tie["ci_low"], tie["ci_high"], tie["rule"]) == (0.0, 0.0, 0.0, "superiority")
        assert tie["n"] == n_test

        # A trained model whose declared behavioural test fails is rejected with the test's numbers.
        noisy = {"name": "heavy_noise", "kind": "noise", "sigma": 10.0, "metric": "log_loss", "max_drop": 0.0}
        register(models.register(behave, 1, seed=0, epochs=15, lr=0.01, behaviour_tests=[noisy]))
        rej = rejected.wait(lambda vs: any(v["model_name"] == behave for v in vs), timeout=120,
                            why=f"{behave} v1 rejected")[-1]
        failed = [c for c in rej["checks"] if not c["passed"]]
        assert [c["name"] for c in failed] == ["behaviour:heavy_noise"], rej["reason"]
        assert failed[0]["n"] == n_test and failed[0]["value"] > 0.0 and failed[0]["threshold"] == 0.0
        assert "log_loss" in rej["reason"] and failed[0]["rule"] == "behaviour"
    finally:
        proc.stop()
        deployed.close()
        rejected.close()
