import numpy as np
import pandas as pd
import pytest

from trainer.data import as_table, encode_labels, row_hashes, row_ids, split_indices
from trainer.errors import TrainingCheckError
from trainer.spec import DatasetInfo


def _split(df, info):
    table = as_table(df, info)
    y, labels = encode_labels(table.frame[info.label_column], info.task)
    return table, y, split_indices(table, info, y, val_fraction=0.2, test_fraction=0.2)


def test_split_is_deterministic_disjoint_and_complete(tabular, make_info):
    df, info = tabular(), make_info()
    _, _, a = _split(df, info)
    _, _, b = _split(df.sample(frac=1.0, random_state=5).reset_index(drop=True), info)
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(a, name), getattr(_split(df, info)[2], name))
    ids = lambda d, rows: set(row_ids(row_hashes(as_table(d, info), info))[rows])  # noqa: E731
    shuffled = df.sample(frac=1.0, random_state=5).reset_index(drop=True)
    assert ids(df, a.test) == ids(shuffled, b.test), "a row's split follows its content, not its position"
    everything = np.concatenate([a.train, a.val, a.test])
    assert len(everything) == len(df) and len(np.unique(everything)) == len(df)
    assert a.strategy == "content-hash"
    assert a.sizes()["test"] == pytest.approx(48, abs=15)


def test_adding_rows_never_moves_existing_rows_and_duplicates_share_a_split(tabular, make_info):
    info = make_info()
    v1, extra = tabular(n=240, seed=0), tabular(n=120, seed=9)
    v2 = pd.concat([v1, extra, v1.iloc[:10]], ignore_index=True)   # new rows and exact duplicates
    _, _, s1 = _split(v1, info)
    _, _, s2 = _split(v2, info)
    for name in ("train", "val", "test"):
        old = getattr(s1, name)
        assert set(old) <= set(getattr(s2, name)), name
    for i in range(10):
        which = [name for name in ("train", "val", "test") if 360 + i in getattr(s2, name)]
        assert which and (i in getattr(s2, which[0])), "a duplicate lands in its original's split"


def test_canonical_encoding_ignores_dtype_and_unrelated_columns(tabular, make_info):
    df, info = tabular(), make_info()
    h = row_hashes(as_table(df, info), info)
    reordered = df.assign(other=1.0)[["other", *reversed(df.columns)]]
    assert np.array_equal(h, row_hashes(as_table(reordered, info), info))
    ints = pd.DataFrame({"x": [1, 2, 3], "label": ["a", "b", "a"]})
    small = make_info(feature_columns=("x",), slice_columns=())
    assert np.array_equal(row_hashes(as_table(ints, small), small),
                          row_hashes(as_table(ints.astype({"x": "float64"}), small), small))
    flags = pd.DataFrame({"x": [True, False, True], "label": ["a", "b", "a"]})
    with_null = pd.DataFrame({"x": pd.Series([True, False, True, None], dtype=object), "label": ["a", "b", "a", "b"]})
    assert np.array_equal(row_hashes(as_table(flags, small), small),
                          row_hashes(as_table(with_null, small), small)[:3]), "a null does not move the other rows"
    assert not np.array_equal(h, row_hashes(as_table(df.assign(label=df["label"][::-1].to_numpy()), info), info))


def test_classification_split_is_stratified_in_expectation(make_info):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=4000), "label": ["rare"] * 400 + ["common"] * 3600})
    info = make_info(feature_columns=("x",), slice_columns=())
    _, y, split = _split(df, info)
    for rows in (split.train, split.val, split.test):
        share = (df["label"].to_numpy()[rows] == "rare").mean()
        assert share == pytest.approx(0.1, abs=0.02)


def test_tiny_data_still_gets_every_split(make_info):
    df = pd.DataFrame({"x": np.arange(5.0), "label": ["a", "b"] * 2 + ["a"]})
    info = make_info(feature_columns=("x",), slice_columns=())
    _, _, split = _split(df, info)
    assert min(split.sizes().values()) >= 1 and sum(split.sizes().values()) == 5


def test_time_column_puts_oldest_rows_in_train_and_newest_in_test(tabular, make_info):
    df = tabular()
    info = make_info(time_column="ts")
    table, _, split = _split(df, info)
    ts = table.frame["ts"]
    assert split.strategy == "time"
    assert ts.iloc[split.train].max() < ts.iloc[split.val].min()
    assert ts.iloc[split.val].max() < ts.iloc[split.test].min()


def test_regression_split_is_by_content_too(tabular, make_info):
    df, info = tabular(task="regression"), make_info("regression")
    _, y, a = _split(df, info)
    assert a.strategy == "content-hash" and y.dtype == np.float64


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
