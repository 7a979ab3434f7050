import json

import numpy as np
import pandas as pd
import pytest
import torch

from schemas import AvroCodec
from schemas.events import new_header
from trainer.errors import TrainingCheckError
from trainer.evaluate import compute_metrics
from trainer.export import load_exported, predict_columns
from trainer.predictions import read_test_predictions
from trainer.run import train_and_evaluate
from trainer.spec import DatasetInfo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _stable(result):
    """Everything a rerun must reproduce exactly (timings and paths aside)."""
    history = [{k: v for k, v in h.items() if k not in ("epoch_s", "train_s", "samples_per_s")}
               for h in result.history]
    return (result.metrics, result.baseline_metrics, result.slice_metrics, result.reference_stats, history,
            result.labels, result.signature)


def test_binary_run_writes_the_artifact_layout_and_result(tabular, make_info, fast, tmp_path):
    epochs = []
    result = train_and_evaluate(tabular(), make_info(), fast(epochs=5, lr=0.01), tmp_path,
                                on_epoch=lambda e, m: epochs.append(m))
    for name in ("model.pt", "signature.json", "preprocess.json", "metrics.json", "sample_input.json",
                 "sample_output.json", "report/report.md", "report/confusion_matrix.png", "report/roc_curve.png",
                 "report/pr_curve.png", "report/calibration.png", "report/slices.csv", "report/worst_errors.csv"):
        assert (tmp_path / name).is_file(), name
    assert set(result.files.values()) >= {"model.pt", "signature.json", "report/report.md"}
    assert result.primary_metric == "roc_auc" and result.higher_is_better
    assert result.labels == ["no", "yes"]
    assert set(result.baseline_metrics) == {"majority", "linear", "boosting"}
    assert result.baseline_metrics["majority"]["roc_auc"] == 0.5
    assert 0.5 < result.metrics["roc_auc"] <= 1.0
    assert {s["value"] for s in result.slice_metrics} == {"EU", "US"}
    assert [s["name"] for s in result.reference_stats] == ["age", "income k$", "city", "__prediction__"]
    assert result.reference_stats[-1]["kind"] == "categorical"
    assert set(result.environment) >= {"python", "torch", "device", "cuda", "host"}
    assert "modelbus-" in result.code_version
    assert len(epochs) == 5 and {"train_loss", "val_loss", "lr", "val_accuracy"} <= set(epochs[0])
    metrics_doc = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics_doc["metrics"] == result.metrics and metrics_doc["primary_metric"] == "roc_auc"
    report = (tmp_path / "report/report.md").read_text()
    assert "| metric | model | majority | linear | boosting |" in report and "**roc_auc**" in report
    worst = pd.read_csv(tmp_path / "report/worst_errors.csv")
    assert {"row", "age", "city", "label", "prediction", "confidence"} <= set(worst.columns)
    assert worst["log_loss"].is_monotonic_decreasing


def test_same_data_spec_and_seed_give_identical_results(tabular, make_info, fast, tmp_path):
    df, info, spec = tabular(), make_info(), fast(epochs=2)
    a = train_and_evaluate(df, info, spec, tmp_path / "a")
    b = train_and_evaluate(df, info, spec, tmp_path / "b")
    assert _stable(a) == _stable(b)
    c = train_and_evaluate(df, info, fast(epochs=2, seed=1), tmp_path / "c")
    assert c.metrics != a.metrics


