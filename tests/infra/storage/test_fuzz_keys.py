"""Hostile names and keys where they reach the file system or S3 keys (issue #8).

Every entry point either refuses a name with the package's own error or uses it as an inert path
segment; whatever happens, nothing is read, written or deleted outside the store root. The sandbox
around each local store holds decoys (a file and an empty directory) that a traversal would reach.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infra.storage import StorageError
from infra.storage.base import validate_key, validate_prefix
from infra.storage.local import LocalStore
from tests.fuzz_strategies import hostile_names, is_inert_key, is_inert_segment, plain_names

FUZZ = settings(max_examples=200, deadline=None)
# Keys made of hostile segments and of plausible ones, so traversal hides between valid parts.
KEYS = st.one_of(hostile_names(), st.lists(st.one_of(hostile_names(24), plain_names(12)), min_size=1,
                                           max_size=4).map("/".join))
# Traversals aimed at the sandbox's decoys ('{top}' becomes the sandbox's absolute path).
DECOYS = st.sampled_from(["..", "../..", "../../victim", "../../victim-empty", "../../victim-empty/sub", "../keep.txt",
                          "../../src.bin", "x/../../..", "{top}/victim-empty", "{top}/victim/keep.txt", "/", "//"])
# Keys over a tiny alphabet collide: one key is a directory of another ('a' and 'a/b').
COLLIDING = st.lists(st.sampled_from("ab"), min_size=1, max_size=3).map("/".join)
LOCAL_KEYS = st.one_of(DECOYS, DECOYS.map(lambda k: k + "/"), KEYS, COLLIDING)
OPS = ("put_bytes", "put_if_absent", "put_file", "get_bytes", "get_file", "open_read", "exists", "uri",
       "local_path", "list", "delete", "delete_prefix", "key_from_uri")


@FUZZ
@given(KEYS)
@example("churn\n").via("regression: '$' matched before a trailing newline")
@example("models/churn\n/1")
def test_validate_key_accepts_only_inert_keys(key):
    try:
        assert validate_key(key) == key
    except StorageError as exc:
        assert "key" in str(exc)
        return
    assert is_inert_key(key), f"validate_key accepted {key!r}"


@FUZZ
@given(st.lists(plain_names(30), min_size=1, max_size=4).map("/".join), st.booleans())
def test_plain_keys_and_prefixes_are_accepted(key, slash):
    assert validate_key(key) == key
    assert validate_prefix(key + "/" * slash) == key + "/" * slash


class Sandbox:
    """A store root two levels down, with decoys beside it; ``escaped()`` lists anything changed outside."""

    def __init__(self, top: Path):
        self.top = top
        self.root = top / "a" / "store"
        (top / "victim-empty" / "sub").mkdir(parents=True)
        (top / "victim").mkdir()
        (top / "a").mkdir()
        (top / "victim" / "keep.txt").write_text("keep")
        (top / "a" / "keep.txt").write_text("keep")
        self.src = top / "src.bin"
        self.src.write_bytes(b"payload")
        self.before = self._outside()
        self.store = LocalStore(self.root)

    def _outside(self) -> set[str]:
        found = set()
        for dirpath, dirs, files in os.walk(self.top):
            rel = Path(dirpath).relative_to(self.top)
            if rel.parts[:2] == ("a", "store") or rel.parts[:1] == ("dl",):
                continue
            found |= {str(rel / n) for n in dirs + files}
        return found

    def escaped(self) -> set[str]:
        now = self._outside()
        return (now ^ self.before) - {"a/store", "dl"}


def _run(sb: Sandbox, op: str, key: str):
    s = sb.store
    if op == "put_bytes":
        return s.put_bytes(key, b"x")
    if op == "put_if_absent":
        return s.put_if_absent(key, b"x")
    if op == "put_file":
        return s.put_file(key, sb.src)
    if op == "get_bytes":
        return s.get_bytes(key)
    if op == "get_file":
        return s.get_file(key, sb.top / "dl" / "out.bin")
    if op == "open_read":
        s.open_read(key).close()
        return None
    if op == "exists":
        return s.exists(key)
    if op in ("uri", "local_path"):
        return getattr(s, op)(key)
    if op == "list":
        return list(s.list(key))
    if op == "delete":
        return s.delete(key)
    if op == "delete_prefix":
        return s.delete_prefix(key)
    return s.key_from_uri(s.root + "/" + key)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(OPS), LOCAL_KEYS), min_size=1, max_size=5))
@example([("delete_prefix", "../../victim-empty")]).via("regression: prefixes were not validated")
@example([("list", "..")])
@example([("put_bytes", "a/b"), ("get_bytes", "a"), ("open_read", "a"), ("put_bytes", "a")]).via(
    "regression: a prefix read or overwritten as an artifact raised OSError")
@example([("put_file", "a"), ("put_bytes", "a/b"), ("delete", "a/b")])
@example([("put_bytes", "a/b"), ("delete", "a")]).via("regression: deleting a prefix as a key raised OSError")
def test_local_store_never_touches_anything_outside_its_root(ops):
    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(Path(tmp))
        for op, key in ops:
            key = key.replace("{top}", str(sb.top))
            try:
                out = _run(sb, op, key)
            except StorageError:
                continue   # refused (or missing): the store's one error type
            if op in ("uri", "local_path"):
                assert Path(out).resolve().is_relative_to(sb.root.resolve()), (op, key, out)
            if op == "key_from_uri":
                assert is_inert_key(out)
            if op in ("put_bytes", "put_file", "put_if_absent"):
                assert is_inert_key(key)
        assert sb.escaped() == set(), f"{ops} changed {sb.escaped()} outside the store root"
        for name in list(sb.store.list("")):
            assert is_inert_key(name)


def _parents(key: str) -> list[str]:
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "delete", "exists"]), COLLIDING, st.binary(max_size=4)),
                max_size=12))
@example([("put", "a/b", b"1"), ("get", "a", b""), ("put", "a", b"2"), ("delete", "a", b""), ("put", "a/b/a", b"")])
def test_local_store_keys_that_collide_with_prefixes_behave_like_a_dict_or_refuse(ops):
    """A model check: the store holds exactly what a dict would, except for writes a file system cannot
    make, which are refused with StorageError (never a raw OSError) and change nothing. Those are a key
    that is (or was: deleting a key leaves its directories) a prefix of others, or one below a key."""
    with tempfile.TemporaryDirectory() as tmp:
        store, model, dirs = LocalStore(Path(tmp) / "store"), {}, set()
        for op, key, data in ops:
            if op == "put":
                impossible = key in dirs or any(p in model for p in _parents(key))
                try:
                    store.put_bytes(key, data)
                except StorageError:
                    assert impossible, f"{key!r} refused; keys {sorted(model)}, directories {sorted(dirs)}"
                    continue
                assert not impossible, f"{key!r} written over a key or directory"
                model[key] = data
                dirs.update(_parents(key))
            elif op == "get":
                if key in model:
                    assert store.get_bytes(key) == model[key]
                else:
                    with pytest.raises(StorageError):
                        store.get_bytes(key)
            elif op == "delete":
                store.delete(key)
                model.pop(key, None)
            else:
                assert store.exists(key) == (key in model)
        assert sorted(store.list("")) == sorted(model)


@pytest.mark.stack
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.one_of(KEYS, plain_names(12)), min_size=1, max_size=4))
def test_s3_keys_stay_under_the_store_prefix(moto_endpoint, keys):
    """moto's server stands in for S3/MinIO (see tests/conftest.py); boto3 talks real HTTP to it."""
    import boto3

    from infra.storage.s3 import S3Store

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = "fuzz-keys"
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    store = S3Store(f"s3://{bucket}/root", endpoint_url=moto_endpoint, region="us-east-1")
    for key in keys:
        try:
            store.put_bytes(key, b"x")
        except StorageError:
            continue
        assert is_inert_key(key)
        assert store.get_bytes(key) == b"x" and store.exists(key)
        assert store.key_from_uri(store.uri(key)) == key
    for key in keys:
        try:
            list(store.list(key))
            store.delete_prefix(key + "/")
        except StorageError:
            pass
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        assert obj["Key"].startswith("root/") and is_inert_key(obj["Key"]), obj["Key"]


