"""``MODELBUS_TRITON__BACKEND=pytorch`` on the real Triton: the Python front, its libtorch step, telemetry.

The step models run in ``libtorch_standin.py`` (a FAKE of the pytorch_libtorch
platform, which the bundled tritonserver lacks); everything else is real: the
generated configs, the BLS call, the load order, version switches, rollback,
reconcile and the telemetry that reaches Kafka.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from consumers.reconcile import reconcile
from serving.deploy import Deployer
from serving.errors import InvalidRequest
from serving.reference_model import SAMPLE, build_module, run_module
from serving.repository import ModelRepository, RepositoryOptions
from serving.telemetry import STAGES

pytestmark = pytest.mark.stack
STANDIN = (Path(__file__).parent / "libtorch_standin.py").read_bytes()


class StandInRepository(ModelRepository):
    """The pytorch-backend repository with its step models on the Python-backend stand-in."""

    def _step_runtime(self, cfg: mc.ModelConfig) -> None:
        cfg.backend = "python"

    def _step_files(self) -> dict[str, bytes]:
        return {"model.py": STANDIN}


def _expected(seed: int) -> np.ndarray:
    return run_module(build_module(seed=seed), SAMPLE)[0]


def _ready_steps(client, name: str) -> set[str]:
    return {m["name"] for m in client.models()
            if m["name"].startswith(f"{name}__v") and str(m.get("state", "")).upper() == "READY"}


@pytest.fixture(scope="module")
def torch_deployer(serving_settings, artifact_store, model_client):
    repo = StandInRepository(ModelRepository.from_settings(serving_settings).store,
                             RepositoryOptions(backend="pytorch", keep_versions=2))
    return Deployer(serving_settings, artifact_store, repository=repo, client=model_client)


@pytest.fixture(scope="module")
def torchy(torch_deployer, publish_model):
    res = torch_deployer.deploy(publish_model("torchy", 1, seed=0))
    assert res.ok, res.reason
    assert res.backend == "pytorch"
    return torch_deployer


def test_layout_puts_the_torchscript_in_a_step_model_only(torchy, serving_settings):
    root = Path(serving_settings.triton_repository)
    assert not (root / "torchy" / "1" / "model.pt").exists()
    assert (root / "torchy__v1" / "1" / "model.pt").is_file()
    front = torchy.repo.read_config("torchy")
    assert front.backend == "python" and front.parameters["modelbus.step_model"].string_value == "torchy__v1"
    step = text_format.Parse((root / "torchy__v1" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert step.max_batch_size == 0 and list(step.version_policy.specific.versions) == [1]
    assert "torchy" in torchy.repo.models() and not any("__v" in m for m in torchy.repo.models())


def test_requests_run_in_the_step_and_every_one_emits_telemetry(torchy, model_client, serving_settings,
                                                                 telemetry_events):
    run = uuid.uuid4().hex[:8]
    ok_ids = [f"pt-ok-{run}-{i}" for i in range(3)]
    for rid in ok_ids:
        out = model_client.predict("torchy", SAMPLE, request_id=rid)
        np.testing.assert_allclose(out["scores__0"], _expected(0), rtol=1e-5)
    bad_id = f"pt-nan-{run}"   # refused by the front's validation, before any BLS call
    with pytest.raises(InvalidRequest, match=r"input 'age' contains NaN or infinite values \(rows \[0\]\)"):
        model_client.predict("torchy", {**SAMPLE, "age": [np.nan, 1.0, 2.0, 3.0]}, request_id=bad_id)
    found = telemetry_events(serving_settings, "torchy", set(ok_ids) | {bad_id})
    assert set(found) == set(ok_ids) | {bad_id}
    ev = found[ok_ids[0]]
    assert (ev["model_name"], ev["model_version"], ev["batch_size"], ev["status"]) == ("torchy", 1, 4, "ok")
    assert ev["categorical_values"] == ["EU"] and set(ev["stage_latency_us"]) == set(STAGES)
    assert ev["stage_latency_us"]["model"] > 0 and ev["latency_us"] >= ev["stage_latency_us"]["model"]
    assert found[bad_id]["status"] == "error" and "'age' contains NaN" in found[bad_id]["error"]
    # The server keeps serving after the refusals.
    np.testing.assert_allclose(model_client.predict("torchy", SAMPLE)["scores__0"], _expected(0), rtol=1e-5)


def test_switch_under_traffic_keeps_the_previous_step_then_retires_it(torchy, publish_model, model_client, traffic):
    v1, v2 = _expected(0), _expected(1)
    with traffic("torchy", {"v1": v1, "v2": v2}) as t:
        res = torchy.deploy(publish_model("torchy", 2, seed=1))
    assert res.ok and (res.previous_version, res.serving_version) == (1, 2), res.reason
    assert t.failures == [] and t.seen["v1"] > 0 and t.seen["v2"] > 0 and t.seen["other"] == 0
    assert _ready_steps(model_client, "torchy") == {"torchy__v1", "torchy__v2"}   # v1's step stays for draining

    res = torchy.deploy(publish_model("torchy", 3, seed=2))
    assert res.ok, res.reason
    assert _ready_steps(model_client, "torchy") == {"torchy__v2", "torchy__v3"}
    assert torchy.repo.versions("torchy") == [2, 3]      # keep_versions=2 pruned v1, its step directory too
    assert not torchy.repo.has_step("torchy", 1) and torchy.repo.has_step("torchy", 2)

    back = torchy.rollback("torchy")
    assert back.ok and (back.previous_version, back.serving_version) == (3, 2), back.reason
    np.testing.assert_allclose(model_client.predict("torchy", SAMPLE)["scores__0"], v2, rtol=1e-5)
    assert torchy.state("torchy")["ready"]


def test_a_step_that_cannot_load_is_rejected_and_the_champion_keeps_serving(torchy, publish_model, artifact_store):
    from tests.serving.test_deploy import _garbage_model, _honest

    serving = torchy.repo.serving_versions("torchy")[-1]
    res = torchy.deploy(_honest(publish_model("torchy", 9, tamper=_garbage_model), artifact_store))
    assert not res.ok and res.stage == "load" and f"version {serving} keeps serving" in res.reason, res
    assert 9 not in torchy.repo.versions("torchy") and not torchy.repo.has_step("torchy", 9)
    assert "torchy__v9" not in _ready_steps(torchy.client, "torchy")
    assert torchy.client.predict("torchy", SAMPLE)["scores__0"].shape == (4, 2)


def test_reconcile_reloads_front_and_step_after_they_are_gone(torchy, model_client):
    serving = torchy.repo.serving_versions("torchy")[-1]
    desired = {"torchy": {**torchy.repo.version_info("torchy", serving), "model_version": serving}}
    for step in _ready_steps(model_client, "torchy"):
        model_client.unload_model(step)          # a front without its step is not serving: reconcile must notice
    report = reconcile(torchy, desired)
    assert report.reloaded == ["torchy"] and not report.failed, report
    assert f"torchy__v{serving}" in _ready_steps(model_client, "torchy")
    assert model_client.predict("torchy", SAMPLE)["scores__0"].shape == (4, 2)


def test_step_model_names_are_reserved(torch_deployer, publish_model):
    res = torch_deployer.deploy(publish_model("sneaky__v1", 1))
    assert not res.ok and res.stage == "artifact" and "reserved" in res.reason
