"""A store outage is told apart from a lasting fault, and nothing above the store rewrites it into one.

The unreachable store is real: an S3 endpoint on a loopback port where nothing listens, reached by boto3 over
HTTP. Throttling answers cannot be provoked from moto, so those are botocore's own ClientError built the way
botocore builds it from an S3 reply.
"""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import ClientError

from infra.app.stack.process import free_port
from infra.storage import StorageError, StorageUnavailable, is_transient
from infra.storage.errors import os_error, s3_is_transient
from infra.storage.s3 import S3Store, raise_for_refused_keys


def _s3_reply(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.fixture
def unreachable_store(monkeypatch) -> S3Store:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    return S3Store("s3://bucket/root", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
                   max_attempts=1)


@pytest.mark.parametrize("code,status,transient", [
    ("SlowDown", 503, True), ("ThrottlingException", 400, True), ("RequestTimeout", 400, True),
    ("InternalError", 500, True), ("AccessDenied", 403, False), ("NoSuchBucket", 404, False),
    ("InvalidArgument", 400, False),
])
def test_s3_answers_are_classified_as_botocore_retries_them(code, status, transient):
    assert s3_is_transient(_s3_reply(code, status)) is transient


def test_every_call_on_an_unreachable_s3_is_unavailable_not_a_raw_botocore_error(unreachable_store, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    calls = {
        "get_bytes": lambda s: s.get_bytes("a/b"), "exists": lambda s: s.exists("a/b"),
        "put_bytes": lambda s: s.put_bytes("a/b", b"x"), "put_file": lambda s: s.put_file("a/b", tmp_path / "f"),
        "list": lambda s: list(s.list("a/")), "delete": lambda s: s.delete("a/b"),
        "delete_prefix": lambda s: s.delete_prefix("a/"), "put_if_absent": lambda s: s.put_if_absent("a/b", b"x"),
    }
    for name, call in calls.items():
        with pytest.raises(StorageUnavailable) as info:
            call(unreachable_store)
        assert is_transient(info.value), name
        assert "127.0.0.1" in str(info.value) or "bucket" in str(info.value), name


def test_a_missing_key_is_a_lasting_error(store_on_each_backend):
    with pytest.raises(StorageError) as info:
        store_on_each_backend.get_bytes("no/such/key")
    assert not is_transient(info.value) and "not found" in str(info.value)


def test_delete_prefix_reports_the_keys_s3_refused():
    """DeleteObjects says 200 and lists refused keys in ``Errors`` (the documented reply shape)."""
    raise_for_refused_keys("b", {"Deleted": [{"Key": "m/1/a"}]})   # all deleted: nothing to say
    with pytest.raises(StorageError, match=r"2 key\(s\) were not deleted: m/1/b \(AccessDenied") as info:
        raise_for_refused_keys("b", {"Errors": [{"Key": "m/1/b", "Code": "AccessDenied", "Message": "locked"},
                                                {"Key": "m/1/c", "Code": "SlowDown", "Message": "slow"}]})
    assert not is_transient(info.value)   # one refusal that will not heal makes the whole call lasting
    with pytest.raises(StorageUnavailable):
        raise_for_refused_keys("b", {"Errors": [{"Key": "m/1/c", "Code": "SlowDown", "Message": "slow"}]})


def test_filesystem_errors_are_transient_only_where_the_filesystem_may_recover():
    assert isinstance(os_error("read x", OSError(errno.ESTALE, "Stale file handle")), StorageUnavailable)
    assert isinstance(os_error("read x", OSError(errno.ETIMEDOUT, "Connection timed out")), StorageUnavailable)
    lasting = os_error("read x", OSError(errno.EIO, "Input/output error"))
    assert type(lasting) is StorageError and "Input/output error" in str(lasting)


def test_dataset_metadata_during_an_outage_stays_transient(unreachable_store):
    """Before: read_metadata turned the outage into a ProducerError, so training failed the run for good."""
    from producers.datasets.store import DatasetStore
    from producers.errors import ProducerError

    with pytest.raises(StorageUnavailable) as info:
        DatasetStore(unreachable_store).read_metadata("churn", "0123456789abcdef")
    assert not isinstance(info.value, ProducerError)


def test_artifact_fetch_during_an_outage_is_no_rejection(unreachable_store, tmp_path):
    """A deployment must be retried, not rejected at the artifact stage, when the store does not answer."""
    from serving.artifact import fetch_artifact
    from serving.errors import ArtifactError

    with pytest.raises(StorageUnavailable) as info:
        fetch_artifact(unreachable_store, "s3://bucket/root/models/churn/1", "0" * 64, tmp_path / "a")
    assert not isinstance(info.value, ArtifactError)