# -- names that become keys: datasets, models, columns ------------------------------------------------------

@FUZZ
@given(hostile_names())
@example("churn\n").via("regression: '$' matched before a trailing newline")
def test_dataset_and_model_names_are_refused_or_inert(name):
    from consumers.training.jobs import _model_name
    from producers.datasets.spec import check_dataset_name
    from producers.errors import InvalidNameError
    from serving.errors import RepositoryError
    from serving.repository import validate_model_name
    from trainer.errors import TrainerError
    from trainer.spec import TrainingSpec

    for check, error in ((check_dataset_name, InvalidNameError), (validate_model_name, RepositoryError),
                         (lambda n: _model_name(TrainingSpec(), n), TrainerError)):
        try:
            assert check(name) == name
        except error as exc:
            assert "invalid" in str(exc) and "name" in str(exc)
            continue
        assert is_inert_segment(name) and len(name) <= 64, f"{check} accepted {name!r}"


@FUZZ
@given(plain_names(64))
def test_plain_dataset_and_model_names_are_accepted(name):
    from producers.datasets.spec import check_dataset_name
    from serving.repository import validate_model_name

    assert check_dataset_name(name) == name and validate_model_name(name) == name


@FUZZ
@given(hostile_names(140))
def test_column_names_are_refused_or_free_of_path_quote_and_control_characters(name):
    from producers.datasets.spec import check_column_name
    from producers.errors import InvalidNameError

    try:
        check_column_name(name)
    except InvalidNameError as exc:
        assert "invalid column name" in str(exc)
        return
    assert name == name.strip() and not name.startswith("__") and len(name) <= 128
    assert all(c.isascii() and c.isprintable() and c not in "/\\'\"`;$|&*?<>{}[]~" for c in name), name


