"""The outcome sink's pure rules: what a report refers to and whether it fits its model."""

from __future__ import annotations

import pytest

from consumers.outcome_rows import ModelInfo, check_fits, ref_of
from infra.errors import PoisonEvent

CLF = ModelInfo("multiclass", {1: ("no", "yes"), 2: ("yes", "no", "maybe")})
REG = ModelInfo("regression", {1: ()})


@pytest.mark.parametrize("outcome,ref", [
    ({"prediction_id": "r-1:0"}, "id:r-1:0"),
    ({"prediction_id": "a:b:12"}, "id:a:b:12"),           # request ids may hold colons; the row is the last part
    ({"key": "order-4711"}, "key:order-4711"),
])
def test_a_report_refers_to_a_prediction_id_or_a_key(outcome, ref):
    assert ref_of({"prediction_id": None, "key": None, **outcome}) == ref


@pytest.mark.parametrize("outcome,message", [
    ({}, "neither"), ({"prediction_id": "r:0", "key": "k"}, "both"),
    ({"prediction_id": "r"}, "malformed prediction_id"), ({"prediction_id": "r:x"}, "malformed prediction_id"),
    ({"key": ""}, "malformed key"), ({"key": "k" * 300}, "malformed key"),
])
def test_a_malformed_reference_is_poison(outcome, message):
    with pytest.raises(PoisonEvent, match=message):
        ref_of({"prediction_id": None, "key": None, **outcome})


@pytest.mark.parametrize("model,outcome,message", [
    (CLF, {"label": "perhaps"}, "not one of model m's classes"),
    (CLF, {"value": 1.0}, "is a classifier"),
    (REG, {"label": "3.5"}, "is a regressor"),
    (REG, {"value": float("inf")}, "not a finite number"),
    (CLF, {}, "exactly one of label and value"),
])
def test_an_outcome_that_does_not_fit_its_model_is_poison(model, outcome, message):
    with pytest.raises(PoisonEvent, match=message):
        check_fits({"model_name": "m", "label": None, "value": None, **outcome}, model)
