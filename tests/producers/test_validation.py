"""Validation findings: what refuses a dataset, what only warns, and how the task is inferred."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from producers.datasets import ArtifactDatasetRegistry, push_dataset
from producers.errors import DatasetValidationError

from .conftest import SPEC, churn_frame


def _push(data, store, **spec):
    return push_dataset(data, {**SPEC, **spec}, store=store, publisher=None, topic="unused")


def _refusal(data, store, **spec) -> dict:
    before = list(store.list(""))
    with pytest.raises(DatasetValidationError) as info:
        _push(data, store, **spec)
    assert list(store.list("")) == before, "a refused push stored something"
    return {(i.column, i.rule): i for i in info.value.report.failures}


def test_warnings_are_recorded_not_fatal(store):
    df = churn_frame(400).assign(customer=np.arange(400))  # no accidental duplicates
    df["churned"] = ["yes"] * 12 + ["no"] * 388          # 3 % minority
    df.loc[:300, "income"] = np.nan                       # 75 % missing
    df = pd.concat([df, df.iloc[:5]], ignore_index=True)  # five exact duplicates
    res = _push(df, store, exclude=["customer"])
    rules = {(i.column, i.rule): i for i in res.report.warnings}
    assert set(rules) == {("churned", "class_balance"), ("income", "null_fraction"), (None, "duplicate_rows")}
    assert rules[(None, "duplicate_rows")].rows == 5
    assert rules[(None, "duplicate_rows")].example_rows == (400, 401, 402, 403, 404)
    assert "'yes' 17 rows (4.2%)" in rules[("churned", "class_balance")].message
    meta = ArtifactDatasetRegistry(store).get(res.ref).metadata
    assert meta["warnings"] == list(res.warnings) and len(meta["warnings"]) == 3


def test_duplicates_can_be_refused(store, frame):
    doubled = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    found = _refusal(doubled, store, allow_duplicate_rows=False)
    assert found[(None, "duplicate_rows")].example_rows == (200,)


@pytest.mark.parametrize("label, task", [
    (["a", "b"] * 50, "binary"),
    ([True, False] * 50, "binary"),
    ([0, 1, 2, 3] * 25, "multiclass"),
    ([0.0, 1.0] * 50, "binary"),
    (list(np.linspace(0, 1, 100)), "regression"),
    (list(range(100)), "regression"),
])
def test_task_inference(store, label, task):
    df = pd.DataFrame({"x": np.arange(100, dtype=float), "label": label})
    assert push_dataset(df, {"name": "t"}, store=store, publisher=None, topic="t").task == task


def test_declared_task_must_fit_the_label(store):
    df = pd.DataFrame({"x": np.arange(100.0), "label": np.linspace(0, 1, 100)})
    found = _refusal(df, store, name="t", label="label", slice_by=[], task="multiclass")
    assert ("label", "label_kind") in found or ("label", "label_classes") in found
    texts = pd.DataFrame({"x": np.arange(100.0), "label": ["a", "b"] * 50})
    found = _refusal(texts, store, name="t", label="label", slice_by=[], task="regression")
    assert found[("label", "numeric")].rows == 100


def test_user_expectations(store, frame):
    frame = frame.copy()
    frame.loc[4, "plan"] = "gold"
    frame.loc[[6, 8], "region"] = ["EU", "mars"]
    found = _refusal(frame, store, expectations=[
        {"column": "plan", "allowed": ["basic", "pro"]},
        {"column": "region", "pattern": "[a-z]{2,4}"},
        {"column": "age", "min": 30},
        {"column": "income", "not_null": True},
    ])
    assert found[("plan", "isin(['basic', 'pro'])")].examples == ("'gold'",)
    assert found[("region", "str_matches('(?:[a-z]{2,4})$')")].example_rows == (6,)
    assert found[("age", "greater_than_or_equal_to(30.0)")].rows == int((frame["age"] < 30).sum())
    assert ("income", "not_null") not in found  # no missing incomes: the rule passes


def test_unique_expectation_across_blocks(store, monkeypatch):
    from producers.datasets import sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 16)
    df = churn_frame(100).assign(customer=[f"c{i}" for i in range(100)])
    df.loc[90, "customer"] = "c3"  # repeats a value first seen in another block
    found = _refusal(df, store, exclude=["customer"], expectations=[{"column": "customer", "unique": True}])
    issue = found[("customer", "unique")]
    assert issue.rows == 1 and issue.example_rows == (90,) and issue.examples == ("'c3'",)


def test_all_null_feature_and_infinite_values(store, frame):
    found = _refusal(frame.assign(empty=np.nan, ratio=np.where(frame.index == 17, np.inf, 1.0)), store)
    assert ("empty", "all_null") in found
    assert found[("ratio", "finite")].example_rows == (17,)


def test_time_column(tmp_path, store, frame):
    csv = tmp_path / "t.csv"
    frame.assign(ts=pd.date_range("2024-01-01", periods=200, freq="h")).to_csv(csv, index=False)
    res = _push(csv, store, time_column="ts")
    meta = ArtifactDatasetRegistry(store).get(res.ref).metadata
    assert meta["schema"]["ts"] == "timestamp[us, tz=UTC]" and "ts" not in meta["feature_columns"]
    found = _refusal(frame, store, time_column="plan")
    assert ("plan", "timestamp_type") in found


def test_mixed_text_column_is_not_flagged_when_mostly_words(store, frame):
    codes = frame.assign(code=np.where(frame.index % 3 == 0, "17", "alpha"))
    assert _push(codes, store).created