@FUZZ
@given(hostile_names(), st.one_of(hostile_names(20), st.text(alphabet="0123456789abcdef", min_size=1, max_size=20)))
@example(name="churn", version="0123456789abcdef\n").via("regression: '$' matched before a trailing newline")
def test_dataset_refs_reach_the_store_only_as_inert_keys(name, version):
    """Names and versions from events and CLI arguments end in ``ProducerError`` or an inert key."""
    from producers.datasets.registry import ArtifactDatasetRegistry
    from producers.datasets.store import DatasetStore
    from producers.errors import ProducerError

    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(Path(tmp))
        try:
            key = DatasetStore(sb.store).data_key(name, version)
            assert is_inert_key(key)
        except ProducerError:
            pass
        registry = ArtifactDatasetRegistry(sb.store)
        for ref in (name, f"{name}@{version}"):
            with pytest.raises(ProducerError):   # nothing was pushed: not found, or refused before any I/O
                registry.get(ref)
            with pytest.raises(ProducerError):
                registry.pull(ref, sb.top / "dl")
        assert sb.escaped() == set()


@pytest.fixture(scope="module")
def reference_artifact(tmp_path_factory):
    from serving.artifact import load_local_artifact
    from serving.reference_model import write_reference_artifact

    d = tmp_path_factory.mktemp("fuzz-artifact")
    return load_local_artifact(d, write_reference_artifact(d, "churn", 1))


@settings(max_examples=40, deadline=None)
@given(name=st.one_of(hostile_names(), plain_names(20)), version=st.one_of(st.integers(-3, 3), st.just(2**63)))
def test_model_repository_refuses_hostile_names_before_any_io(reference_artifact, name, version):
    from serving.errors import RepositoryError
    from serving.repository import ModelRepository

    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(Path(tmp))
        repo = ModelRepository(sb.store)
        calls = [lambda: repo.place_version(name, version, reference_artifact),
                 lambda: repo.render_config(name, reference_artifact.signature, [version]),
                 lambda: repo.config_bytes(name), lambda: repo.versions(name),
                 lambda: repo.has_version(name, version), lambda: repo.remove_version(name, version),
                 lambda: repo.serving_versions(name)]
        for call in calls:
            try:
                call()
            except RepositoryError as exc:
                assert "invalid model" in str(exc)
        placed = list(sb.store.list(""))
        assert all(k.split("/")[0] == name and is_inert_segment(name) and version >= 1 for k in placed), placed
        assert sb.escaped() == set()
