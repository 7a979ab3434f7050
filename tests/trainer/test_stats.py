import numpy as np
import pandas as pd
import pytest
from fastavro import parse_schema
from fastavro.schema import load_schema
from fastavro.validation import validate

from schemas.catalog import AVRO_DIR
from trainer.stats import column_stats

COLUMN_STATS = parse_schema(load_schema(str(AVRO_DIR / "modelbus.events.ColumnStats.avsc"), _write_hint=False))


def test_numeric_stats_have_quantile_bins_matching_the_schema():
    s = pd.Series(np.r_[np.arange(100, dtype=float), [np.nan, np.inf]], name="x")
    st = column_stats(s)
    assert validate(st, COLUMN_STATS, raise_errors=True)
    assert st["kind"] == "numeric" and st["dtype"] == "double"
    assert st["count"] == 100 and st["null_count"] == 2  # non-finite values count as nulls
    assert len(st["bin_edges"]) == len(st["bin_counts"]) + 1 == 11
    assert sum(st["bin_counts"]) == 100 and all(c == 10 for c in st["bin_counts"])
    assert st["min"] == 0.0 and st["max"] == 99.0 and st["mean"] == pytest.approx(49.5)


def test_repeated_values_collapse_bins_and_constant_columns_still_validate():
    st = column_stats(pd.Series([1, 1, 1, 1, 2, 3], name="k"))
    assert st["dtype"] == "int64"
    assert st["bin_edges"] == sorted(set(st["bin_edges"]))
    assert sum(st["bin_counts"]) == 6
    const = column_stats(pd.Series([7.0] * 5, name="c"))
    assert const["bin_edges"] == [7.0, 7.0] and const["bin_counts"] == [5]
    assert validate(const, COLUMN_STATS, raise_errors=True)


def test_categorical_stats_keep_top_categories():
    s = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 3 + [None], name="city")
    st = column_stats(s, top_k=2)
    assert validate(st, COLUMN_STATS, raise_errors=True)
    assert st["kind"] == "categorical" and st["dtype"] == "string"
    assert st["categories"] == ["a", "b"] and st["category_counts"] == [5, 3]
    assert st["count"] == 11 and st["null_count"] == 1 and st["distinct_count"] == 3
    assert st["mean"] is None and st["bin_edges"] == []


def test_name_override_and_booleans_are_numeric():
    st = column_stats(pd.Series([True, False, True]), name="__prediction__")
    assert st["name"] == "__prediction__" and st["kind"] == "numeric" and st["mean"] == pytest.approx(2 / 3)
