"""The production deployment files agree with the code they configure (fast: no network, no docker).

The real compose files, Kubernetes manifests and Dockerfiles must pass every checker in
deploy_checks.py; each checker is also fed a deliberately broken copy of the real documents
and must name the problem, so no check passes vacuously. Dockerfile.triton is also checked
against the nvidia-pytriton installed here (its tritonserver's version, its stubs, its libraries).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest


def _load(name: str):
    """tests/ is not a package (importlib import mode): load the sibling helper modules by path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


dm = _load("deploy_model")
_load("deploy_triton_checks")   # deploy_checks imports it by module name
dc = _load("deploy_checks")
SCRIPT = (dm.K8S / "grafana-config.sh").read_text()


@pytest.fixture(autouse=True)
def _no_modelbus_env(monkeypatch):
    """The developer's own MODELBUS_* variables must not leak into the settings built here."""
    for k in [k for k in os.environ if k.startswith("MODELBUS_")]:
        monkeypatch.delenv(k)


# -- the real files --------------------------------------------------------------------------
MODEL_CHECKS = [dc.check_settings, dc.check_endpoints, dc.check_triton, dc.check_gpu, dc.check_consumers]


@pytest.mark.parametrize("which", ["compose", "compose+tls", "k8s"])
@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda c: c.__name__)
def test_deployment_is_consistent(which, check):
    assert check(dm.models()[which]) == []


@pytest.mark.parametrize("which", ["compose", "compose+tls", "k8s"])
def test_no_secret_is_inline(which):
    assert dc.check_secrets(dm.models()[which], dm.k8s_secret_keys(), dm.env_file(dm.COMPOSE / ".env.example")) == []


@pytest.mark.parametrize("example", [dm.COMPOSE / ".env.example", *sorted((dm.K8S / "secrets").glob("*.example"))],
                         ids=lambda p: p.name)
def test_secret_templates_hold_placeholders_and_real_files_are_ignored(example):
    real = example.with_suffix("")
    assert dc.check_templates(dm.env_file(example), (real.parent / ".gitignore").read_text(), real.name) == []


def test_cross_file_consistency():
    m = dm.models()
    texts = dm.deploy_texts()
    assert dc.check_setting_names(texts) == []
    assert dc.check_topics(texts, dm.settings_of(m["k8s"].modelbus()[0].env).kafka.topic_prefix) == []
    assert dc.check_interpolation((dm.COMPOSE / "compose.yaml").read_text()
                                  + (dm.COMPOSE / "compose.tls.yaml").read_text()) == []
    assert dc.check_scaling(m["k8s"]) == []
    assert dc.check_ports_agree(m["compose"], m["k8s"]) == []
    assert dc.check_dockerfile((dm.DEPLOY / "Dockerfile").read_text(), dm.load_compose("compose.yaml"),
                               dm.parse(dm.K8S / "kustomization.yaml")[0]) == []
    assert dc.check_grafana_refs(m["compose"], m["k8s"], SCRIPT) == []


def test_triton_image_fits_the_bundled_server():
    """Dockerfile.triton: the NGC release of nvidia-pytriton's tritonserver, its stub for our Python, the paths."""
    assert (dm.ngc_release("2.51.0"), dm.ngc_release("2.53.1"), dm.ngc_release("2.54.0")) == ("24.10", "24.12", "25.01")
    assert dm.bundled_triton_version().startswith("2.")  # read from the installed binary itself
    image, base = dm.dockerfile(dm.DEPLOY / "Dockerfile.triton"), dm.dockerfile(dm.DEPLOY / "Dockerfile")
    assert dc.check_triton_image(image, base, dm.bundled_triton(), dm.bundled_triton_version()) == []


def test_grafana_provisioning_files_fit():
    if not (dm.GRAFANA / "provisioning").is_dir():
        pytest.skip("infra/deploy/grafana is not generated yet; the paths that reference it are checked "
                    "in test_cross_file_consistency")
    m = dm.models()
    assert dc.check_grafana_files(m["compose"], m["k8s"], SCRIPT, dm.GRAFANA) == []


