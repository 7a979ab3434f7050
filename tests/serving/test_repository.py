"""Model repository layout and config generation (no Triton needed)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.artifact import load_local_artifact
from serving.errors import ArtifactError, RepositoryError
from serving.reference_model import write_reference_artifact
from serving.repository import ModelRepository, RepositoryOptions, step_model_name, step_version, validate_model_name
from serving.signature import Signature, SignatureError


@pytest.fixture
def artifact(tmp_path):
    d = tmp_path / "export"
    checksum = write_reference_artifact(d, "churn", 1)
    return load_local_artifact(d, checksum)


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("backend", ["python", "pytorch"])
def test_config_serves_exactly_one_version_with_the_signature(tmp_path, artifact, backend):
    repo = ModelRepository.open(str(tmp_path / "repo"), RepositoryOptions(
        backend=backend, max_batch_size=32, instance_count=2, telemetry=False))
    cfg = _parse(repo.render_config("churn", artifact.signature, [3]))
    assert list(cfg.version_policy.specific.versions) == [3]
    assert cfg.max_batch_size == 32 and cfg.instance_group[0].count == 2
    assert cfg.HasField("dynamic_batching")
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("age", "TYPE_FP32", [1]), ("income", "TYPE_FP32", [1]), ("region", "TYPE_STRING", [1])]
    assert [(o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
        ("scores__0", "TYPE_FP32", [2]), ("label__1", "TYPE_INT64", [1])]
    # Clients always reach the Python-backend model: it validates and emits telemetry on both backends.
    assert (cfg.backend, cfg.platform) == ("python", "")
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    step = cfg.parameters["modelbus.step_model"].string_value if "modelbus.step_model" in cfg.parameters else ""
    assert step == ("churn__v3" if backend == "pytorch" else "")
    assert Signature.parse(cfg.parameters["modelbus.signature"].string_value) == artifact.signature
    assert cfg.parameters["modelbus.telemetry"].string_value == "false"


def test_pytorch_step_config_meets_libtorch_rules(tmp_path, artifact):
    repo = ModelRepository.open(str(tmp_path / "repo"), RepositoryOptions(backend="pytorch", instance_count=2))
    cfg = _parse(repo.render_step_config("churn", 3, artifact.signature))
    assert (cfg.name, cfg.platform, cfg.backend) == ("churn__v3", "pytorch_libtorch", "")
    assert cfg.max_batch_size == 0 and list(cfg.version_policy.specific.versions) == [3]
    # libtorch takes strings only as a 1-D List[str]: the batch dimension is explicit and strings are [-1].
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("age", [-1, 1]), ("income", [-1, 1]), ("region", [-1])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("scores__0", [-1, 2]), ("label__1", [-1, 1])]
    assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    with pytest.raises(RepositoryError, match="one version of 'churn' at a time"):
        repo.render_config("churn", artifact.signature, [2, 3])


@pytest.mark.parametrize("backend", ["python", "pytorch"])
def test_version_directory_layout(tmp_path, artifact, backend):
    repo = ModelRepository.open(str(tmp_path / "repo"), RepositoryOptions(backend=backend))
    repo.place_version("churn", 1, artifact, {"run_id": "r1"})
    repo.write_config("churn", artifact.signature, [1])
    vdir = tmp_path / "repo" / "churn" / "1"
    names = sorted(p.name for p in vdir.iterdir())
    expected = {"model.py", "signature.json", "deploy.json", "sample_input.json", "sample_output.json"}
    assert set(names) == expected | ({"model.pt"} if backend == "python" else set())
    step = tmp_path / "repo" / "churn__v1"
    assert (step / "1" / "model.pt").is_file() == (backend == "pytorch") == repo.has_step("churn", 1)
    assert repo.model_file_key("churn", 1) == ("churn__v1/1/model.pt" if backend == "pytorch" else "churn/1/model.pt")
    assert json.loads((vdir / "deploy.json").read_text())["checksum"] == artifact.checksum
    assert repo.models() == ["churn"] and repo.serving_versions("churn") == [1]
    assert repo.version_info("churn", 1)["run_id"] == "r1"
    repo.remove_version("churn", 1)
    assert not vdir.exists() and not step.exists()


def test_checksum_is_verified_before_anything_is_placed(tmp_path, artifact):
    repo = ModelRepository.open(str(tmp_path / "repo"))
    with open(artifact.model_path, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        repo.place_version("churn", 1, artifact)
    assert repo.versions("churn") == [] and not (tmp_path / "repo" / "churn").exists()


def test_prune_keeps_the_newest_versions_and_the_serving_one(tmp_path, artifact):
    repo = ModelRepository.open(str(tmp_path / "repo"), RepositoryOptions(keep_versions=2))
    for v in range(1, 6):
        repo.place_version("churn", v, artifact)
    repo.write_config("churn", artifact.signature, [1])   # an old version rolled back to stays
    assert repo.prune("churn") == [2, 3]
    assert repo.versions("churn") == [1, 4, 5]


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".git", "has space", "semi;colon", "ü", "", "x" * 65,
                                  "-dash", None, 7])
def test_hostile_names_are_refused(tmp_path, artifact, name):
    repo = ModelRepository.open(str(tmp_path / "repo"))
    with pytest.raises(RepositoryError, match="invalid model name"):
        repo.place_version(name, 1, artifact)
    with pytest.raises(RepositoryError, match="invalid model name"):
        repo.render_config(name, artifact.signature, [1])
    assert list((tmp_path / "repo").iterdir()) == []
    assert not (tmp_path / "etc").exists()


def test_valid_names_and_versions(tmp_path):
    assert validate_model_name("churn_v2-eu") == "churn_v2-eu"
    assert validate_model_name("churn__v2x") == "churn__v2x"
    for reserved in ("churn__v2", "a__v0"):   # the names of pytorch-backend step models
        with pytest.raises(RepositoryError, match="reserved"):
            validate_model_name(reserved)
    assert step_model_name("churn", 12) == "churn__v12" and step_version("churn", "churn__v12") == 12
    for other in ("churn", "churn__v", "churn__v1x", "churnx__v1", "churn__v١"):
        assert step_version("churn", other) is None
    repo = ModelRepository.open(str(tmp_path / "repo"))
    sig = Signature.parse(json.dumps({"task": "regression", "inputs": [{"name": "x", "dtype": "FP32"}],
                                      "outputs": [{"name": "a__0", "dtype": "FP32"},
                                                  {"name": "b__1", "dtype": "FP32"}]}))
    with pytest.raises(RepositoryError, match="invalid model version"):
        repo.render_config("ok", sig, [0])


@pytest.mark.parametrize("doc, needle", [
    ({"task": "clustering"}, "task must be one of"),
    ({"task": "binary", "inputs": []}, "inputs must be a non-empty list"),
    ({"task": "binary", "inputs": [{"name": "1bad", "dtype": "FP32"}]}, "not a valid tensor name"),
    ({"task": "binary", "inputs": [{"name": "a", "dtype": "FP16"}]}, "dtype 'FP16'"),
    ({"task": "binary", "inputs": [{"name": "a", "dtype": "FP32", "kind": "categorical"}]}, "does not match"),
    ({"task": "binary", "inputs": [{"name": "a", "dtype": "FP32", "dims": [0]}]}, "dims [0]"),
])
def test_signature_errors_name_the_field(doc, needle):
    with pytest.raises(SignatureError) as info:
        Signature.parse(doc)
    assert needle in str(info.value)


@pytest.mark.stack
def test_s3_repository_through_moto_server(artifact, moto_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    repo = ModelRepository.open("s3://models/triton", s3_endpoint_url=moto_endpoint, s3_region="us-east-1")
    repo.place_version("churn", 4, artifact)
    repo.write_config("churn", artifact.signature, [4])
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"])
    assert "triton/churn/config.pbtxt" in keys and "triton/churn/4/model.pt" in keys
    assert repo.serving_versions("churn") == [4] and repo.versions("churn") == [4]
    assert repo.version_signature("churn", 4) == artifact.signature
