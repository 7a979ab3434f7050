"""Checkers of the production deployment files (infra/deploy), used by test_deploy_files.py.

Nothing in the suite starts these files (no docker daemon, no cluster here), so what keeps
them honest is checking them against the code they configure: the settings model, the
topic catalogue, the consumer table, the ports each part listens on and where secrets come
from. Each checker returns a list of problems, empty when all is well.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from deploy_model import COMPOSE, FIELDS, GRAFANA, IMAGES, ROOT, Model, Workload, resolve, secretish, settings_of
from deploy_triton_checks import check_triton, check_triton_image  # noqa: F401  (re-exported: one checker module)
from pydantic import ValidationError

from consumers.registry import CONSUMERS
from infra.kafka.topics import CATALOGUE, DLQ_SUFFIX

CH_PLUGIN = "grafana-clickhouse-datasource"
# Catalogue wording (TopicSpec.consumers) of each consumer; None: it reads no topic.
PHRASES = {"training": "training consumers", "search-coordinator": "search coordinator", "deployer": "deployer",
           "telemetry-sink": "telemetry sink", "metadata-sink": "metadata sink", "drift-monitor": None,
           "metrics-scraper": None}
SINGLETONS = ("deployer", "drift-monitor", "metrics-scraper")
# Images whose processes do not run as root (compose secrets must be world-readable for them).
NON_ROOT_IMAGES = ("modelbus:", "apache/kafka:", "confluentinc/", "grafana/grafana:")



# -- checkers ------------------------------------------------------------------------------
def check_setting_names(texts: dict[str, str]) -> list[str]:
    """Every MODELBUS_* name in the files is a settings field (a name ending in '__' is a section)."""
    sections = {n.split("__")[0] + "__" for n in FIELDS if "__" in n}
    return [f"{path}: {name} is not a setting" for path, text in texts.items()
            for name in sorted(set(re.findall(r"\bMODELBUS_[A-Z0-9_]+", text)))
            if name not in FIELDS and name not in sections and name != "MODELBUS_CONFIG"]


def check_settings(model: Model) -> list[str]:
    problems = [] if model.modelbus() else [f"{model.kind}: no ModelBus workloads"]
    for w in model.modelbus():
        try:
            settings_of(w.env)
        except ValidationError as exc:
            problems.append(f"{model.kind}/{w.name}: invalid settings: {exc}")
    return problems


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    return {n: (h, int(p)) for n, h, p in re.findall(r"(\w+)://([^,]*):(\d+)", value)}


def _listener_problems(model: Model, broker: Workload, cport: int, protocol: str, who: str,
                       mechanism: str | None = None, user: str | None = None) -> list[str]:
    env, tag = broker.env, f"{model.kind}/{who}"
    names = [n for n, (_, p) in _listeners(env.get("KAFKA_LISTENERS") or "").items() if p == cport]
    if not names:
        return [f"{tag}: broker {broker.name} has no listener on port {cport}"]
    protos = dict(x.split(":") for x in (env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP") or "").split(",") if x)
    problems = []
    if protos.get(names[0]) != protocol:
        problems.append(f"{tag}: speaks {protocol} but listener {names[0]} is {protos.get(names[0])}")
    if protocol.startswith("SASL") and mechanism is not None:
        if mechanism not in (env.get("KAFKA_SASL_ENABLED_MECHANISMS") or "").split(","):
            problems.append(f"{tag}: SASL mechanism {mechanism} is not enabled on {broker.name}")
        if f'user_{user}="' not in broker.text:
            problems.append(f"{tag}: broker {broker.name} defines no SASL user {user!r}")
    adv = _listeners(env.get("KAFKA_ADVERTISED_LISTENERS") or "").get(names[0])
    if adv is None:
        return problems + [f"{tag}: listener {names[0]} is not advertised"]
    host, port = adv
    if host.startswith("$(") and model.kind == "k8s":  # <pod>.<headless service>
        host = host.split(".", 1)[1]
        if host not in model.headless:
            problems.append(f"{tag}: advertised host needs headless service {host!r}")
    hit, p = resolve(model, host, port, who + " (advertised listener)")
    if hit and hit[0] is not broker:
        p.append(f"{tag}: advertised {host}:{port} reaches {hit[0].name}, not the broker")
    return problems + p


def check_endpoints(model: Model) -> list[str]:
    """Each address a ModelBus setting holds reaches the part that listens there."""
    problems: list[str] = []
    for w in model.modelbus():
        try:
            s = settings_of(w.env)
        except ValidationError:
            continue  # check_settings reports it
        k = s.kafka
        for hp in k.bootstrap_servers.split(","):
            host, port = hp.rsplit(":", 1)
            hit, p = resolve(model, host, int(port), w.name)
            problems += p or _listener_problems(model, *hit, k.security_protocol, w.name, k.sasl_mechanism,
                                                k.sasl_username)
        if "SSL" in k.security_protocol and not k.ssl_ca_location:
            problems.append(f"{model.kind}/{w.name}: {k.security_protocol} without MODELBUS_KAFKA__SSL_CA_LOCATION")
        if k.ssl_ca_location and model.kind.startswith("compose") and k.ssl_ca_location not in w.secret_files:
            problems.append(f"{model.kind}/{w.name}: CA {k.ssl_ca_location} is not a mounted secret")
        u = urlsplit(s.clickhouse.url or "")
        if not u.hostname:
            problems.append(f"{model.kind}/{w.name}: MODELBUS_CLICKHOUSE__URL unset (embedded chdb)")
        else:
            hit, p = resolve(model, u.hostname, u.port or (8443 if u.scheme == "https" else 8123), w.name)
            problems += p
            if hit and (hit[0].env.get("CLICKHOUSE_USER"), hit[0].env.get("CLICKHOUSE_DB")) != (
                    s.clickhouse.user, s.clickhouse.database):
                problems.append(f"{model.kind}/{w.name}: ClickHouse user/database differ from the server's")
        t = s.triton
        for url, flag in ((t.grpc_url, "--grpc-port"), (t.http_url, "--http-port"),
                          (urlsplit(t.metrics_url).netloc, "--metrics-port")):
            host, port = url.rsplit(":", 1)
            hit, p = resolve(model, host, int(port), w.name)
            problems += p
            if hit and f"{flag}={hit[1]}" not in hit[0].text:
                problems.append(f"{model.kind}/{w.name}: {url} reaches container port {hit[1]}, "
                                f"but {hit[0].name} is not started with {flag}={hit[1]}")
        if k.schema_registry_url:
            r = urlsplit(k.schema_registry_url)
            hit, p = resolve(model, r.hostname or "", r.port or 80, w.name)
            problems += p
            if hit:
                reg = hit[0]
                if f":{hit[1]}" not in (reg.env.get("SCHEMA_REGISTRY_LISTENERS") or ""):
                    problems.append(f"{model.kind}/{w.name}: registry {reg.name} does not listen on {hit[1]}")
                proto, _, rest = (reg.env.get("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS") or "").partition("://")
                host, _, port = rest.rpartition(":")
                bh, p = resolve(model, host, int(port or 0), reg.name)
                problems += p or _listener_problems(model, *bh, proto, reg.name)
        if s.artifacts.s3_endpoint_url:
            e = urlsplit(s.artifacts.s3_endpoint_url)
            problems += resolve(model, e.hostname or "", e.port or 80, w.name)[1]
    return problems


def check_gpu(model: Model) -> list[str]:
    problems = []
    for name in ("triton", "training"):
        w = model.workloads.get(name)
        if w is None or not w.gpu:
            problems.append(f"{model.kind}/{name}: no GPU requested")
        elif model.kind == "k8s":
            pod, res = w.raw["pod"], w.raw["container"].get("resources", {})
            if "nvidia.com/gpu" not in res.get("requests", {}):
                problems.append(f"k8s/{name}: no nvidia.com/gpu request")
            if not (pod.get("nodeSelector") or pod.get("affinity")) or not any(
                    t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
                problems.append(f"k8s/{name}: not placed on GPU nodes (nodeSelector/affinity + toleration)")
    return problems


def check_consumers(model: Model) -> list[str]:
    problems = []
    for name in CONSUMERS:
        w = model.workloads.get(name)
        if w is None or not w.is_modelbus or w.consumer() != name:
            problems.append(f"{model.kind}: no ModelBus workload {name!r} running `modelbus consumer run {name}`")
    problems += [f"{model.kind}/{w.name}: unknown consumer {w.consumer()!r}" for w in model.modelbus()
                 if w.consumer() and w.consumer() not in CONSUMERS]
    return problems


def check_secrets(model: Model, k8s_generators: dict[str, set[str]] | None = None,
                  env_example: dict[str, str] | None = None) -> list[str]:
    """No secret value inline: each comes from a compose secret or a Kubernetes Secret."""
    problems = []
    for w in model.workloads.values():
        for k, v in w.env.items():
            if secretish(k) and v is not None and not (k.endswith(("_FILE", "_LOCATION")) and v.startswith("/")):
                problems.append(f"{model.kind}/{w.name}: {k} is inline; it must come from a secret")
        for ref in set(re.findall(r"/run/secrets/[\w.-]+", w.text)) - w.secret_files:
            problems.append(f"{model.kind}/{w.name}: {ref} is used but not mounted")
    if model.kind.startswith("compose"):
        top = model.raw.get("secrets", {})
        for w in model.workloads.values():
            for x in w.raw.get("secrets", []):
                src, mode = (x, None) if isinstance(x, str) else (x["source"], x.get("mode"))
                if src not in top:
                    problems.append(f"compose/{w.name}: secret {src} is not declared")
                # Compose writes `environment` secrets root-owned, mode 0400 unless told otherwise.
                elif w.image.startswith(NON_ROOT_IMAGES) and "environment" in top[src] and not (mode or 0) & 0o004:
                    problems.append(f"compose/{w.name}: secret {src} is unreadable by the image's non-root user "
                                    "(mode 0444)")
        for name, spec in top.items():
            if set(spec) - {"environment", "file"}:
                problems.append(f"compose secret {name}: only `environment` (.env) or `file` sources")
            if "environment" in spec and spec["environment"] not in (env_example or {}):
                problems.append(f"compose secret {name}: {spec['environment']} is missing from .env.example")
    else:
        for w in model.workloads.values():
            c = w.raw["container"]
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in (k8s_generators or {}).get(ref["name"], ()) and not ref.get("optional"):
                    problems.append(f"k8s/{w.name}: {e['name']} refers to missing {ref['name']}/{ref['key']}")
            problems += [f"k8s/{w.name}: envFrom unknown Secret {s['secretRef']['name']}" for s in c.get("envFrom", [])
                         if "secretRef" in s and s["secretRef"]["name"] not in (k8s_generators or {})]
        problems += [f"k8s ConfigMap {d['metadata']['name']}: {k} is a secret" for d in model.raw
                     if d["kind"] == "ConfigMap" for k in d.get("data", {}) if secretish(k)]
    return problems


def check_templates(example: dict[str, str], gitignore: str, real_name: str) -> list[str]:
    """Secret templates hold placeholders only, and the real file is git-ignored."""
    problems = [f"{k}: template value is not a CHANGE_ME placeholder" for k, v in example.items()
                if secretish(k) and "CHANGE_ME" not in v]
    patterns = [ln.strip() for ln in gitignore.splitlines() if ln.strip() and not ln.startswith("#")]
    if not any(Path(real_name).match(p) for p in patterns):
        problems.append(f"{real_name} is not git-ignored")
    return problems


def check_interpolation(compose_text: str) -> list[str]:
    """No compose interpolation: values are literal, secrets come via `secrets:`; `$$` is the shell's `$`."""
    return [f"compose: interpolates ${m} (write $$ for the container's shell)"
            for m in re.findall(r"\$\{?([A-Za-z_]\w*)", compose_text.replace("$$", ""))]