# -- each check bites ---------------------------------------------------------------------------
def _svc(doc, name):
    return doc["services"][name]


def _k8s(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs, kind, name):
    return _k8s(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def _settings(docs):
    return _k8s(docs, "ConfigMap", "modelbus-settings")["data"]


def _set_env(container, name, value):
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, "value": value}]


def _compose_check(check):
    return lambda c, k: check(dm.compose_model(c))


def _k8s_check(check):
    return lambda c, k: check(dm.k8s_model(k, dm.k8s_secret_keys()))


BROKEN = [
    # (id, mutation of (compose doc, k8s docs), check, words the problem must contain)
    ("compose-bootstrap-wrong-port", lambda c, k: _svc(c, "deployer")["environment"].update(
        MODELBUS_KAFKA__BOOTSTRAP_SERVERS="kafka:9093"), _compose_check(dc.check_endpoints), "does not serve port"),
    ("k8s-bootstrap-unknown-host", lambda c, k: _settings(k).update(MODELBUS_KAFKA__BOOTSTRAP_SERVERS="broker:9092"),
     _k8s_check(dc.check_endpoints), "no service 'broker'"),
    ("compose-protocol-mismatch", lambda c, k: _svc(c, "deployer")["environment"].update(
        MODELBUS_KAFKA__SECURITY_PROTOCOL="PLAINTEXT"), _compose_check(dc.check_endpoints), "listener CLIENT"),
    ("k8s-sasl-user-unknown", lambda c, k: _settings(k).update(MODELBUS_KAFKA__SASL_USERNAME="mallory"),
     _k8s_check(dc.check_endpoints), "no SASL user"),
    ("k8s-advertised-without-headless", lambda c, k: k.remove(_k8s(k, "Service", "kafka-headless")),
     _k8s_check(dc.check_endpoints), "headless"),
    ("k8s-clickhouse-port", lambda c, k: _settings(k).update(MODELBUS_CLICKHOUSE__URL="http://clickhouse:8124"),
     _k8s_check(dc.check_endpoints), "does not serve port 8124"),
    ("compose-clickhouse-db", lambda c, k: _svc(c, "clickhouse")["environment"].update(CLICKHOUSE_DB="other"),
     _compose_check(dc.check_endpoints), "user/database"),
    ("k8s-triton-grpc-port", lambda c, k: _container(k, "Deployment", "triton")["command"].remove("--grpc-port=8001"),
     _k8s_check(dc.check_endpoints), "--grpc-port=8001"),
    ("k8s-registry-url", lambda c, k: _settings(k).update(
        MODELBUS_KAFKA__SCHEMA_REGISTRY_URL="http://registry:8081"), _k8s_check(dc.check_endpoints), "'registry'"),
    ("compose-s3-endpoint", lambda c, k: _svc(c, "deployer")["environment"].update(
        MODELBUS_ARTIFACTS__S3_ENDPOINT_URL="http://s3:9000"), _compose_check(dc.check_endpoints), "'s3'"),
    ("compose-tls-without-ca", lambda c, k: (_svc(c, "deployer")["environment"].update(
        MODELBUS_KAFKA__SECURITY_PROTOCOL="SASL_SSL")), _compose_check(dc.check_endpoints), "SSL_CA_LOCATION"),
    ("k8s-bad-setting-value", lambda c, k: _settings(k).update(MODELBUS_TRITON__BACKEND="tensorrt"),
     _k8s_check(dc.check_settings), "invalid settings"),
    ("compose-triton-poll-mode", lambda c, k: _svc(c, "triton").update(command=[
        " ".join(_svc(c, "triton")["command"]).replace("explicit", "poll")]), _compose_check(dc.check_triton),
     "explicit"),
    ("k8s-triton-repository", lambda c, k: _settings(k).update(MODELBUS_TRITON__REPOSITORY="s3://other/repo"),
     _k8s_check(dc.check_triton), "--model-repository=s3://other/repo"),
    ("compose-bucket-missing", lambda c, k: _svc(c, "deployer")["environment"].update(
        MODELBUS_ARTIFACTS__ROOT="s3://elsewhere/artifacts"), _compose_check(dc.check_triton), "'elsewhere'"),
    ("compose-triton-region", lambda c, k: _svc(c, "triton")["environment"].update(AWS_DEFAULT_REGION="eu-west-1"),
     _compose_check(dc.check_triton), "AWS_DEFAULT_REGION"),
    ("k8s-triton-python-backend", lambda c, k: _settings(k).update(MODELBUS_TRITON__BACKEND="python"),
     _k8s_check(dc.check_triton), "pytorch"),
    ("k8s-triton-readiness", lambda c, k: _container(k, "Deployment", "triton").pop("readinessProbe"),
     _k8s_check(dc.check_triton), "/v2/health/ready"),
    ("k8s-triton-two-replicas", lambda c, k: _k8s(k, "Deployment", "triton")["spec"].update(replicas=2),
     _k8s_check(dc.check_triton), "replicas must be 1"),
    ("k8s-triton-no-gpu", lambda c, k: _container(k, "Deployment", "triton")["resources"]["limits"].pop(
        "nvidia.com/gpu"), _k8s_check(dc.check_gpu), "triton: no GPU"),
    ("k8s-training-any-node", lambda c, k: _k8s(k, "Deployment", "training")["spec"]["template"]["spec"].pop(
        "tolerations"), _k8s_check(dc.check_gpu), "GPU nodes"),
    ("compose-training-no-gpu", lambda c, k: _svc(c, "training").pop("deploy"), _compose_check(dc.check_gpu),
     "training: no GPU"),
    ("compose-consumer-missing", lambda c, k: c["services"].pop("telemetry-sink"),
     _compose_check(dc.check_consumers), "'telemetry-sink'"),
    ("k8s-consumer-wrong-name", lambda c, k: _container(k, "Deployment", "deployer").update(
        args=["modelbus", "consumer", "run", "deployr"]), _k8s_check(dc.check_consumers), "'deployr'"),
    ("k8s-replicas-over-partitions", lambda c, k: _k8s(k, "Deployment", "telemetry-sink")["spec"].update(replicas=7),
     lambda c, k: dc.check_scaling(dm.k8s_model(k, dm.k8s_secret_keys())), "7 replicas > 6"),
    ("k8s-two-deployers", lambda c, k: _k8s(k, "Deployment", "deployer")["spec"].update(replicas=2),
     lambda c, k: dc.check_scaling(dm.k8s_model(k, dm.k8s_secret_keys())), "exactly one"),
    ("k8s-consumes-off-catalogue", lambda c, k: _k8s(k, "Deployment", "training")["metadata"]["annotations"].update(
        {"modelbus.io/consumes": "modelbus.datasets.created"}),
     lambda c, k: dc.check_scaling(dm.k8s_model(k, dm.k8s_secret_keys())), "the catalogue says"),
    ("k8s-replication-over-brokers", lambda c, k: _settings(k).update(MODELBUS_KAFKA__REPLICATION_FACTOR="3"),
     lambda c, k: dc.check_scaling(dm.k8s_model(k, dm.k8s_secret_keys())), "> 1 broker"),
    ("compose-triton-nvidia-image", lambda c, k: (_svc(c, "triton").pop("build"), _svc(c, "triton").update(
        image="nvcr.io/nvidia/tritonserver:24.10-py3")), _compose_check(dc.check_triton), "Dockerfile.triton"),
    ("k8s-triton-nvidia-image", lambda c, k: _container(k, "Deployment", "triton").update(
        image="nvcr.io/nvidia/tritonserver:24.10-py3"), _k8s_check(dc.check_triton), "Dockerfile.triton"),
    ("k8s-triton-no-settings", lambda c, k: _container(k, "Deployment", "triton")["envFrom"].pop(0),
     _k8s_check(dc.check_triton), "MODELBUS_KAFKA__BOOTSTRAP_SERVERS,"),
    ("k8s-triton-no-secrets", lambda c, k: _container(k, "Deployment", "triton")["envFrom"].pop(1),
     _k8s_check(dc.check_triton), "MODELBUS_KAFKA__SASL_PASSWORD, MODELBUS_KAFKA__SCHEMA_REGISTRY_AUTH missing"),
    ("compose-triton-no-settings", lambda c, k: _svc(c, "triton").update(
        environment={"AWS_DEFAULT_REGION": "us-east-1"}),
     _compose_check(dc.check_triton), "MODELBUS_KAFKA__SCHEMA_REGISTRY_URL,"),
    ("compose-triton-other-broker", lambda c, k: _svc(c, "triton")["environment"].update(
        MODELBUS_KAFKA__BOOTSTRAP_SERVERS="localhost:9092"), _compose_check(dc.check_triton),
     "MODELBUS_KAFKA__BOOTSTRAP_SERVERS is 'localhost:9092'"),
    ("compose-triton-no-secret-files", lambda c, k: _svc(c, "triton").update(secrets=["s3_access_key"]),
     _compose_check(dc.check_triton), "MODELBUS_KAFKA__SASL_PASSWORD, MODELBUS_KAFKA__SCHEMA_REGISTRY_AUTH missing"),
    ("compose-triton-secrets-not-exported", lambda c, k: _svc(c, "triton")["command"].remove("modelbus-entrypoint"),
     _compose_check(dc.check_triton), "MODELBUS_KAFKA__SASL_PASSWORD, MODELBUS_KAFKA__SCHEMA_REGISTRY_AUTH missing"),
    ("k8s-triton-no-kafka-ca", lambda c, k: _container(k, "Deployment", "triton")["volumeMounts"].pop(2),
     _k8s_check(dc.check_triton), "Secret kafka-tls is not mounted at /etc/modelbus/kafka-tls"),
    ("k8s-triton-data-dir-on-image", lambda c, k: _container(k, "Deployment", "triton")["volumeMounts"].pop(1),
     _k8s_check(dc.check_triton), "MODELBUS_STACK__DATA_DIR /var/lib/modelbus is not on a writable volume"),
    ("compose-triton-data-dir-on-image", lambda c, k: _svc(c, "triton").pop("tmpfs"),
     _compose_check(dc.check_triton), "MODELBUS_STACK__DATA_DIR /var/lib/modelbus is not on a writable volume"),
    ("compose-triton-kafka-unreachable", lambda c, k: _svc(c, "triton")["environment"].update(
        MODELBUS_KAFKA__BOOTSTRAP_SERVERS="kafka:9093"), _compose_check(dc.check_endpoints), "triton: kafka:9093"),
    ("ports-disagree", lambda c, k: _k8s(k, "Service", "triton")["spec"]["ports"][1].update(port=8011),
     lambda c, k: dc.check_ports_agree(dm.compose_model(c), dm.k8s_model(k, dm.k8s_secret_keys())), "triton"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_check_catches_a_broken_document(case):
    _, mutate, check, words = case
    compose, k8s = dm.load_compose("compose.yaml"), dm.k8s_docs()
    assert check(compose, k8s) == [], "the unbroken documents must pass first"
    mutate(compose, k8s)
    problems = check(compose, k8s)
    assert any(words in p for p in problems), problems


def test_triton_without_the_kafka_ca_is_caught():
    """SASL_SSL (compose.tls.yaml): the fronts' producer needs the CA file the consumers get."""
    doc = dm.load_compose("compose.yaml", "compose.tls.yaml")
    assert dc.check_triton(dm.compose_model(doc)) == []
    _svc(doc, "triton")["secrets"] = [x for x in _svc(doc, "triton")["secrets"] if x["source"] != "kafka_ca"]
    model = dm.compose_model(doc)
    problems = dc.check_triton(model)
    assert "compose/triton: /run/secrets/kafka_ca.pem is not mounted (deployer's settings use it)" in problems, problems
    assert "compose/triton: CA /run/secrets/kafka_ca.pem is not a mounted secret" in dc.check_endpoints(model)


TRITON_DF = (dm.DEPLOY / "Dockerfile.triton").read_text()
BROKEN_TRITON_IMAGE = [
    # (id, Dockerfile.triton text → broken text, words the problem must contain)
    ("release-of-another-server", lambda t: t.replace("tritonserver:24.10-py3", "tritonserver:24.12-py3"),
     "NGC release 24.10"),
    ("not-the-nvidia-image", lambda t: t.replace("FROM nvcr.io/nvidia/tritonserver:24.10-py3", "FROM ubuntu:22.04"),
     "must be nvcr.io/nvidia/tritonserver"),
    ("other-python", lambda t: t.replace("uv python install 3.11", "uv python install 3.12"),
     "`uv python install` must name Python 3.11"),
    ("stub-of-other-python", lambda t: t.replace("python_backend_stubs/3.11/", "python_backend_stubs/3.10/"),
     "must cp /opt/modelbus/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/"),
    ("stub-linked", lambda t: t.replace('RUN cp "$VIRTUAL_ENV', 'RUN ln -s "$VIRTUAL_ENV'), "must cp"),
    ("stub-elsewhere", lambda t: t.replace("       /opt/tritonserver/backends/python/triton_python_backend_stub \\\n",
                                           "       /opt/stub \\\n"), "must cp"),
    ("no-pytriton-libs", lambda t: t.replace(":/opt/modelbus/lib/python3.11/site-packages/nvidia_pytriton.libs", ""),
     "LD_LIBRARY_PATH does not name /opt/modelbus/lib/python3.11/site-packages/nvidia_pytriton.libs"),
    ("no-libdir", lambda t: t.replace("LD_LIBRARY_PATH=/opt/python-libdir:", "LD_LIBRARY_PATH="), "Python LIBDIR"),
    ("image-ld-path-dropped", lambda t: t.replace("${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}", ""), "base image's value"),
    ("venv-not-first", lambda t: t.replace("ENV PATH=/opt/modelbus/bin:$PATH", "ENV PATH=$PATH:/opt/modelbus/bin"),
     "PATH must start with /opt/modelbus/bin"),
    ("project-not-installed", lambda t: t.replace('uv pip install --python "$VIRTUAL_ENV/bin/python" .',
                                                  "uv pip install torch"), "must be installed into /opt/modelbus"),
    ("sources-missing", lambda t: t.replace("COPY serving ./serving\n", ""), "does not COPY serving"),
    ("uv-unpinned", lambda t: t.replace("astral-sh/uv:0.13.8", "astral-sh/uv:latest"), "pinned"),
    ("entrypoint-replaced", lambda t: t + 'ENTRYPOINT ["tritonserver"]\n', "keep the image's"),
    ("no-secret-exporter", lambda t: t.replace("/usr/local/bin/modelbus-entrypoint", "/usr/local/bin/mb"),
     "modelbus-entrypoint"),
]


@pytest.mark.parametrize("case", BROKEN_TRITON_IMAGE, ids=[b[0] for b in BROKEN_TRITON_IMAGE])
def test_triton_image_check_catches_a_broken_dockerfile(case):
    _, mutate, words = case
    base, layout, version = dm.dockerfile(dm.DEPLOY / "Dockerfile"), dm.bundled_triton(), dm.bundled_triton_version()
    broken = mutate(TRITON_DF)
    assert broken != TRITON_DF, "the mutation must change the file"
    problems = dc.check_triton_image(dm.parse_dockerfile(broken), base, layout, version)
    assert any(words in p for p in problems), problems


def test_triton_image_check_catches_a_mismatched_package(tmp_path):
    """The same Dockerfile against another bundled server, or a package without our Python's stub."""
    df, base, layout = dm.parse_dockerfile(TRITON_DF), dm.dockerfile(dm.DEPLOY / "Dockerfile"), dm.bundled_triton()
    problems = dc.check_triton_image(df, base, layout, "2.53.0")
    assert any("tritonserver 2.53.0, NGC release 24.12" in p for p in problems), problems
    site = tmp_path / "site-packages"
    fake = dataclasses.replace(layout, libs=site / "nvidia_pytriton.libs",
                               stub_src=site / layout.stub_src.relative_to(layout.libs.parent))
    problems = dc.check_triton_image(df, base, fake, dm.bundled_triton_version())
    assert any("the installed nvidia-pytriton has no stub for Python" in p for p in problems), problems


def test_inline_and_unmounted_secrets_are_caught():
    compose = dm.load_compose("compose.yaml")
    env = dm.env_file(dm.COMPOSE / ".env.example")
    _svc(compose, "metadata-sink")["environment"] = {**_svc(compose, "metadata-sink")["environment"],
                                                      "MODELBUS_CLICKHOUSE__PASSWORD": "hunter2"}
    _svc(compose, "clickhouse")["secrets"] = []
    _svc(compose, "grafana")["secrets"][1].pop("mode")
    compose["secrets"]["grafana_admin_password"] = {"content": "admin"}
    problems = dc.check_secrets(dm.compose_model(compose), None, env)
    assert any("metadata-sink: MODELBUS_CLICKHOUSE__PASSWORD is inline" in p for p in problems), problems
    assert any("clickhouse: /run/secrets/clickhouse_password is used but not mounted" in p for p in problems)
    assert any("grafana_admin_password: only `environment`" in p for p in problems)
    assert any("grafana: secret clickhouse_read_password is unreadable" in p for p in problems)

    docs, keys = dm.k8s_docs(), dm.k8s_secret_keys()
    _set_env(_container(docs, "StatefulSet", "clickhouse"), "CLICKHOUSE_PASSWORD", "hunter2")
    _settings(docs)["MODELBUS_KAFKA__SASL_PASSWORD"] = "hunter2"
    _container(docs, "Deployment", "grafana")["env"][2]["valueFrom"]["secretKeyRef"]["key"] = "NOPE"
    problems = dc.check_secrets(dm.k8s_model(docs, keys), keys)
    assert any("clickhouse: CLICKHOUSE_PASSWORD is inline" in p for p in problems), problems
    assert any("ConfigMap modelbus-settings: MODELBUS_KAFKA__SASL_PASSWORD is a secret" in p for p in problems)
    assert any("missing platform-secrets/NOPE" in p for p in problems)


def test_text_checks_catch_bad_names_topics_templates_and_interpolation():
    texts = {"x.yaml": "MODELBUS_KAFKA__BOOTSTRAP_SERVER: kafka:9092\nMODELBUS_TRITON__GRPC_URL: triton:8001\n"
                       "consumes: modelbus.datasets.create,modelbus.datasets.created.dlq"}
    assert dc.check_setting_names(texts) == ["x.yaml: MODELBUS_KAFKA__BOOTSTRAP_SERVER is not a setting"]
    assert dc.check_topics(texts, "modelbus") == ["x.yaml: topic modelbus.datasets.create is not in the catalogue"]
    assert dc.check_templates({"KAFKA_SASL_PASSWORD": "s3cret", "TOPIC": "x"}, "# none\n*.txt\n", ".env") == [
        "KAFKA_SASL_PASSWORD: template value is not a CHANGE_ME placeholder", ".env is not git-ignored"]
    assert dc.check_interpolation('cmd: "$$(cat f) ${PASSWORD} $$HOME $USER"') == [
        "compose: interpolates $PASSWORD (write $$ for the container's shell)",
        "compose: interpolates $USER (write $$ for the container's shell)"]
    bad_dockerfile = (dm.DEPLOY / "Dockerfile").read_text().replace("python:3.11-slim", "python:3.12")
    assert dc.check_dockerfile(bad_dockerfile, dm.load_compose("compose.yaml")) == [
        "base image must be python:3.11-slim"]
    compose, kust = dm.load_compose("compose.yaml"), dm.parse(dm.K8S / "kustomization.yaml")[0]
    _svc(compose, "triton")["build"]["dockerfile"] = "infra/deploy/Dockerfile"
    kust["images"] = [i for i in kust["images"] if i["name"] != "modelbus-triton"]
    assert dc.check_dockerfile((dm.DEPLOY / "Dockerfile").read_text(), compose, kust) == [
        "compose/triton: builds {'context': '../../..', 'dockerfile': 'infra/deploy/Dockerfile'}, "
        "not infra/deploy/Dockerfile.triton from the repository root",
        "k8s: kustomization.yaml does not map image modelbus-triton to the registry"]


def test_grafana_checks_catch_inconsistent_provisioning(tmp_path):
    m = dm.models()
    broken_script = SCRIPT.replace("grafana-dashboards dashboards", "grafana-dashboards boards")
    assert dc.check_grafana_refs(m["compose"], m["k8s"], broken_script) == [
        "k8s/grafana: 'boards' is neither dashboards nor a provisioning directory",
        "k8s/grafana: dashboards is not mounted"]
    compose, docs = dm.load_compose("compose.yaml"), dm.k8s_docs()
    _svc(compose, "grafana")["volumes"][0] = "../grafana/provisioning:/etc/grafana/prov:ro"
    _container(docs, "Deployment", "grafana")["volumeMounts"][2]["mountPath"] = "/dashboards"
    problems = dc.check_grafana_refs(dm.compose_model(compose), dm.k8s_model(docs, dm.k8s_secret_keys()), SCRIPT)
    assert any(p.startswith("compose/grafana: mounts") for p in problems), problems
    assert "k8s/grafana: dashboards is mounted at /dashboards, not where compose and Grafana expect it" in problems
    (tmp_path / "provisioning" / "datasources").mkdir(parents=True)
    (tmp_path / "provisioning" / "dashboards").mkdir()
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "provisioning" / "datasources" / "ch.yaml").write_text(
        "datasources:\n- type: grafana-clickhouse-datasource\n"
        "  jsonData: {host: $CH_HOST, port: '${CLICKHOUSE_PORT}'}\n")
    (tmp_path / "provisioning" / "dashboards" / "p.yaml").write_text(
        "providers:\n- name: modelbus\n  options: {path: /dashboards}\n")
    problems = dc.check_grafana_files(m["compose"], m["k8s"], SCRIPT, tmp_path)
    assert "dashboards/modelbus.json does not exist" in problems
    assert "ch.yaml: $CH_HOST is not set in compose/grafana" in problems
    assert "ch.yaml: $CH_HOST is not set in k8s/grafana" in problems
    assert "p.yaml: provider path /dashboards != mount /var/lib/grafana/dashboards" in problems
    assert not any("CLICKHOUSE_PORT" in p for p in problems)


@pytest.mark.parametrize("which", ["compose", "k8s"])
def test_grafana_reads_as_the_read_only_user(which):
    assert dc.check_grafana_reader(dm.models()[which]) == []


def test_grafana_reader_check_catches_the_writer():
    compose, docs = dm.load_compose("compose.yaml"), dm.k8s_docs()
    g = _svc(compose, "grafana")
    g["environment"]["CLICKHOUSE_USER"] = "modelbus"
    g["entrypoint"][-1] = g["entrypoint"][-1].replace("clickhouse_read_password", "clickhouse_password")
    _svc(compose, "clickhouse-migrate")["command"][-1] = "print('migrations only')"
    assert dc.check_grafana_reader(dm.compose_model(compose)) == [
        "compose/grafana: connects as 'modelbus', not the read-only user 'modelbus_reader'",
        "compose/grafana: its password comes from 'clickhouse_password', not 'clickhouse_read_password'",
        "compose/clickhouse-migrate: does not create the read-only user (ensure_reader)"]
    env = _container(docs, "Deployment", "grafana")["env"]
    next(e for e in env if e["name"] == "CLICKHOUSE_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = \
        "MODELBUS_CLICKHOUSE__PASSWORD"
    assert dc.check_grafana_reader(dm.k8s_model(docs, dm.k8s_secret_keys())) == [
        "k8s/grafana: its password comes from 'MODELBUS_CLICKHOUSE__PASSWORD', "
        "not 'MODELBUS_CLICKHOUSE__READ_PASSWORD'"]
