"""The same push / list / pull against S3: moto's server over real HTTP, boto3's standard credential chain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infra.storage import open_store
from infra.storage.base import sha256_file
from producers.datasets import ArtifactDatasetRegistry, push_dataset

from .conftest import SPEC

pytestmark = pytest.mark.stack


def test_push_list_pull_on_s3(moto_s3, tmp_path, frame, csv_file):
    store = open_store("s3://modelbus-test/team-a", s3_endpoint_url=moto_s3, s3_region="us-east-1")
    res = push_dataset(csv_file, SPEC, store=store, publisher=None, topic="t")
    assert res.uri == f"s3://modelbus-test/team-a/datasets/churn/{res.version}/data"
    again = push_dataset(frame, SPEC, store=store, publisher=None, topic="t")
    assert again.version == res.version and not again.created
    reg = ArtifactDatasetRegistry(store)
    assert reg.names() == ["churn"] and reg.get("churn").checksum == res.checksum
    out = reg.pull(res.ref, tmp_path / "pulled.parquet")
    assert sha256_file(out) == res.checksum
    assert reg.read_pandas(res.ref)[list(frame.columns)].equals(frame)
    local = push_dataset(frame, SPEC, store=open_store(str(tmp_path / "local")), publisher=None, topic="t")
    assert local.version == res.version  # the version does not depend on where it is stored


def test_large_version_uploads_in_parts(moto_s3, tmp_path):
    """Above the multipart threshold the data file goes up in parts and still reads back bit-identical."""
    rng = np.random.default_rng(3)
    n = 700_000
    df = pd.DataFrame({"x": rng.random(n), "label": rng.integers(0, 2, n)})
    store = open_store("s3://modelbus-test/big", s3_endpoint_url=moto_s3, s3_region="us-east-1",
                       multipart_threshold_mb=5)
    res = push_dataset(df, {"name": "big"}, store=store, publisher=None, topic="t")
    assert res.size_bytes > 5 << 20
    import boto3

    head = boto3.client("s3", endpoint_url=moto_s3).head_object(
        Bucket="modelbus-test", Key=f"big/datasets/big/{res.version}/data/part-00000.parquet")
    assert "-" in head["ETag"], "a multipart upload's ETag ends in -<parts>"
    pulled = ArtifactDatasetRegistry(store).pull(res.ref, tmp_path / "big.parquet")
    assert sha256_file(pulled) == res.checksum
