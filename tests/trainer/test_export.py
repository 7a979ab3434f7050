import json

import numpy as np
import pandas as pd
import pytest
import torch

from infra.storage.base import sha256_file
from trainer.data import Table, as_table, encode_labels, split_indices
from trainer.errors import ExportError
from trainer.evaluate import compute_metrics
from trainer.export import export_model, load_exported, load_signature, predict_columns, script_model, set_model_version
from trainer.models import ModelConfig, build_model
from trainer.preprocess import fit_preprocessing
from trainer.run import train_and_evaluate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RAW = {  # includes an unseen category, a missing category, NaN and inf
    "age": [25.0, np.nan, 61.0, np.inf, 40.0],
    "income k$": [10.0, 20.0, np.nan, 5.0, 30.0],
    "city": ["paris", "atlantis", None, "lyon", "nice"],
}


def _fitted(task, frame, labels=2):
    table = Table(frame)
    prep = fit_preprocessing(table, ["age", "income k$", "city"], np.arange(len(frame)),
                             y_train=frame["label"].to_numpy(dtype=float) if task == "regression" else None)
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", n_outputs=1 if task == "regression" else labels, hidden_sizes=(8,),
                                  n_numeric=len(prep.numeric), cardinalities=tuple(prep.cardinalities))).eval()
    return prep, net


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_scripted_model_matches_eager_model_on_raw_inputs(tabular, task):
    frame = tabular(task="binary" if task == "binary" else "regression")
    prep, net = _fitted(task, frame)
    scripted = script_model(net, prep, task)
    args = [torch.tensor(RAW["age"], dtype=torch.float32).reshape(-1, 1),
            torch.tensor(RAW["income k$"], dtype=torch.float32).reshape(-1, 1), list(map(str, ["paris", "atlantis",
                                                                                               "", "lyon", "nice"]))]
    scores, label = scripted(*args)
    with torch.no_grad():
        raw = net(*prep.encode_columns({k: pd.Series(v) for k, v in RAW.items()}, 5))
    if task == "binary":
        assert torch.equal(scores, torch.softmax(raw, dim=1))
        assert label.dtype == torch.int64 and label.shape == (5, 1)
        assert torch.equal(label[:, 0], scores.argmax(1))
    else:
        expected = raw * prep.target_std + prep.target_mean
        assert torch.allclose(scores, expected) and torch.equal(scores, label)
        assert scores.dtype == torch.float32 and scores.shape == (5, 1)
    assert torch.isfinite(scores).all()


def test_forward_arguments_follow_the_signature_and_bad_shapes_are_named(tabular, tmp_path):
    frame = tabular()
    prep, net = _fitted("binary", frame)
    res = export_model(tmp_path, net, prep, task="binary", labels=["no", "yes"], model_name="churn")
    sig = load_signature(tmp_path)
    assert [i["name"] for i in sig["inputs"]] == ["age", "income_k_", "city"]
    assert [i["column"] for i in sig["inputs"]] == ["age", "income k$", "city"]
    assert [(i["kind"], i["dtype"], i["dims"]) for i in sig["inputs"]] == [
        ("numeric", "FP32", [1]), ("numeric", "FP32", [1]), ("categorical", "BYTES", [1])]
    assert sig["outputs"] == [{"name": "scores__0", "dtype": "FP32", "dims": [2]},
                              {"name": "label__1", "dtype": "INT64", "dims": [1]}]
    assert sig["labels"] == ["no", "yes"] and sig["model_name"] == "churn"
    model, _ = load_exported(tmp_path, checksum=res.checksum)
    assert model.forward.schema.arguments[1].name == "age"
    assert [a.name for a in model.forward.schema.arguments[1:]] == ["age", "income_k_", "city"]
    by_name = predict_columns(model, sig, {"age": [1.0], "income_k_": [2.0], "city": ["nice"]})
    assert by_name["scores__0"].shape == (1, 2)
    with pytest.raises(ExportError, match="'city'"):
        predict_columns(model, sig, {"age": [1.0], "income k$": [2.0]})
    with pytest.raises(ExportError, match="city"):
        predict_columns(model, sig, {"age": [1.0, 2.0], "income k$": [2.0, 3.0], "city": ["nice"]})


def test_torchscript_file_format_is_one_older_libtorch_reads(tabular, tmp_path):
    """Production runs the step models in the libtorch of Triton 24.10 (PyTorch 2.5), not in torch 2.13.

    libtorch refuses archives whose declared file format version exceeds its
    kMaxSupportedFileFormatVersion (10 from PyTorch 1.x through 2.5); torch declares
    the lowest version the operators used need, so a new operator would raise it.
    """
    import zipfile

    prep, net = _fitted("binary", tabular())
    export_model(tmp_path, net, prep, task="binary", labels=["no", "yes"], model_name="churn")
    with zipfile.ZipFile(tmp_path / "model.pt") as archive:
        [record] = [n for n in archive.namelist() if n.endswith("/version") and n.count("/") == 1]
        declared = int(archive.read(record))
    assert 1 <= declared <= 10


