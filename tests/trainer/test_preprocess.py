import numpy as np
import pandas as pd
import pytest
import torch

from trainer.data import Table
from trainer.errors import TrainingCheckError
from trainer.preprocess import MISSING_TOKEN, OOV_INDEX, feature_kind, fit_preprocessing, sanitize_names


def _leaky_table():
    """Train rows are small; val/test rows hold huge values and categories train never saw."""
    frame = pd.DataFrame({
        "x": [1.0, 2.0, 3.0, np.nan, 1000.0, 2000.0],
        "c": ["a", "b", "a", None, "zzz", "zzz"],
        "flag": [True, False, True, False, True, True],
    })
    return Table(frame), np.array([0, 1, 2, 3])


def test_statistics_come_from_the_training_rows_only():
    table, train = _leaky_table()
    prep = fit_preprocessing(table, ["x", "c", "flag"], train)
    x_spec = prep.mean[0], prep.std[0]
    assert x_spec[0] == pytest.approx(2.0)  # mean of 1, 2, 3 (NaN ignored), not of the huge held-out values
    assert x_spec[1] == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert "zzz" not in prep.vocabs[0]
    assert set(prep.vocabs[0]) == {"a", "b", MISSING_TOKEN}
    x_num, x_cat = prep.encode(table)
    assert x_cat[4, 0].item() == OOV_INDEX  # category only in held-out rows -> OOV
    assert x_num[3, 0].item() == 0.0  # NaN -> train mean -> 0 after standardization
    assert x_num[4, 0].item() == pytest.approx((1000.0 - 2.0) / np.std([1.0, 2.0, 3.0]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_scripted_module_matches_vectorized_encoding_on_raw_values():
    table, train = _leaky_table()
    prep = fit_preprocessing(table, ["x", "c", "flag"], train)
    scripted = torch.jit.script(prep.module())
    raw_num = torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [float("inf"), 1.0], [5.0, 0.0]])
    raw_cat = [["a", "unseen", "", "b"]]
    x_num, x_cat = scripted(raw_num, raw_cat)
    ref_num, ref_cat = prep.encode_columns(
        {"x": pd.Series([1.0, np.nan, np.inf, 5.0]), "flag": pd.Series([True, False, True, False]),
         "c": pd.Series(["a", "unseen", None, "b"])}, 4)
    assert torch.equal(x_num, ref_num)
    assert torch.equal(x_cat, ref_cat)
    assert x_cat[:, 0].tolist() == [prep.vocabs[0].index("a") + 1, OOV_INDEX,
                                    prep.vocabs[0].index(MISSING_TOKEN) + 1, prep.vocabs[0].index("b") + 1]
    assert torch.isfinite(x_num).all()


def test_constant_training_column_does_not_divide_by_zero():
    table = Table(pd.DataFrame({"x": [5.0, 5.0, 5.0, 7.0]}))
    prep = fit_preprocessing(table, ["x"], np.array([0, 1, 2]))
    assert prep.std == (1.0,)
    x_num, _ = prep.encode(table)
    assert x_num[:, 0].tolist() == [0.0, 0.0, 0.0, 2.0]


def test_image_preprocessing_uses_train_pixels_only():
    images = np.zeros((4, 1, 2, 2), dtype=np.float32)
    images[:2] = 1.0
    images[2:] = 100.0
    images[0, 0, 0, 0] = np.nan
    prep = fit_preprocessing(Table(pd.DataFrame({"y": [0, 1, 0, 1]}), images), ["image"], np.array([0, 1]),
                             image_column="image", image_shape=(1, 2, 2))
    assert prep.image_mean == pytest.approx(1.0)
    (x,) = prep.encode(Table(pd.DataFrame({"y": [0]}), images[:1]))
    assert x[0, 0, 0, 0].item() == 0.0  # NaN pixel -> train mean


def test_input_names_are_sanitized_unique_and_not_reserved():
    names = sanitize_names(["age", "2x y", "a-b", "a_b", "class", "", "torch", "ünï", "x" * 300])
    assert names[:8] == ["age", "f_2x_y", "a_b", "a_b_2", "f_class", "f_", "f_torch", "_n_"]
    assert len(names[8]) == 128
    assert all(n.isidentifier() for n in names)


def test_feature_kinds():
    assert feature_kind(pd.Series([1, 2], name="a")) == "numeric"
    assert feature_kind(pd.Series([True, False], name="a")) == "numeric"
    assert feature_kind(pd.Series(["x", None], name="a")) == "categorical"
    assert feature_kind(pd.Series(["x"], dtype="category", name="a")) == "categorical"
    with pytest.raises(TrainingCheckError, match="time_column"):
        feature_kind(pd.Series(pd.to_datetime(["2024-01-01"]), name="when"))