def check_topics(texts: dict[str, str], prefix: str) -> list[str]:
    names = {f"{prefix}.{t.name}" for t in CATALOGUE}
    names |= {n + DLQ_SUFFIX for n in names}
    pattern = rf"(?<![\w./-]){re.escape(prefix)}\.[a-z]+\.[a-z]+(?:\.dlq)?(?![\w.-])"
    return [f"{path}: topic {t} is not in the catalogue" for path, text in texts.items()
            for t in sorted(set(re.findall(pattern, text))) if t not in names]


def check_scaling(model: Model) -> list[str]:
    """k8s replicas: ≤ partitions of the consumed topics (as the catalogue says who consumes what)."""
    s = settings_of(model.modelbus()[0].env)
    parts = {s.topic(t.name): t.partitions or s.kafka.default_partitions for t in CATALOGUE}
    problems = []
    for name, phrase in PHRASES.items():
        w = model.workloads.get(name)
        if w is None:
            continue  # check_consumers reports it
        consumes = [t for t in w.annotations.get("modelbus.io/consumes", "").split(",") if t]
        expected = {s.topic(t.name) for t in CATALOGUE if phrase and phrase in t.consumers}
        if set(consumes) != expected:
            problems.append(f"k8s/{name}: consumes {sorted(consumes)}, the catalogue says {sorted(expected)}")
        bound = min((parts.get(t, 0) for t in consumes), default=1)
        if w.replicas > bound:
            problems.append(f"k8s/{name}: {w.replicas} replicas > {bound} partitions of {consumes or 'no topic'}")
        if name in SINGLETONS and w.replicas != 1:
            problems.append(f"k8s/{name}: must run exactly one replica")
    brokers = sum(w.replicas for w in model.workloads.values() if w.image.startswith("apache/kafka:"))
    if brokers and s.kafka.replication_factor > brokers:
        problems.append(f"k8s: replication factor {s.kafka.replication_factor} > {brokers} broker(s)")
    return problems


