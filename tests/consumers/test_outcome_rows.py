"""The outcome sink's pure rules: what a report refers to and whether it fits its model."""

from __future__ import annotations

import pytest

from consumers.outcome_rows import ModelInfo, check_fits, labelled_row, ref_of
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


def test_the_true_class_is_indexed_in_the_labels_of_the_version_that_served():
    outcome = {"model_name": "m", "ref": "id:r:0", "label": "yes", "value": None, "event_id": "e",
               "observed_at": "2026-12-07 10:00:05.000000"}
    served = {"model_version": 2, "prediction_id": "r:0", "event_time": "2026-12-07 10:00:00.000000",
              "prediction": "no", "prediction_value": 1.0, "confidence": 0.7, "scores": [0.2, 0.7, 0.1]}
    row = labelled_row(outcome, served, CLF)
    assert (row["label_index"], row["predicted_index"], row["label_delay_s"]) == (0, 1, 5.0)
    assert labelled_row(outcome, {**served, "model_version": 1}, CLF)["label_index"] == 1
