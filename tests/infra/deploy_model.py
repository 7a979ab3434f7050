"""One model of both deployments (compose, Kubernetes) for the checks in deploy_checks.py.

Compose services and Kubernetes workloads are reduced to the same shape: what runs (image,
argv), with which environment (None where a secret supplies the value), on which container
ports, and which DNS name and port reach it. The checks then ask one question of both.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel

from infra.app.stack.triton import TritonLayout
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
COMPOSE, K8S, GRAFANA = DEPLOY / "compose", DEPLOY / "k8s", DEPLOY / "grafana"
# The images this repository builds (name → Dockerfile, relative to the repository root).
IMAGES = {"modelbus": "infra/deploy/Dockerfile", "modelbus-triton": "infra/deploy/Dockerfile.triton"}


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
    def image_name(self) -> str:
        """The image's name without registry and tag: `registry.example.com/modelbus:0.1.0` → `modelbus`."""
        return self.image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]

    @property
    def dockerfile(self) -> str | None:
        """The Dockerfile of this repository the image is built from (None: a third-party image)."""
        if "build" not in self.raw:  # Kubernetes, or a compose service that pulls its image
            return IMAGES.get(self.image_name)
        b = self.raw["build"]
        return b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile"

    @property
    def is_modelbus(self) -> bool:
        """Runs this project's code, configured by the MODELBUS_* settings (the consumers, jobs and Triton)."""
        return self.image_name in IMAGES

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
        # modelbus-entrypoint (the ModelBus image's ENTRYPOINT, or the first word of the command
        # on images that keep their own) exports /run/secrets/MODELBUS_*|AWS_* files.
        built = IMAGES.get(w.image_name) if w.is_modelbus else None
        image_entrypoint = dockerfile(ROOT / built).entrypoint if built and "entrypoint" not in s else None
        if "modelbus-entrypoint" in (image_entrypoint or w.argv)[:1]:
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


# -- Dockerfiles ---------------------------------------------------------------------------
@dataclass
class Dockerfile:
    """The stage that runs (the last FROM) of a Dockerfile, its variables resolved.

    ENV and ARG values are substituted where the file uses them (RUN text included: the shell
    sees the same variables); a variable only the base image sets reads `<NAME>`.
    """

    base: str
    env: dict[str, str]
    runs: list[str]                                 # RUN commands, quotes removed
    copies: list[tuple[list[str], list[str], str]]  # (flags, sources, destination)
    entrypoint: list[str] | None
    context_files: set[str] = field(default_factory=set)  # what any stage COPYs from the build context

    def path_list(self, name: str) -> list[str]:
        return [p for p in self.env.get(name, "").split(":") if p]


_VAR = re.compile(r"\$(?:\{(\w+)(?::([+-])([^}]*))?\}|(\w+))")


def _subst(text: str, known: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = known.get(name, f"<{name}>")  # not ours: the base image's (taken as set)
        if m.group(2) == "+":
            return _subst(m.group(3), known) if value else ""
        if m.group(2) == "-":
            return value or _subst(m.group(3), known)
        return value
    return _VAR.sub(one, text)


def parse_dockerfile(text: str) -> Dockerfile:
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    instructions = [ln.strip() for ln in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if ln.strip()]
    df = Dockerfile("", {}, [], [], None)
    args: dict[str, str] = {}
    context: set[str] = set()
    for ins in instructions:
        op, _, rest = ins.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            df = Dockerfile(_subst(next(w for w in rest.split() if not w.startswith("--")), args), {}, [], [], None,
                            context)
        elif op == "ENV":
            words = shlex.split(rest)
            pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [[words[0], " ".join(words[1:])]]
            before = {**args, **df.env}  # one ENV line sees the values from before it, as Docker does
            df.env.update({k: _subst(v, before) for k, v in pairs})
        elif op == "RUN":
            df.runs.append(re.sub(r"[\"']", "", _subst(rest, {**args, **df.env})))
        elif op == "COPY":
            words = [_subst(w, {**args, **df.env}) for w in shlex.split(rest)]
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            df.copies.append((flags, paths[:-1], paths[-1]))
            if not any(f.startswith("--from=") for f in flags):
                context.update(paths[:-1])
        elif op == "ENTRYPOINT":
            df.entrypoint = yaml.safe_load(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    return df


@functools.cache
def _dockerfile(path: Path, mtime: float) -> Dockerfile:
    return parse_dockerfile(path.read_text())


def dockerfile(path: Path) -> Dockerfile:
    return copy.deepcopy(_dockerfile(path, path.stat().st_mtime))


# -- the Triton that nvidia-pytriton bundles (what `modelbus up` runs) -----------------------
def bundled_triton() -> TritonLayout:
    return TritonLayout.discover()


@functools.cache
def bundled_triton_version() -> str:
    """The server version the bundled tritonserver itself reports (its startup table).

    Nothing in the wheel's files records it as text, so the binary is run: with a missing
    model repository it prints the table and exits at once (no ports, no GPU needed).
    """
    layout = bundled_triton()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [str(layout.binary), f"--model-repository={tmp}/missing", "--allow-http=false", "--allow-grpc=false",
             "--allow-metrics=false", "--log-info=true"],
            env={"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(layout.libs)},
            capture_output=True, text=True, timeout=60)
    m = re.search(r"\|\s*server_version\s*\|\s*(\d+\.\d+\.\d+)", proc.stdout + proc.stderr)
    if not m:
        raise RuntimeError(f"{layout.binary} reported no server_version: {(proc.stdout + proc.stderr)[-2000:]}")
    return m.group(1)


def ngc_release(version: str) -> str:
    """NGC container release of a Triton version: one release a month, 2.51 = 24.10 (Triton's release notes)."""
    major, minor = (int(x) for x in version.split(".")[:2])
    if major != 2:
        raise ValueError(f"no NGC release rule for Triton {version}")
    months = (2024 * 12 + 9) + (minor - 51)  # 24.10 is month index 9 of 2024
    return f"{months // 12 % 100:02d}.{months % 12 + 1:02d}"


def elf_needed(binary: Path) -> list[str]:
    """The shared libraries a 64-bit little-endian ELF file names in DT_NEEDED, in order."""
    data = binary.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError(f"{binary}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 6:  # SHT_DYNAMIC; sh_link is its string table
            continue
        strtab = sections[link][4]
        for i in range(0, size, entsize or 16):
            tag, val = struct.unpack_from("<qQ", data, offset + i)
            if tag == 1:  # DT_NEEDED
                needed.append(data[strtab + val:data.index(b"\x00", strtab + val)].decode())
    return needed


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


@functools.cache
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
