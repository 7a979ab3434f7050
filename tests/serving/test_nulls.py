"""The missing-value contract, train to serve, on the session's real Triton.

A model trained on a table with nulls imputes them itself (training-split mean,
inside model.pt); its signature says so per input (``"missing": "impute"``), and
the default ``nan_policy`` 'auto' serves such rows, answering exactly what the
exported model answers locally. 'reject' (strict) refuses them with a clear error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serving.errors import InvalidRequest
from tests.conftest import registered_value

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TINY = {"epochs": 2, "batch_size": 64, "hidden_sizes": [16], "device": "cpu", "min_slice_rows": 5}


def _frame(n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "income": rng.lognormal(3, 0.5, n).round(2),
                       "plan": rng.choice(["basic", "pro"], n)})
    score = (df["age"] - 40) / 10 + np.where(df["plan"] == "pro", 1.0, -0.5) + rng.normal(0, 1, n)
    df["churned"] = np.where(score > 0, "yes", "no")
    df.loc[df.index[::9], "age"] = np.nan           # nulls in 'age' only: 'income' never saw one
    return df


@pytest.fixture(scope="module")
def trained_on_nulls(tmp_path_factory, artifact_store):
    """A real trained artifact (trainer.run) in the artifact store; returns (ModelRegistered value, local dir)."""
    import torch

    from trainer.export import set_model_version
    from trainer.run import train_and_evaluate
    from trainer.spec import DatasetInfo, TrainingSpec

    out = tmp_path_factory.mktemp("nulls") / "artifact"
    info = DatasetInfo(task="binary", label_column="churned", feature_columns=("age", "income", "plan"),
                       name="nulls", version="v1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_and_evaluate(_frame(), info, TrainingSpec(**TINY), out)
    finally:
        torch.set_num_threads(threads)
    set_model_version(out, "nulls", 1)
    key = "models/nulls/1"
    for f in out.rglob("*"):
        if f.is_file():
            artifact_store.put_file(f"{key}/{f.relative_to(out).as_posix()}", f)
    return result, out, key


def _deploy(settings, artifact_store, client, trained, name: str):
    from serving.deploy import deploy

    result, _, key = trained
    value = registered_value(name, 1, artifact_store.uri(key), result.checksum,
                             metrics=result.metrics, baseline_metrics=result.baseline_metrics,
                             signature_json=json.dumps(result.signature))
    res = deploy(value, settings, artifact_store, client=client)
    assert res.ok, res.reason
    return res


ROWS = {"age": [None, 35.0, None], "income": [20.0, 30.0, 12.5], "plan": ["pro", "basic", None]}


def test_the_signature_marks_only_the_inputs_trained_with_nulls(trained_on_nulls):
    result, out, _ = trained_on_nulls
    missing = {i["column"]: i.get("missing") for i in result.signature["inputs"]}
    assert missing == {"age": "impute", "income": None, "plan": None}
    prep = json.loads((out / "preprocess.json").read_text())
    age = next(c for c in prep["numeric"] if c["column"] == "age")
    assert age["trained_with_missing"] and age["non_finite"] == "mean" and prep["fitted_on"] == "train"


def test_rows_with_nulls_are_served_by_default_like_the_exported_model(trained_on_nulls, serving_settings,
                                                                      artifact_store, model_client):
    from trainer.export import load_exported, predict_columns

    assert serving_settings.triton.nan_policy == "auto"
    _deploy(serving_settings, artifact_store, model_client, trained_on_nulls, "nulls")
    got = model_client.predict("nulls", ROWS)
    model, signature = load_exported(trained_on_nulls[1])
    want = predict_columns(model, signature, ROWS)
    scores = next(o["name"] for o in signature["outputs"] if o["dims"] == [2])
    assert np.allclose(got[scores], want[scores], atol=1e-5) and np.isfinite(got[scores]).all()
    with pytest.raises(InvalidRequest, match=r"input 'income' contains NaN.*not trained with missing values"):
        model_client.predict("nulls", {**ROWS, "income": [None, 1.0, 2.0]})   # no null in training: refused


def test_strict_mode_refuses_the_same_rows_with_a_clear_error(trained_on_nulls, serving_settings, artifact_store,
                                                              model_client):
    strict = serving_settings.with_overrides(triton={"nan_policy": "reject"})
    _deploy(strict, artifact_store, model_client, trained_on_nulls, "nulls_strict")
    with pytest.raises(InvalidRequest, match=r"input 'age' contains NaN or infinite values \(rows \[0, 2\]\).*"
                                             r"nan_policy is 'reject'"):
        model_client.predict("nulls_strict", ROWS)
    complete = {k: [v[1]] for k, v in ROWS.items()}
    assert model_client.predict("nulls_strict", complete)
