"""One model of both deployments (compose, Kubernetes) for the checks in deploy_checks.py.

Compose services and Kubernetes workloads are reduced to the same shape: what runs (image,
argv), with which environment (None where a secret supplies the value), on which container
ports, and which DNS name and port reach it. The checks then ask one question of both.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
COMPOSE, K8S, GRAFANA = DEPLOY / "compose", DEPLOY / "k8s", DEPLOY / "grafana"


# -- the settings model ------------------------------------------------------------------
def settings_fields() -> dict[str, object]:
    """Every MODELBUS_* variable the settings accept → its pydantic field."""
    out = {}
    for section, f in Settings.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.update({f"MODELBUS_{section.upper()}__{n.upper()}": sf for n, sf in f.annotation.model_fields.items()})
        else:
            out[f"MODELBUS_{section.upper()}"] = f
    return out


FIELDS = settings_fields()
SECRET_SETTINGS = {n for n, f in FIELDS.items() if "SecretStr" in str(f.annotation)}


def secretish(name: str) -> bool:
    """Whether a variable holds a secret: by its name, or because the setting is a SecretStr."""
    words = set(name.replace("__", "_").split("_"))
    return bool(words & {"PASSWORD", "SECRET", "TOKEN", "CREDENTIALS"}) or name.endswith(("_KEY", "_KEY_ID", "_AUTH")) \
        or name in SECRET_SETTINGS


def settings_of(env: dict[str, str | None]) -> Settings:
    """Settings a process with this environment builds (secret values stand in as placeholders)."""
    nested: dict = {}
    for k, v in env.items():
        if k.startswith("MODELBUS_"):
            v = ("user:placeholder" if k.endswith("_AUTH") else "placeholder") if v is None else v
            section, _, fld = k[len("MODELBUS_"):].lower().partition("__")
            if fld:
                nested.setdefault(section, {})[fld] = v
            else:
                nested[section] = v
    return Settings(**nested)


# -- one model of either deployment --------------------------------------------------------
@dataclass
class Workload:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str | None]          # None: the value comes from a secret
    ports: set[int]                     # container ports it listens on (compose: `expose`)
    gpu: bool = False
    replicas: int = 1
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    secret_files: set[str] = field(default_factory=set)
    extra_text: str = ""                # healthchecks and the like
    raw: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join([*self.argv, *(f"{k}={v}" for k, v in self.env.items() if v), self.extra_text])

    @property
    def is_modelbus(self) -> bool:
        return self.image.split(":")[0].rsplit("/", 1)[-1] == "modelbus"

    def consumer(self) -> str | None:
        a = self.argv
        return next((a[i + 3] for i in range(len(a) - 3) if a[i:i + 3] == ["modelbus", "consumer", "run"]), None)


@dataclass
class Model:
    kind: str
    workloads: dict[str, Workload]
    services: dict[str, dict[int, tuple[str | None, int | None]]]  # DNS name → port → (workload, container port)
    headless: set[str] = field(default_factory=set)
    raw: object = None

    def modelbus(self) -> list[Workload]:
        return [w for w in self.workloads.values() if w.is_modelbus]


def _argv(v) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else [str(x) for x in v]


def _env(v) -> dict[str, str]:
    if isinstance(v, list):
        return dict(x.split("=", 1) if "=" in x else (x, "") for x in v)
    return {k: "" if x is None else str(x).lower() if isinstance(x, bool) else str(x) for k, x in (v or {}).items()}


def compose_model(doc: dict) -> Model:
    wl, svcs = {}, {}
    for name, s in doc.get("services", {}).items():
        targets = [x if isinstance(x, str) else x.get("target", x["source"]) for x in s.get("secrets", [])]
        env = _env(s.get("environment"))
        image = s.get("image", "")
        w = Workload(name, image, _argv(s.get("entrypoint")) + _argv(s.get("command")), env,
                     {int(p) for p in s.get("expose", [])}, secret_files={f"/run/secrets/{t}" for t in targets},
                     extra_text=" ".join(_argv((s.get("healthcheck") or {}).get("test"))), raw=s)
        if w.is_modelbus:  # the image's entrypoint exports /run/secrets/MODELBUS_*|AWS_* files
            for t in targets:  # an inline value of the same name stays visible (and is reported)
                if re.fullmatch(r"(MODELBUS|AWS)_[A-Z0-9_]+", t):
                    env.setdefault(t, None)
        devices = (((s.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        w.gpu = any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
        w.replicas = (s.get("deploy") or {}).get("replicas", 1)
        wl[name] = w
        for host in {name, s.get("hostname", name)}:
            svcs[host] = {p: (name, p) for p in w.ports}
    return Model("compose", wl, svcs, raw=doc)


def k8s_model(docs: list[dict], secret_keys: dict[str, set[str]]) -> Model:
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    wl = {}
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env: dict[str, str | None] = {}
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                env.update(cms.get(src["configMapRef"]["name"], {}))
            if "secretRef" in src:
                env.update({k: None for k in secret_keys.get(src["secretRef"]["name"], ())})
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            if "configMapKeyRef" in vf:
                env[e["name"]] = cms.get(vf["configMapKeyRef"]["name"], {}).get(vf["configMapKeyRef"]["key"], "")
            elif "fieldRef" in vf:
                env[e["name"]] = f"<{vf['fieldRef']['fieldPath']}>"
            else:
                env[e["name"]] = None if "secretKeyRef" in vf else str(e.get("value", ""))
        res = c.get("resources", {})
        wl[d["metadata"]["name"]] = Workload(
            d["metadata"]["name"], c.get("image", ""), _argv(c.get("command")) + _argv(c.get("args")), env,
            {p["containerPort"] for p in c.get("ports", [])}, gpu="nvidia.com/gpu" in res.get("limits", {}),
            replicas=d["spec"].get("replicas", 1), labels=d["spec"]["template"]["metadata"].get("labels", {}),
            annotations=d["metadata"].get("annotations", {}), raw={"pod": pod, "container": c})
    svcs, headless = {}, set()
    for d in (d for d in docs if d["kind"] == "Service"):
        sel = d["spec"].get("selector", {})
        targets = [w for w in wl.values() if sel and all(w.labels.get(k) == v for k, v in sel.items())]
        svcs[d["metadata"]["name"]] = {p["port"]: _target(targets, p.get("targetPort", p["port"]))
                                       for p in d["spec"].get("ports", [])}
        if d["spec"].get("clusterIP") == "None":
            headless.add(d["metadata"]["name"])
    return Model("k8s", wl, svcs, headless, raw=docs)


def _target(targets: list[Workload], port) -> tuple[str | None, int | None]:
    for w in targets:
        for p in w.raw["container"].get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return w.name, p["containerPort"]
    return None, None


def resolve(model: Model, host: str, port: int, who: str) -> tuple[tuple[Workload, int] | None, list[str]]:
    """The workload and container port that host:port reaches, or why it reaches none."""
    host = re.sub(r"\.[a-z0-9-]+\.svc(\.cluster\.local)?$", "", host)
    if host not in model.services:
        return None, [f"{model.kind}/{who}: {host}:{port}: no service {host!r}"]
    wname, cport = model.services[host].get(port, (None, None))
    if wname is None:
        return None, [f"{model.kind}/{who}: {host}:{port}: service {host} does not serve port {port}"]
    return (model.workloads[wname], cport), []


# -- loading -------------------------------------------------------------------------------
def merge(base, over):
    """Compose's override semantics, as far as these files use them."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: v if k in ("command", "entrypoint") or k not in base else merge(base[k], v)
                           for k, v in over.items()}}
    if isinstance(base, list) and isinstance(over, list):
        return base + [x for x in over if x not in base]
    return over


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> list:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d]