def test_checksum_and_signature_errors(tabular, tmp_path):
    prep, net = _fitted("binary", tabular())
    res = export_model(tmp_path, net, prep, task="binary", labels=["no", "yes"], model_name="churn")
    assert res.checksum == sha256_file(tmp_path / "model.pt")
    sig = set_model_version(tmp_path, "churn", 7)
    assert sig["model_version"] == 7 and sha256_file(tmp_path / "model.pt") == res.checksum
    with pytest.raises(ExportError, match="checksum"):
        load_exported(tmp_path, checksum="0" * 64)
    (tmp_path / "signature.json").write_text(json.dumps({"format_version": 1, "task": "poetry", "inputs": []}))
    with pytest.raises(ExportError, match="task is not.*inputs must be"):
        load_signature(tmp_path)
    (tmp_path / "signature.json").write_text("{not json")
    with pytest.raises(ExportError, match="cannot read"):
        load_signature(tmp_path)


def test_exported_artifact_reproduces_reported_test_metrics_and_sample(tabular, make_info, fast, tmp_path):
    df, info, spec = tabular(), make_info(), fast()
    result = train_and_evaluate(df, info, spec, tmp_path)
    model, sig = load_exported(tmp_path, checksum=result.checksum)
    assert sig == result.signature
    sample_in = json.loads((tmp_path / "sample_input.json").read_text())
    sample_out = json.loads((tmp_path / "sample_output.json").read_text())
    assert set(sample_in) == {"age", "income k$", "city"} and all(len(v) == 4 for v in sample_in.values())
    again = predict_columns(model, sig, sample_in)
    assert np.array_equal(again["scores__0"], np.asarray(sample_out["scores__0"], dtype=np.float32))
    assert again["label__1"].tolist() == sample_out["label__1"]

    # Recompute the (deterministic) test split and score raw rows through the exported artifact only.
    table = as_table(df, info)
    y, _ = encode_labels(table.frame["label"], "binary")
    split = split_indices(table, info, y, val_fraction=spec.val_fraction,
                          test_fraction=spec.test_fraction)
    test = df.iloc[split.test]
    out = predict_columns(model, sig, {c: test[c].tolist() for c in info.feature_columns})
    exported_metrics = compute_metrics("binary", y[split.test], out["scores__0"])
    assert exported_metrics == pytest.approx(result.metrics, rel=1e-6)


def test_hostile_column_names_become_valid_distinct_arguments(tmp_path):
    cols = ["class", "2nd value", "a-b", "a_b", 'x"); import os; ("', "self"]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.normal(size=20) for c in cols[:-1]} | {"self": rng.choice(["u", "v"], 20)})
    prep = fit_preprocessing(Table(frame), cols, np.arange(20))
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", n_outputs=2, hidden_sizes=(4,), n_numeric=len(prep.numeric),
                                  cardinalities=tuple(prep.cardinalities)))
    export_model(tmp_path, net, prep, task="binary", labels=["a", "b"], model_name="m")
    model, sig = load_exported(tmp_path)
    names = [i["name"] for i in sig["inputs"]]
    assert names == ["f_class", "f_2nd_value", "a_b", "a_b_2", "x____import_os____", "f_self"]
    assert [a.name for a in model.forward.schema.arguments[1:]] == names
    out = predict_columns(model, sig, {c: frame[c].head(3).tolist() for c in cols})
    assert out["scores__0"].shape == (3, 2)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_an_ensemble_exports_as_one_model_that_reproduces_the_reported_metrics(tabular, make_info, fast, tmp_path,
                                                                                task):
    df, info = tabular(task=task), make_info(task)
    result = train_and_evaluate(df, info, fast(ensemble=3), tmp_path)
    assert result.params["ensemble_members"] == 3
    model, sig = load_exported(tmp_path, checksum=result.checksum)
    table = as_table(df, info)
    y, _ = encode_labels(table.frame["label"], task)
    split = split_indices(table, info, y, val_fraction=0.15, test_fraction=0.15)
    test = df.iloc[split.test]
    out = predict_columns(model, sig, {c: test[c].tolist() for c in info.feature_columns})
    assert compute_metrics(task, y[split.test], out["scores__0"]) == pytest.approx(result.metrics, rel=1e-5)
    if task != "regression":
        assert np.allclose(out["scores__0"].sum(axis=1), 1.0, atol=1e-5)


def test_an_ensemble_answers_the_mean_of_its_members():
    from trainer.models import SeedEnsemble

    torch.manual_seed(0)
    nets = [build_model(ModelConfig(kind="mlp", n_outputs=3, hidden_sizes=(4,), n_numeric=2)).eval()
            for _ in range(3)]
    x_num, x_cat = torch.randn(6, 2), torch.zeros((6, 0), dtype=torch.long)
    with torch.no_grad():
        mean_p = torch.stack([torch.softmax(n(x_num, x_cat), dim=1) for n in nets]).mean(0)
        assert torch.allclose(torch.softmax(SeedEnsemble(nets, classify=True)(x_num, x_cat), dim=1), mean_p)
        mean_y = torch.stack([n(x_num, x_cat) for n in nets]).mean(0)
        assert torch.allclose(SeedEnsemble(nets, classify=False)(x_num, x_cat), mean_y)
    with pytest.raises(Exception, match="at least one member"):
        SeedEnsemble([], classify=True)
