"""Statistics (the drift reference) and the spec's rules, checked against numpy and the Avro contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydantic
import pytest

import schemas
from producers.datasets.spec import DatasetSpec, Expectation, build_spec
from producers.datasets.stats import DistinctCounter, StatsCollector
from producers.errors import InvalidSpecError


def _stats(table: pa.Table, chunk: int) -> dict:
    s = StatsCollector(table.schema)
    for b in table.to_batches(max_chunksize=chunk):
        s.update(b)
    return s.by_name()


def test_numeric_stats_match_numpy_and_bins_follow_np_histogram():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, 5000)
    x[::50] = np.nan
    st = _stats(pa.table({"x": pa.array(x, from_pandas=True)}), chunk=777)["x"]
    v = x[~np.isnan(x)]
    assert st["count"] == len(v) and st["null_count"] == 100
    assert st["mean"] == pytest.approx(v.mean()) and st["std"] == pytest.approx(v.std())
    assert (st["min"], st["max"]) == (v.min(), v.max())
    counts, _ = np.histogram(v, bins=st["bin_edges"])
    assert st["bin_counts"] == counts.tolist()  # exact for columns this small
    assert len(st["bin_edges"]) == 11 and st["distinct_count"] == len(v)


def test_int64_beyond_float_precision_still_gets_statistics():
    """Found by fuzzing a bit-flipped Parquet file: a safe int64 → float64 cast refuses values past 2**53."""
    big = np.array([72340172838076730, 1, -(2**62), 5], dtype=np.int64)
    st = _stats(pa.table({"x": big}), chunk=3)["x"]
    assert st["count"] == 4 and st["min"] == pytest.approx(float(big.min()))
    assert st["max"] == pytest.approx(float(big.max()))


def test_large_column_stays_close_with_bounded_sketches():
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, 400_000)
    st = _stats(pa.table({"x": x}), chunk=65_536)["x"]
    counts, _ = np.histogram(x, bins=st["bin_edges"])
    assert np.abs(np.array(st["bin_counts"]) - counts).max() < 0.02 * len(x)
    assert abs(st["distinct_count"] - len(x)) < 0.05 * len(x)


def test_categorical_stats_and_avro_contract():
    t = pa.table({"c": pa.array(["a"] * 60 + ["b"] * 30 + [None] * 10), "flag": pa.array([True, False] * 50),
                  "ts": pa.array(np.arange(100) * 1_000_000, pa.timestamp("us", tz="UTC"))})
    st = _stats(t, chunk=13)
    assert (st["c"]["categories"], st["c"]["category_counts"]) == (["a", "b"], [60, 30])
    assert st["c"]["null_count"] == 10 and st["c"]["kind"] == "categorical" and st["c"]["distinct_count"] == 2
    assert st["flag"]["categories"] == ["true", "false"] or st["flag"]["categories"] == ["false", "true"]
    assert st["ts"]["kind"] == "numeric" and st["ts"]["max"] == 99.0  # epoch seconds
    avsc = Path(schemas.__file__).parent / "avro" / "modelbus.events.ColumnStats.avsc"
    assert set(st["c"]) == {f["name"] for f in json.loads(avsc.read_text())["fields"]}


def test_distinct_counter_exact_then_estimated():
    d = DistinctCounter(k=256)
    d.update_hashes(np.arange(100, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    assert d.estimate() == 100
    big = DistinctCounter(k=1024)
    rng = np.random.default_rng(2)
    for _ in range(10):
        big.update_hashes(rng.integers(0, 2**63, 20_000, dtype=np.uint64) * np.uint64(2))
    assert abs(big.estimate() - 200_000) < 0.1 * 200_000


def test_spec_roles_and_parsing():
    spec = build_spec(name="churn", label="churned", slice_by=["region"], time_column="ts", exclude=["id"])
    assert spec.feature_columns(["id", "age", "region", "ts", "churned"]) == ["age", "region"]
    assert build_spec(spec, features=["age"]).feature_columns(["age", "region"]) == ["age"]
    assert spec.model_config["frozen"]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.name = "other"
    assert Expectation.parse("age:range=0..120") == Expectation(column="age", min=0, max=120)
    assert Expectation.parse("a:b:unique").column == "a:b"
    for bad in ("age", "age:range=5..1", "x:pattern=(", "x:wat"):
        with pytest.raises(ValueError):
            Expectation.parse(bad)
    with pytest.raises(InvalidSpecError, match="both categorical and numeric"):
        build_spec(name="a", categorical=["x"], numeric=["x"])
    with pytest.raises(InvalidSpecError, match="task"):
        build_spec(name="a", task="clustering")
    assert DatasetSpec(name="a", tags={"k": "v"}).semantics() == DatasetSpec(name="a").semantics()


def test_repeat_tracker_is_exact_then_bounded():
    from producers.datasets.hashing import RepeatTracker

    rng = np.random.default_rng(4)
    values = rng.integers(0, np.iinfo(np.uint64).max, 50_000, dtype=np.uint64, endpoint=True)  # like real hashes
    data = np.concatenate([values, values[:5000]])  # 5000 repeats, all after row 50 000
    exact = RepeatTracker(cap=1_000_000)
    for chunk in np.array_split(data, 7):
        exact.add(chunk)
    count, rows, is_exact = exact.repeats()
    assert (count, rows.tolist(), is_exact) == (5000, [50_000, 50_001, 50_002, 50_003, 50_004], True)
    sampled = RepeatTracker(cap=8_000)
    for chunk in np.array_split(data, 7):
        sampled.add(chunk)
    count, rows, is_exact = sampled.repeats()
    assert not is_exact and sampled._kept <= 4_000 and abs(count - 5000) < 1500
    assert all(r >= 50_000 and data[r] in set(values[:5000].tolist()) for r in rows.tolist())