def parse(path: Path) -> list:
    """The YAML documents of a file: a fresh copy each call, so callers may mutate it."""
    return copy.deepcopy(_parse(path))


def load_compose(*names: str) -> dict:
    doc: dict = {}
    for n in names:
        doc = merge(doc, parse(COMPOSE / n)[0])
    return doc


def env_file(path: Path) -> dict[str, str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def k8s_docs() -> list[dict]:
    return [d for f in parse(K8S / "kustomization.yaml")[0]["resources"] for d in parse(K8S / f)]


def k8s_secret_keys() -> dict[str, set[str]]:
    kust = parse(K8S / "kustomization.yaml")[0]
    return {g["name"]: {k for e in g["envs"] for k in env_file(K8S / f"{e}.example")} for g in kust["secretGenerator"]}


def models() -> dict[str, Model]:
    return {"compose": compose_model(load_compose("compose.yaml")),
            "compose+tls": compose_model(load_compose("compose.yaml", "compose.tls.yaml")),
            "k8s": k8s_model(k8s_docs(), k8s_secret_keys())}


def deploy_texts() -> dict[str, str]:
    """Every file under infra/deploy (Grafana's generated files included), by path."""
    files = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return {str(p.relative_to(ROOT)): p.read_text(errors="replace") for p in files}
