"""The artifact store contract, the same on a local directory and on S3 (moto over HTTP)."""

from __future__ import annotations

import pytest

from infra.storage import StorageError


def test_put_get_exists_and_list(store_on_each_backend, tmp_path):
    store = store_on_each_backend
    store.put_bytes("models/churn/1/model.pt", b"weights")
    (tmp_path / "sig.json").write_bytes(b"{}")
    store.put_file("models/churn/1/signature.json", tmp_path / "sig.json")
    store.put_bytes("models/churnx/1/model.pt", b"other")
    assert store.get_bytes("models/churn/1/model.pt") == b"weights"
    assert store.exists("models/churn/1/signature.json") and not store.exists("models/churn/2/model.pt")
    assert sorted(store.list("models/churn/")) == ["models/churn/1/model.pt", "models/churn/1/signature.json"]
    with pytest.raises(StorageError, match="not found"):
        store.get_bytes("models/churn/2/model.pt")


def test_delete_removes_one_key_and_is_idempotent(store_on_each_backend):
    store = store_on_each_backend
    store.put_bytes("m/config.pbtxt", b"a")
    store.put_bytes("m/config.pbtxt.previous", b"b")
    store.delete("m/config.pbtxt")
    store.delete("m/config.pbtxt")          # already gone: still fine (deletes are retried)
    assert not store.exists("m/config.pbtxt") and store.get_bytes("m/config.pbtxt.previous") == b"b"


def test_delete_prefix_removes_only_what_is_below_it(store_on_each_backend):
    store = store_on_each_backend
    for key in ("m/1/model.pt", "m/1/deploy.json", "m/2/model.pt", "m/10/model.pt"):
        store.put_bytes(key, b"x")
    assert store.delete_prefix("m/1/") == 2
    assert sorted(store.list("m/")) == ["m/10/model.pt", "m/2/model.pt"]
    assert store.delete_prefix("m/1/") == 0
