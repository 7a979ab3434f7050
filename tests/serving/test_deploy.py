"""Deployments against the real Triton: version switches, failures that keep the champion, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infra.storage.base import sha256_file
from serving.deploy import Deployer, deploy, rollback, serving_state
from serving.errors import ServingError
from serving.reference_model import SAMPLE, build_module, run_module

pytestmark = pytest.mark.stack


def _expected(seed: int) -> np.ndarray:
    return run_module(build_module(seed=seed), SAMPLE)[0]


def _deployer(serving_settings, artifact_store, model_client) -> Deployer:
    return Deployer(serving_settings, artifact_store, client=model_client)


@pytest.fixture(scope="module")
def switch(serving_settings, artifact_store, publish_model, model_client):
    """Model 'switch' with version 1 serving."""
    d = _deployer(serving_settings, artifact_store, model_client)
    first = d.deploy(publish_model("switch", 1, seed=0))
    assert first.ok and first.serving_version == 1 and first.previous_version is None
    return d


def test_version_switch_under_traffic_has_zero_failed_requests(switch, publish_model, traffic):
    if switch.repo.serving_versions("switch") != [1]:
        assert switch.deploy(publish_model("switch", 1, seed=0)).ok
    v1, v2 = _expected(0), _expected(1)
    assert not np.allclose(v1, v2)
    with traffic("switch", {"v1": v1, "v2": v2}) as t:
        result = switch.deploy(publish_model("switch", 2, seed=1))
        before = t.seen["v2"]
    assert result.ok, result.reason
    assert (result.previous_version, result.serving_version, result.stage) == (1, 2, "")
    assert t.failures == []
    assert t.seen["v1"] > 0 and t.seen["v2"] > before and t.seen["other"] == 0
    assert switch.repo.serving_versions("switch") == [2] and switch.repo.versions("switch") == [1, 2]


def test_rollback_serves_the_older_version_and_refuses_unknown_ones(switch, serving_settings, publish_model,
                                                                    model_client):
    if switch.repo.serving_versions("switch") != [2]:
        assert switch.deploy(publish_model("switch", 2, seed=1)).ok
    res = rollback("switch", settings=serving_settings, client=model_client)
    assert res.ok and res.action == "rollback" and (res.previous_version, res.serving_version) == (2, 1)
    np.testing.assert_allclose(model_client.predict("switch", SAMPLE)["scores__0"], _expected(0), rtol=1e-5)
    state = serving_state("switch", settings=serving_settings, client=model_client)
    assert state["serving_version"] == 1 and state["ready"] and state["versions"] == [1, 2]
    with pytest.raises(ServingError, match=r"version 7 of 'switch' is not in the repository \(kept: \[2\]\)"):
        switch.rollback("switch", to_version=7)
    with pytest.raises(ServingError, match="already serving"):
        switch.rollback("switch", to_version=1)
    with pytest.raises(ServingError, match="no older version"):
        switch.rollback("switch")
    with pytest.raises(ServingError, match="not deployed"):
        switch.rollback("never-deployed")


def test_redeploying_the_serving_version_is_a_no_op(deployed_churn, serving_settings, artifact_store, publish_model,
                                                   model_client):
    again = deploy(publish_model("churn", 1), serving_settings, artifact_store, client=model_client)
    assert again.ok and again.action == "reconcile" and again.duration_s < 1.0


def _corrupt_bytes(d: Path) -> None:
    with open(d / "model.pt", "ab") as fh:
        fh.write(b"tampered")


def _garbage_model(d: Path) -> None:
    (d / "model.pt").write_bytes(b"this is not a TorchScript archive")


def _wrong_sample_output(d: Path) -> None:
    out = json.loads((d / "sample_output.json").read_text())
    out["scores__0"] = [[0.5, 0.5] for _ in out["scores__0"]]
    (d / "sample_output.json").write_text(json.dumps(out))


def _honest(value: dict, store) -> dict:
    """Re-register with the checksum of the (damaged) bytes, as a buggy trainer would."""
    key = store.key_from_uri(value["artifact_uri"]) + "/model.pt"
    path = store.local_path(key)
    return {**value, "checksum": sha256_file(path)}


@pytest.fixture(scope="module")
def fragile(serving_settings, artifact_store, publish_model, model_client):
    d = _deployer(serving_settings, artifact_store, model_client)
    assert d.deploy(publish_model("fragile", 1, seed=3)).ok
    return d


def _champion_still_serves(d: Deployer):
    assert d.repo.serving_versions("fragile") == [1]
    assert d.client.is_ready("fragile", 1)
    np.testing.assert_allclose(d.client.predict("fragile", SAMPLE)["scores__0"], _expected(3), rtol=1e-5)


def test_checksum_mismatch_fails_at_artifact_stage(fragile, publish_model):
    res = fragile.deploy(publish_model("fragile", 2, tamper=_corrupt_bytes))
    assert not res.ok and res.stage == "artifact" and "checksum mismatch" in res.reason
    assert res.serving_version == 1 and 2 not in fragile.repo.versions("fragile")
    _champion_still_serves(fragile)


def test_garbage_model_fails_at_load_and_champion_keeps_serving(fragile, publish_model, artifact_store):
    res = fragile.deploy(_honest(publish_model("fragile", 3, tamper=_garbage_model), artifact_store))
    assert not res.ok and res.stage == "load", res
    assert "Triton could not load it" in res.reason and "version 1 keeps serving" in res.reason
    assert 3 not in fragile.repo.versions("fragile")
    _champion_still_serves(fragile)


def test_wrong_outputs_fail_the_smoke_inference(fragile, publish_model):
    res = fragile.deploy(publish_model("fragile", 4, tamper=_wrong_sample_output))
    assert not res.ok and res.stage == "smoke" and "differs from sample_output.json" in res.reason
    _champion_still_serves(fragile)


def test_broken_signature_and_missing_files_fail_at_artifact_stage(fragile, publish_model):
    res = fragile.deploy(publish_model("fragile", 5, tamper=lambda d: (d / "signature.json").write_text("{nope")))
    assert not res.ok and res.stage == "artifact" and "signature is not valid JSON" in res.reason
    value = publish_model("fragile", 6)
    res = fragile.deploy({**value, "artifact_uri": value["artifact_uri"] + "-missing"})
    assert not res.ok and res.stage == "artifact" and "no readable model.pt" in res.reason
    _champion_still_serves(fragile)


def test_a_different_artifact_under_the_serving_version_is_refused(fragile, publish_model):
    res = fragile.deploy(publish_model("fragile", 1, seed=9))
    assert not res.ok and res.stage == "artifact" and "a different artifact under the same version" in res.reason
    _champion_still_serves(fragile)


def test_malformed_version_is_an_artifact_failure(serving_settings, artifact_store, model_client):
    res = deploy({"model_name": "ok", "model_version": "latest", "artifact_uri": "x", "checksum": "0" * 64},
                 serving_settings, artifact_store, client=model_client)
    assert not res.ok and res.stage == "artifact" and "invalid model version 'latest'" in res.reason


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "white space", "x" * 65, ""])
def test_hostile_model_names_never_reach_the_repository(serving_settings, artifact_store, model_client, name,
                                                        session_dir):
    res = deploy({"model_name": name, "model_version": 1, "artifact_uri": "x", "checksum": "0" * 64},
                 serving_settings, artifact_store, client=model_client)
    assert not res.ok and res.stage == "artifact" and "invalid model name" in res.reason
    assert not (session_dir / "evil").exists()


def test_unreachable_triton_raises_and_leaves_the_config_as_it_was(tmp_path):
    from infra.app.stack.process import free_port
    from infra.settings import load_settings
    from infra.storage import open_store
    from serving.client import ModelClient
    from serving.errors import ServerUnavailable
    from serving.reference_model import write_reference_artifact
    from tests.conftest import registered_value

    store = open_store(str(tmp_path / "artifacts"))
    checksum = write_reference_artifact(tmp_path / "export", "lonely", 1)
    for f in (tmp_path / "export").iterdir():
        store.put_file(f"models/lonely/1/{f.name}", f)
    settings = load_settings(stack={"data_dir": str(tmp_path)}, triton={"repository": str(tmp_path / "repo")})
    dead = ModelClient(f"127.0.0.1:{free_port()}", timeout_s=2.0)
    d = Deployer(settings, store, client=dead)
    with pytest.raises(ServerUnavailable, match="unavailable"):
        d.deploy(registered_value("lonely", 1, store.uri("models/lonely/1"), checksum))
    assert d.repo.serving_versions("lonely") == []   # nothing points Triton at a version it never loaded