def test_a_seed_change_leaves_the_test_rows_identical(tabular, make_info, fast, tmp_path):
    """The seed moves the model, never the evaluation set; the stored rows pair every model and baseline."""
    df, info = tabular(), make_info()
    a = train_and_evaluate(df, info, fast(epochs=2, seed=0), tmp_path / "a")
    b = train_and_evaluate(df, info, fast(epochs=2, seed=7), tmp_path / "b")
    ids_a, y_a, out_a, slices_a = read_test_predictions(tmp_path / "a" / a.files["test_predictions"])
    ids_b, y_b, out_b, _ = read_test_predictions(tmp_path / "b" / b.files["test_predictions"])
    assert list(ids_a) == list(ids_b) and np.array_equal(y_a, y_b) and len(ids_a) == a.split_sizes["test"]
    assert set(out_a) == {"candidate", "majority", "linear", "boosting"}
    assert not np.allclose(out_a["candidate"], out_b["candidate"])
    assert compute_metrics("binary", y_a, out_a["boosting"]) == pytest.approx(a.baseline_metrics["boosting"])
    assert compute_metrics("binary", y_a, out_a["candidate"]) == pytest.approx(a.metrics)
    assert set(slices_a) == {"region"}


def test_behavioural_tests_run_on_the_exported_model(tabular, make_info, fast, tmp_path):
    spec = fast(epochs=2, behaviour_tests=[
        {"name": "city_swap", "kind": "invariance", "column": "city"},
        {"name": "city_swap_lenient", "kind": "invariance", "column": "city", "max_failure_rate": 1.0},
        {"name": "noise", "kind": "noise", "sigma": 0.05, "max_drop": 1.0}])
    result = train_and_evaluate(tabular(), make_info(), spec, tmp_path)
    by = {r["name"]: r for r in result.behaviour_tests}
    assert by["city_swap_lenient"]["passed"] and by["noise"]["passed"]
    assert by["city_swap"]["n"] == result.split_sizes["test"] and 0 <= by["city_swap"]["value"] <= 1
    assert by["city_swap"]["passed"] == (by["city_swap"]["value"] == 0.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["behaviour_tests"] == list(result.behaviour_tests)
    with pytest.raises(TrainingCheckError, match="not a model input"):
        train_and_evaluate(tabular(), make_info(), fast(epochs=1, behaviour_tests=[
            {"name": "x", "kind": "invariance", "column": "nope"}]), tmp_path / "bad")


def test_result_fills_model_registered_and_training_run_updated_events(tabular, make_info, fast, tmp_path):
    result = train_and_evaluate(tabular(task="multiclass"), make_info("multiclass"), fast(), tmp_path)
    assert result.primary_metric == "macro_f1" and result.labels == ["high", "low", "mid"]
    assert "roc_auc" in result.metrics
    codec = AvroCodec()
    registered = {
        "header": new_header("trainer.test"), "model_name": "churn", "model_version": 1, "run_id": "r1",
        "dataset_name": "churn", "dataset_version": "v1", "artifact_uri": str(tmp_path),
        "checksum": result.checksum, "task": result.task, "primary_metric": result.primary_metric,
        "higher_is_better": result.higher_is_better, "metrics": result.metrics,
        "baseline_metrics": result.baseline_metrics, "slice_metrics": result.slice_metrics,
        "reference_stats": result.reference_stats, "signature_json": json.dumps(result.signature),
        "labels": result.labels, "params_json": json.dumps(result.params), "code_version": result.code_version,
        "report_uri": None}
    decoded = codec.decode(codec.serializer("ModelRegistered")(registered)).value
    assert decoded["metrics"] == result.metrics and decoded["slice_metrics"] == result.slice_metrics
    update = {"header": new_header("trainer.test"), "run_id": "r1", "status": "finished", "dataset_name": "churn",
              "dataset_version": "v1", "model_name": "churn", "metrics": result.final_metrics(),
              "seed": result.seed, "environment": result.environment, "duration_s": result.duration_s,
              "code_version": result.code_version, "params_json": json.dumps(result.params)}
    decoded = codec.decode(codec.serializer("TrainingRunUpdated")(update)).value
    assert decoded["metrics"]["baseline_majority_macro_f1"] == result.baseline_metrics["majority"]["macro_f1"]


def test_regression_run_exports_predictions_in_label_units(tabular, make_info, fast, tmp_path):
    df = tabular(task="regression")
    result = train_and_evaluate(df, make_info("regression", time_column="ts"), fast(epochs=5, lr=0.01), tmp_path)
    assert result.primary_metric == "rmse" and not result.higher_is_better
    assert result.split_sizes["test"] == 36 and result.labels == []
    assert result.metrics["rmse"] < result.baseline_metrics["mean"]["rmse"]
    model, sig = load_exported(tmp_path)
    assert sig["outputs"][1] == {"name": "label__1", "dtype": "FP32", "dims": [1]}
    out = predict_columns(model, sig, {c: df[c].head(50).tolist() for c in ("age", "income k$", "city")})
    assert np.array_equal(out["scores__0"], out["label__1"])
    assert abs(out["scores__0"].mean() - df["label"].mean()) < df["label"].std()  # label units, not standardized


def test_cnn_trains_on_small_image_arrays_and_exports_an_image_input(fast, tmp_path):
    rng = np.random.default_rng(0)
    n = 160
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    x[y == 1, :, :4, :] += 1.5  # bright top half for class 1
    x[3, 0, 0, 0] = np.nan
    info = DatasetInfo(task="binary", label_column="digit", feature_columns=("pixels",), image_shape=(1, 8, 8),
                       name="blobs")
    result = train_and_evaluate((x, y), info, fast(epochs=4, lr=0.01, cnn_channels=(4, 8)), tmp_path)
    assert result.params["resolved_model"] == "cnn"
    assert result.signature["inputs"] == [
        {"name": "image", "column": "pixels", "kind": "image", "dtype": "FP32", "dims": [1, 8, 8]}]
    assert result.metrics["roc_auc"] > 0.8
    model, sig = load_exported(tmp_path)
    sample = json.loads((tmp_path / "sample_input.json").read_text())
    out = predict_columns(model, sig, sample)
    assert out["scores__0"].shape == (4, 2)
    assert np.allclose(out["scores__0"], json.loads((tmp_path / "sample_output.json").read_text())["scores__0"])
    assert [s["name"] for s in result.reference_stats] == ["__prediction__"]


def test_checks_run_before_training(tabular, make_info, fast, tmp_path):
    df = tabular()
    df["leak"] = df["label"]
    with pytest.raises(TrainingCheckError, match="leak"):
        train_and_evaluate(df, make_info(feature_columns=("age", "leak")), fast(), tmp_path)
    with pytest.raises(TrainingCheckError, match="multiclass"):
        train_and_evaluate(tabular(task="multiclass"), make_info("binary"), fast(), tmp_path)
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_ddp_world_size_2_on_cpu_with_gloo(tabular, make_info, fast, tmp_path):
    epochs = []
    result = train_and_evaluate(tabular(), make_info(), fast(epochs=2, world_size=2), tmp_path / "out",
                                checkpoint_dir=tmp_path / "ck", on_epoch=lambda e, m: epochs.append(e))
    assert epochs == [1, 2] and result.epochs_run == 2
    assert result.environment["world_size"] == "2"
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()
    assert 0.0 <= result.metrics["roc_auc"] <= 1.0
    model, sig = load_exported(tmp_path / "out", checksum=result.checksum)
    assert predict_columns(model, sig, {"age": [30.0], "income k$": [12.0], "city": ["nice"]})["scores__0"].shape \
        == (1, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_amp_exports_a_cpu_model(tabular, make_info, fast, tmp_path):
    result = train_and_evaluate(tabular(), make_info(), fast(device="cuda", amp=True, epochs=4, lr=0.01), tmp_path)
    assert result.environment["device"].startswith("cuda") and "gpu" in result.environment
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    model, sig = load_exported(tmp_path, checksum=result.checksum)
    sample = json.loads((tmp_path / "sample_input.json").read_text())
    assert predict_columns(model, sig, sample)["scores__0"].shape == (4, 2)