def check_ports_agree(compose: Model, k8s: Model) -> list[str]:
    return [f"{name}: k8s Service ports {sorted(ports)} != compose expose {sorted(compose.workloads[name].ports)}"
            for name, ports in k8s.services.items()
            if name not in k8s.headless and name in compose.workloads and set(ports) != compose.workloads[name].ports]


def grafana_mounts(compose: Model, k8s: Model, script: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(grafana dir → container path) for compose and for k8s, and the problems found on the way."""
    problems, c_mounts, k_mounts = [], {}, {}
    g = compose.workloads.get("grafana")
    for v in (g.raw.get("volumes", []) if g else []):
        src, _, dst = v.partition(":")
        if src.startswith("."):
            path = (COMPOSE / src).resolve()
            if GRAFANA not in (path, *path.parents):
                problems.append(f"compose/grafana: {src} is outside infra/deploy/grafana")
            c_mounts[str(path.relative_to(GRAFANA)) if GRAFANA in path.parents else "?"] = dst.split(":")[0]
    table = dict(re.findall(r"^(grafana-[\w-]+) ([\w/.-]+)$", script, re.M))
    kg = k8s.workloads.get("grafana")
    vols = {v["name"]: v.get("configMap", {}).get("name") for v in (kg.raw["pod"].get("volumes", []) if kg else [])}
    for m in (kg.raw["container"].get("volumeMounts", []) if kg else []):
        cm = vols.get(m["name"])
        if cm:
            if cm not in table:
                problems.append(f"k8s/grafana: ConfigMap {cm} is not created by grafana-config.sh")
            k_mounts[table.get(cm, "?")] = m["mountPath"]
    for d in (g, kg):
        if d is None or CH_PLUGIN not in (d.env.get("GF_INSTALL_PLUGINS") or ""):
            problems.append(f"grafana: the {CH_PLUGIN} plugin is not installed")
    return c_mounts, k_mounts, problems


def check_grafana_refs(compose: Model, k8s: Model, script: str) -> list[str]:
    """The provisioning paths both deployments mount agree with each other and with Grafana's layout."""
    c, k, problems = grafana_mounts(compose, k8s, script)
    if c.get("provisioning") != "/etc/grafana/provisioning" or "dashboards" not in c:
        problems.append(f"compose/grafana: mounts {c}, not provisioning at /etc/grafana/provisioning plus dashboards")
    for d, path in k.items():
        if d != "dashboards" and not d.startswith("provisioning/"):
            problems.append(f"k8s/grafana: {d!r} is neither dashboards nor a provisioning directory")
        elif path != (c.get("dashboards") if d == "dashboards" else "/etc/grafana/" + d):
            problems.append(f"k8s/grafana: {d} is mounted at {path}, not where compose and Grafana expect it")
    missing = {"provisioning/datasources", "provisioning/dashboards", "dashboards"} - set(k)
    problems += [f"k8s/grafana: {d} is not mounted" for d in sorted(missing)]
    return problems


def check_grafana_files(compose: Model, k8s: Model, script: str, root: Path) -> list[str]:
    """The generated provisioning exists and fits: datasource env and dashboard provider path."""
    c, k, problems = grafana_mounts(compose, k8s, script)
    problems += [f"{root / d} does not exist" for d in {*c, *k} if not (root / d).is_dir()]
    if not (root / "dashboards" / "modelbus.json").is_file():
        problems.append("dashboards/modelbus.json does not exist")
    g, kg = compose.workloads["grafana"], k8s.workloads["grafana"]
    exported = set(re.findall(r"export (\w+)=", g.text))
    for f in sorted((root / "provisioning").rglob("*.y*ml")):
        doc = yaml.safe_load(f.read_text()) or {}
        refs = set(re.findall(r"\$\{?([A-Za-z_]\w*)", f.read_text())) - {"__file", "__env", "__vault"}
        for name, env in (("compose", set(g.env) | exported), ("k8s", set(kg.env))):
            problems += [f"{f.name}: ${r} is not set in {name}/grafana" for r in sorted(refs - env)]
        for p in doc.get("providers", []):
            if p.get("options", {}).get("path") not in (c.get("dashboards"), None):
                problems.append(f"{f.name}: provider path {p['options']['path']} != mount {c.get('dashboards')}")
        types = {d.get("type") for d in doc.get("datasources", [])}
        if types and CH_PLUGIN not in types:
            problems.append(f"{f.name}: no {CH_PLUGIN} datasource")
    return problems


def _grafana_password_source(model: Model, g: Workload) -> str | None:
    """Where Grafana's CLICKHOUSE_PASSWORD comes from: the compose secret file it reads, or the k8s Secret key."""
    if model.kind == "k8s":
        for e in g.raw["container"].get("env", []):
            if e["name"] == "CLICKHOUSE_PASSWORD":
                return e.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
        return None
    m = re.search(r'export CLICKHOUSE_PASSWORD="\$+\(cat /run/secrets/(\w+)\)"', g.text)
    return m.group(1) if m else None


def check_grafana_reader(model: Model) -> list[str]:
    """Grafana connects as the read-only user the migration job creates, with that user's password."""
    g, job = model.workloads.get("grafana"), model.workloads.get("clickhouse-migrate")
    if g is None or job is None:
        return [f"{model.kind}: no grafana or clickhouse-migrate workload"]
    ch = settings_of(job.env).clickhouse
    problems = []
    if not ch.read_user or ch.read_user == ch.user:
        problems.append(f"{model.kind}: MODELBUS_CLICKHOUSE__READ_USER is not a user of its own")
    if g.env.get("CLICKHOUSE_USER") != ch.read_user:
        problems.append(f"{model.kind}/grafana: connects as {g.env.get('CLICKHOUSE_USER')!r}, "
                        f"not the read-only user {ch.read_user!r}")
    source = _grafana_password_source(model, g)
    want = {"k8s": "MODELBUS_CLICKHOUSE__READ_PASSWORD"}.get(model.kind, "clickhouse_read_password")
    if source != want:
        problems.append(f"{model.kind}/grafana: its password comes from {source!r}, not {want!r}")
    if "ensure_reader(" not in job.text:
        problems.append(f"{model.kind}/clickhouse-migrate: does not create the read-only user (ensure_reader)")
    return problems


def check_dockerfile(text: str, compose_doc: dict, kustomization: dict | None = None) -> list[str]:
    problems = [m for m, ok in (
        ("base image must be python:3.11-slim", re.search(r"^FROM python:3\.11-slim\b", text, re.M)),
        ("must install the project", re.search(r"pip install \.$", text, re.M)),
        ("entrypoint must export /run/secrets", 'ENTRYPOINT ["modelbus-entrypoint"]' in text)) if not ok]
    for name, s in compose_doc["services"].items():
        b, image = s.get("build"), Workload(name, s.get("image", ""), [], {}, set()).image_name
        if b and ((COMPOSE / b["context"]).resolve() != ROOT or b["dockerfile"] != IMAGES.get(image)):
            problems.append(f"compose/{name}: builds {b}, not {IMAGES.get(image)} from the repository root")
        elif image in IMAGES and not b:
            problems.append(f"compose/{name}: {s['image']} has no `build` ({IMAGES[image]})")
    if kustomization is not None:
        mapped = {i["name"] for i in kustomization.get("images", [])}
        problems += [f"k8s: kustomization.yaml does not map image {n} to the registry"
                     for n in IMAGES if n not in mapped]
    return problems
