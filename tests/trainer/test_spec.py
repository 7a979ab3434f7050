import pydantic
import pytest

from trainer.errors import TrainerError
from trainer.spec import DatasetInfo, TrainingSpec, make_run_id


def test_json_round_trip_keeps_every_field():
    spec = TrainingSpec(model="mlp", hidden_sizes=(32, 8), epochs=7, lr=0.01, lr_schedule="cosine", grad_clip=None,
                        early_stopping_patience=None, world_size=2, amp=False, model_name="m", seed=42)
    again = TrainingSpec.from_json(spec.to_json())
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()


def test_hash_ignores_explicit_defaults_but_not_changes():
    assert TrainingSpec().spec_hash() == TrainingSpec(epochs="auto", lr="auto", dropout=0.1).spec_hash()
    assert TrainingSpec().spec_hash() != TrainingSpec(seed=1).spec_hash()
    assert TrainingSpec(hidden_sizes=(8,)).spec_hash() != TrainingSpec(hidden_sizes=(16,)).spec_hash()


def test_bad_spec_json_names_the_field():
    with pytest.raises(TrainerError, match="epocs"):
        TrainingSpec.from_json('{"epocs": 3}')
    with pytest.raises(TrainerError, match="lr"):
        TrainingSpec.from_json('{"lr": -1}')
    with pytest.raises(TrainerError, match="20%"):
        TrainingSpec.from_dict({"val_fraction": 0.5, "test_fraction": 0.4})
    assert TrainingSpec.from_json("") == TrainingSpec()


def test_spec_is_frozen():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        TrainingSpec().epochs = 3


def test_dataset_info_from_event_and_validation():
    event = {"name": "churn", "version": "abc", "task": "binary", "label_column": "y",
             "feature_columns": ["a", "b"], "slice_columns": ["a"], "time_column": None, "image_shape": []}
    info = DatasetInfo.from_event(event)
    assert info.feature_columns == ("a", "b") and not info.is_image
    with pytest.raises(TrainerError, match="also listed as a feature"):
        DatasetInfo.from_event({**event, "feature_columns": ["a", "y"]})
    with pytest.raises(TrainerError, match="lacks a field"):
        DatasetInfo.from_event({"name": "x"})
    with pytest.raises(TrainerError, match="exactly one feature"):
        DatasetInfo.from_event({**event, "image_shape": [1, 4, 4]})


def test_run_id_depends_on_dataset_version_and_spec():
    info = DatasetInfo(task="binary", label_column="y", feature_columns=("a",), name="d", version="1")
    a = make_run_id(info, TrainingSpec())
    assert a == make_run_id(info, TrainingSpec())
    assert a != make_run_id(info.model_copy(update={"version": "2"}), TrainingSpec())
    assert a != make_run_id(info, TrainingSpec(seed=3))
