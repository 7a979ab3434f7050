"""Versions are content hashes of the canonical form: same rows, same version, whatever the input kind."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.storage.base import sha256_file
from producers.datasets import ArtifactDatasetRegistry, push_dataset
from producers.errors import DatasetConflictError, DatasetNotFoundError, DatasetValidationError, IntegrityError

from .conftest import SPEC, churn_frame


def _push(data, store, **spec):
    return push_dataset(data, {**SPEC, **spec}, store=store, publisher=None, topic="unused")


def test_same_rows_same_version_from_csv_dataframe_parquet_and_arrow(tmp_path, store, frame, csv_file):
    parquet = tmp_path / "data.parquet"
    frame.to_parquet(parquet, index=True)  # pandas index metadata must not leak into the canonical form
    reordered = frame[["churned", "plan", "region", "income", "age"]]
    first = _push(csv_file, store)
    narrower = frame.astype({"age": "int32", "region": "category"})  # int32 → int64, categories → string
    others = [_push(d, store) for d in (frame, parquet, pa.Table.from_pandas(frame), reordered, narrower)]
    assert first.created and first.version == first.checksum[:16] and len(first.version) == 16
    assert {r.version for r in others} == {first.version}
    assert not any(r.created for r in others)
    assert ArtifactDatasetRegistry(store).names() == ["churn"]
    assert len(ArtifactDatasetRegistry(store).versions("churn")) == 1


def test_different_rows_new_version_with_parent(store, frame):
    v1 = _push(frame, store)
    v2 = _push(frame.iloc[:150], store)
    v3 = _push(frame.iloc[::-1].reset_index(drop=True), store)  # row order is content
    assert len({v1.version, v2.version, v3.version}) == 3
    assert (v1.parent_version, v2.parent_version, v3.parent_version) == (None, v1.version, v2.version)
    reg = ArtifactDatasetRegistry(store)
    assert [v.version for v in reg.versions("churn")] == [v1.version, v2.version, v3.version]
    assert reg.get("churn").version == v3.version
    assert reg.get(f"churn@{v2.version[:6]}").version == v2.version
    with pytest.raises(DatasetNotFoundError):
        reg.get("churn@0000000000000000")
    with pytest.raises(DatasetNotFoundError):
        reg.get("nothing")


def test_same_data_different_spec_is_a_conflict(store, frame):
    _push(frame, store)
    with pytest.raises(DatasetConflictError, match="immutable"):
        _push(frame, store, label="plan")
    again = _push(frame, store, tags={"note": "tags do not change what a version means"})
    assert not again.created


def test_metadata_records_schema_stats_report_and_spec(store, frame):
    res = _push(frame, store, tags={"team": "growth"})
    meta = json.loads(store.get_bytes(f"datasets/churn/{res.version}/metadata.json"))
    assert meta["schema"] == {"age": "int64", "churned": "string", "income": "double", "plan": "string",
                              "region": "string"}
    assert meta["row_count"] == 200 and meta["task"] == "binary"
    assert meta["feature_columns"] == ["age", "income", "region", "plan"]  # slice columns stay features
    assert meta["checksum"] == sha256_file(store.local_path(f"datasets/churn/{res.version}/data/part-00000.parquet"))
    assert meta["spec"]["label"] == "churned" and meta["tags"] == {"team": "growth"}
    assert meta["validation"]["rows_checked"] == 200
    classes = {c["value"]: c["count"] for c in meta["label_classes"]}
    assert classes == frame["churned"].value_counts().to_dict()
    stats = {s["name"]: s for s in meta["statistics"]}
    assert stats["age"]["count"] == 200 and stats["age"]["min"] == frame["age"].min()
    assert sum(stats["age"]["bin_counts"]) == 200
    assert dict(zip(stats["region"]["categories"], stats["region"]["category_counts"])) == \
        frame["region"].value_counts().to_dict()


def test_pull_is_bit_identical_and_checksum_verified(tmp_path, store, frame):
    res = _push(frame, store)
    reg = ArtifactDatasetRegistry(store)
    (tmp_path / "out").mkdir()
    out = reg.pull(res.ref, tmp_path / "out")
    assert out.name == f"churn-{res.version}.parquet"
    stored = store.local_path(f"datasets/churn/{res.version}/data/part-00000.parquet")
    assert out.read_bytes() == stored.read_bytes()
    assert sha256_file(out) == res.checksum
    back = reg.read_pandas(res.ref)
    assert back[list(frame.columns)].equals(frame)
    # Corrupt the stored copy: readers must refuse it rather than train on it.
    table = pq.read_table(stored).slice(0, 10)
    pq.write_table(table, stored)
    with pytest.raises(IntegrityError, match="checksum"):
        reg.pull(res.ref, tmp_path / "again.parquet")
    assert not (tmp_path / "again.parquet").exists()


def test_canonical_encoding_ignores_block_boundaries(store, frame, monkeypatch):
    from producers.datasets import sources

    whole = _push(frame, store, name="blocks-a")
    monkeypatch.setattr(sources, "BATCH_ROWS", 7)
    chunked = _push(frame, store, name="blocks-b")
    assert whole.checksum == chunked.checksum


def test_images_as_arrays_keep_their_shape(store):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(64, 1, 8, 8), dtype=np.uint8)
    y = np.arange(64) % 3
    res = push_dataset((x, y), {"name": "digits", "label": "digit"}, store=store, publisher=None, topic="t")
    meta = ArtifactDatasetRegistry(store).get(res.ref).metadata
    assert meta["image_shape"] == [1, 8, 8] and meta["task"] == "multiclass"
    assert meta["schema"]["image"] == "fixed_size_list<item: uint8>[64]"
    assert meta["feature_columns"] == ["image"]
    table = ArtifactDatasetRegistry(store).read_table(res.ref)
    images = table.column("image").combine_chunks().flatten().to_numpy().reshape(-1, 1, 8, 8)
    assert np.array_equal(images, x) and table.column("digit").to_pylist() == y.tolist()
    scaled = x.astype(np.float64) / 255
    floats = push_dataset((scaled, y), {"name": "digits-f", "label": "digit"}, store=store, publisher=None, topic="t")
    assert ArtifactDatasetRegistry(store).get(floats.ref).metadata["schema"]["image"] == \
        "fixed_size_list<item: float>[64]"
    scaled[[5, 9], 0, 2, 3] = np.nan
    with pytest.raises(DatasetValidationError, match="NaN or infinite pixels") as info:
        push_dataset((scaled, y), {"name": "digits-f", "label": "digit"}, store=store, publisher=None, topic="t")
    assert info.value.report.failures[0].example_rows == (5, 9)


def test_churn_frame_is_deterministic():
    assert churn_frame().equals(churn_frame())


def test_reading_in_place_verifies_the_checksum(store, frame):
    res = _push(frame, store)
    reg = ArtifactDatasetRegistry(store)
    assert reg.read_pandas(res.ref, columns=["age"])["age"].tolist() == frame["age"].tolist()
    stored = store.local_path(f"datasets/churn/{res.version}/data/part-00000.parquet")
    stored.write_bytes(stored.read_bytes()[:-1] + b"X")
    with pytest.raises(IntegrityError):
        reg.read_table(res.ref)
