import numpy as np
import pandas as pd
import pytest

from trainer.data import as_table, encode_labels, split_indices
from trainer.errors import TrainingCheckError
from trainer.spec import DatasetInfo


def _split(df, info, seed=0):
    table = as_table(df, info)
    y, labels = encode_labels(table.frame[info.label_column], info.task)
    return table, y, split_indices(table, info, y, seed=seed, val_fraction=0.2, test_fraction=0.2)


def test_split_is_deterministic_disjoint_and_complete(tabular, make_info):
    df, info = tabular(), make_info()
    _, _, a = _split(df, info, seed=3)
    _, _, b = _split(df, info, seed=3)
    _, _, c = _split(df, info, seed=4)
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.test, c.test)
    everything = np.concatenate([a.train, a.val, a.test])
    assert len(everything) == len(df) and len(np.unique(everything)) == len(df)
    assert a.sizes() == {"train": 144, "val": 48, "test": 48}


def test_classification_split_is_stratified(make_info):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=400), "label": ["rare"] * 40 + ["common"] * 360})
    info = make_info(feature_columns=("x",), slice_columns=())
    _, y, split = _split(df, info)
    assert split.strategy == "stratified"
    for rows in (split.train, split.val, split.test):
        share = (df["label"].to_numpy()[rows] == "rare").mean()
        assert share == pytest.approx(0.1, abs=0.015)


def test_time_column_puts_oldest_rows_in_train_and_newest_in_test(tabular, make_info):
    df = tabular()
    info = make_info(time_column="ts")
    table, _, split = _split(df, info)
    ts = table.frame["ts"]
    assert split.strategy == "time"
    assert ts.iloc[split.train].max() < ts.iloc[split.val].min()
    assert ts.iloc[split.val].max() < ts.iloc[split.test].min()


def test_regression_split_is_random_but_seeded(tabular, make_info):
    df, info = tabular(task="regression"), make_info("regression")
    _, y, a = _split(df, info, seed=0)
    assert a.strategy == "random" and y.dtype == np.float64


def test_labels_are_sorted_and_indexed():
    y, labels = encode_labels(pd.Series([3, 1, 2, 1], name="y"), "multiclass")
    assert labels == ["1", "2", "3"] and y.tolist() == [2, 0, 1, 0]
    with pytest.raises(TrainingCheckError, match="missing"):
        encode_labels(pd.Series(["a", None, "b"], name="y"), "binary")
    with pytest.raises(TrainingCheckError, match="not numeric"):
        encode_labels(pd.Series(["a", "b"], name="y"), "regression")


def test_image_inputs_from_column_of_arrays_or_xy_pair():
    info = DatasetInfo(task="binary", label_column="y", feature_columns=("image",), image_shape=(1, 2, 3))
    x = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    by_column = as_table(pd.DataFrame({"image": list(x), "y": [0, 1, 0, 1]}), info)
    by_pair = as_table((x.reshape(4, 1, 2, 3), np.array([0, 1, 0, 1])), info)
    assert by_column.images.shape == (4, 1, 2, 3)
    assert np.array_equal(by_column.images, by_pair.images)
    with pytest.raises(TrainingCheckError, match="image_shape"):
        as_table(pd.DataFrame({"image": [np.zeros(5)] * 4, "y": [0, 1, 0, 1]}), info)


def test_missing_columns_are_named(make_info):
    with pytest.raises(TrainingCheckError, match="'city'"):
        as_table(pd.DataFrame({"age": [1.0], "income k$": [2.0], "label": ["a"], "region": ["EU"]}), make_info())
