"""A push is all or nothing: a crash or failure mid-push leaves no version visible, and the next push heals."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from infra.storage import StorageError, open_store
from producers.datasets import ArtifactDatasetRegistry, push_dataset
from producers.datasets.store import COMMITTED

from .conftest import SPEC

CRASHING_PUSH = textwrap.dedent('''
    import os, sys
    from infra.storage import open_store
    from infra.storage.local import LocalStore
    from producers.datasets import push_dataset

    root, data, crash_on = sys.argv[1:4]
    real_put_bytes = LocalStore.put_bytes

    def put_bytes(self, key, payload):
        if key.endswith(crash_on):
            os._exit(9)  # the process dies here: no cleanup, no exception handlers, no atexit
        return real_put_bytes(self, key, payload)

    LocalStore.put_bytes = put_bytes
    push_dataset(data, {"name": "churn", "label": "churned"}, store=open_store(root), publisher=None, topic="t")
    print("finished")
''')


@pytest.mark.parametrize("crash_on", ["metadata.json", COMMITTED])
def test_killed_push_leaves_no_visible_version(tmp_path, csv_file, crash_on):
    root = tmp_path / "artifacts"
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_PUSH)
    proc = subprocess.run([sys.executable, str(script), str(root), str(csv_file), crash_on],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    store = open_store(str(root))
    assert any(k.endswith("part-00000.parquet") for k in store.list("")), "the crash came after the data upload"
    reg = ArtifactDatasetRegistry(store)
    assert reg.names() == [] and reg.versions("churn") == []
    # The next push of the same data completes the version (same keys, same bytes) and commits it.
    res = push_dataset(csv_file, {"name": "churn", "label": "churned"}, store=store, publisher=None, topic="t")
    assert res.created and [v.version for v in reg.versions("churn")] == [res.version]
    assert reg.read_pandas(res.ref).shape == (200, 5)


def test_storage_failure_before_commit_leaves_nothing_visible(store, frame, monkeypatch):
    real = type(store).put_bytes

    def failing(self, key, data):
        if key.endswith(COMMITTED):
            raise StorageError("disk full (injected)")
        return real(self, key, data)

    monkeypatch.setattr(type(store), "put_bytes", failing)
    with pytest.raises(StorageError, match="injected"):
        push_dataset(frame, SPEC, store=store, publisher=None, topic="t")
    assert ArtifactDatasetRegistry(store).names() == []
    monkeypatch.setattr(type(store), "put_bytes", real)
    assert push_dataset(frame, SPEC, store=store, publisher=None, topic="t").created
