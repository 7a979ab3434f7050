"""Files are streamed block by block: types, checks and versions must not depend on block boundaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from producers.datasets import ArtifactDatasetRegistry, push_dataset, sources
from producers.errors import DatasetValidationError

N = 60_000  # ~2 MB of CSV: dozens of 64 KiB blocks


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(sources, "BATCH_ROWS", 4096)


def _frame(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(N), "x": rng.integers(0, 1000, N), "y": np.round(rng.random(N), 3),
                         "segment": rng.choice(["a", "b", "c"], N), "label": rng.integers(0, 2, N)})


def test_streamed_csv_matches_the_dataframe_and_widens_late_types(tmp_path, store, small_blocks):
    df = _frame().astype({"x": float})
    df.loc[N - 10, "x"] = 2.5  # every earlier block looks like int64
    csv = tmp_path / "big.csv"
    df.to_csv(csv, index=False)
    seen = []
    res = push_dataset(csv, {"name": "stream", "exclude": ["id"]}, store=store, publisher=None, topic="t",
                       progress=lambda done, total: seen.append((done, total)))
    meta = ArtifactDatasetRegistry(store).get(res.ref).metadata
    assert meta["schema"]["x"] == "double" and res.row_count == N
    assert len(seen) > 10 and seen[-1] == (csv.stat().st_size, csv.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    same = push_dataset(df, {"name": "stream", "exclude": ["id"]}, store=store, publisher=None, topic="t")
    assert same.version == res.version and not same.created


def test_findings_from_many_blocks_are_merged_with_global_rows(tmp_path, store, small_blocks):
    df = _frame().astype({"x": object, "label": float})
    bad_rows = [5, 20_000, 59_990]
    df.loc[bad_rows, "label"] = np.nan
    df.loc[[41_000, 50_000], "x"] = ["seven", "unknown"]  # late blocks turn x from int into text
    csv = tmp_path / "bad.csv"
    df.to_csv(csv, index=False)
    with pytest.raises(DatasetValidationError) as info:
        push_dataset(csv, {"name": "stream"}, store=store, publisher=None, topic="t")
    found = {(i.column, i.rule): i for i in info.value.report.failures}
    assert found[("label", "not_null")].rows == 3 and found[("label", "not_null")].example_rows == tuple(bad_rows)
    assert found[("x", "numeric")].rows == 2 and found[("x", "numeric")].example_rows == (41_000, 50_000)
    assert info.value.report.rows_checked == N
    assert list(store.list("")) == []
