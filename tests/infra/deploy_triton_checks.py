"""Checks of the Triton workload and its image (infra/deploy/Dockerfile.triton), split from deploy_checks.py.

Triton runs each model's Python-backend front, so besides the server flags it needs
the consumers' settings and secrets (telemetry goes to Kafka) and an image whose
Python-backend stub, libraries and release agree with the nvidia-pytriton installed here.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import urlsplit

from deploy_model import IMAGES, Dockerfile, Model, Workload, elf_needed, ngc_release, settings_of
from pydantic import ValidationError

from infra.app.stack.triton import PY_TAG, TritonLayout, TritonServer

TRITON_DOCKERFILE = IMAGES["modelbus-triton"]
# Where the NVIDIA image keeps the Python backend (libtriton_python.so and the stub it runs).
TRITON_PYTHON_BACKEND = "/opt/tritonserver/backends/python"
# The consumer whose settings, secrets and mounts Triton must share (any one serves: they all
# get the same ones, which check_settings and check_endpoints cover).
REFERENCE = "deployer"


def check_triton(model: Model) -> list[str]:
    """GPU Triton from Dockerfile.triton, PyTorch backend, explicit model control, the repository the
    deployer writes, and the consumers' settings and secrets for the Python-backend fronts' telemetry."""
    t = model.workloads.get("triton")
    if t is None:
        return [f"{model.kind}: no triton workload"]
    problems = [f"{model.kind}/triton: {m}" for m, ok in (
        ("not started with --model-control-mode=explicit", "--model-control-mode=explicit" in t.text),
        (f"image {t.image!r} is not built from {TRITON_DOCKERFILE} (the Python-backend fronts need this "
         f"project and Python {PY_TAG})", t.dockerfile == TRITON_DOCKERFILE),
        ("no GPU", t.gpu)) if not ok]
    problems += _triton_runs_modelbus(model, t)
    for w in model.modelbus():
        s = settings_of(w.env)
        if s.triton.backend != "pytorch" or not s.triton_repository.startswith("s3://"):
            problems.append(f"{model.kind}/{w.name}: production needs the pytorch backend and an s3:// repository")
        # The exact rewrite the embedded stack applies for a custom S3 endpoint.
        expected = TritonServer.repository_arg(SimpleNamespace(repository=s.triton_repository, settings=s))
        if f"--model-repository={expected}" not in t.text:
            problems.append(f"{model.kind}/{w.name}: Triton must be started with --model-repository={expected}")
        if s.artifacts.s3_region and t.env.get("AWS_DEFAULT_REGION") != s.artifacts.s3_region:
            problems.append(f"{model.kind}/triton: AWS_DEFAULT_REGION differs from {w.name}'s S3 region")
        buckets = {urlsplit(u).netloc for u in (s.artifact_root, s.triton_repository) if u.startswith("s3://")}
        init = model.workloads.get("minio-init")
        for b in buckets if init else ():
            if not re.search(rf"\bmc mb\b[^\n]*\b\w+/{re.escape(b)}\b", init.text):
                problems.append(f"{model.kind}/minio-init: bucket {b!r} ({w.name}) is never created")
    if model.kind == "k8s":
        c = t.raw["container"]
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/v2/health/ready":
            problems.append("k8s/triton: readiness probe must GET /v2/health/ready")
        if t.replicas != 1:
            problems.append("k8s/triton: explicit model control loads through one Service: replicas must be 1")
    return problems


def _triton_runs_modelbus(model: Model, t: Workload) -> list[str]:
    """Triton gets what the consumers get, so the fronts' telemetry reaches Kafka, and a writable data dir."""
    ref, tag = model.workloads.get(REFERENCE), f"{model.kind}/triton"
    if ref is None:
        return []  # check_consumers reports it
    why = f"the models' fronts produce telemetry with {REFERENCE}'s settings and secrets"
    ours = {k: v for k, v in ref.env.items() if k.startswith("MODELBUS_")}
    missing = sorted(set(ours) - set(t.env))
    problems = [f"{tag}: {', '.join(missing)} missing: {why}"] if missing else []
    for k, v in sorted(ours.items()):
        if k in t.env and t.env[k] != v:
            what = "from a secret in one, inline in the other" if None in (v, t.env[k]) \
                else f"{t.env[k]!r}, {REFERENCE} has {v!r}"
            problems.append(f"{tag}: {k} is {what}: {why}")
    if model.kind.startswith("compose"):  # secret files a setting points at (a Kafka CA)
        for f in sorted(v for v in ref.env.values() if v and v in ref.secret_files and v not in t.secret_files):
            problems.append(f"{tag}: {f} is not mounted ({REFERENCE}'s settings use it)")
    else:
        def secret_mounts(w: Workload) -> set[tuple[str, str]]:
            vols = {v["name"]: v["secret"]["secretName"] for v in w.raw["pod"].get("volumes", []) if "secret" in v}
            return {(vols[m["name"]], m["mountPath"]) for m in w.raw["container"].get("volumeMounts", [])
                    if m["name"] in vols}
        problems += [f"{tag}: Secret {name} is not mounted at {path} like {REFERENCE}'s"
                     for name, path in sorted(secret_mounts(ref) - secret_mounts(t))]
    try:
        data_dir = settings_of(t.env).stack.data_dir
    except ValidationError:
        return problems  # check_settings reports it
    if not data_dir.startswith("/") or not _writable(model, t, data_dir):
        problems.append(f"{tag}: MODELBUS_STACK__DATA_DIR {data_dir} is not on a writable volume "
                        "(emptyDir / tmpfs): the fronts write <data_dir>/telemetry/")
    return problems


def _writable(model: Model, w: Workload, path: str) -> bool:
    """Whether path lies on a writable mount of the container (not its image's filesystem)."""
    def covers(mount: str) -> bool:
        return path == mount or path.startswith(mount.rstrip("/") + "/")
    if model.kind.startswith("compose"):
        tmpfs = w.raw.get("tmpfs", [])
        mounts = [tmpfs] if isinstance(tmpfs, str) else list(tmpfs)
        for v in w.raw.get("volumes", []):
            parts = v.split(":") if isinstance(v, str) else [v.get("source", ""), v["target"],
                                                             "ro" if v.get("read_only") else "rw"]
            if len(parts) > 1 and "ro" not in parts[2:]:
                mounts.append(parts[1])
        return any(covers(m.split(":")[0]) for m in mounts)
    vols = {v["name"]: v for v in w.raw["pod"].get("volumes", [])}
    return any(covers(m["mountPath"]) and not m.get("readOnly")
               and {"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(vols.get(m["name"], {}))
               for m in w.raw["container"].get("volumeMounts", []))


def check_triton_image(df: Dockerfile, base_df: Dockerfile, layout: TritonLayout, server_version: str) -> list[str]:
    """Dockerfile.triton: NVIDIA's release of the bundled server, this project on Python PY_TAG, its stub, its paths.

    layout and server_version describe the nvidia-pytriton installed here (what `modelbus up`
    runs); the stub the image uses comes from that same package, so its release must match.
    """
    problems = []
    m = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", df.base)
    release = ngc_release(server_version)
    if not m:
        problems.append(f"FROM {df.base}: must be nvcr.io/nvidia/tritonserver:<YY.MM>-py3 (the PyTorch backend)")
    elif m.group(1) != release:
        problems.append(f"FROM {df.base}: the stub comes from nvidia-pytriton's tritonserver {server_version}, "
                        f"NGC release {release}; another release's libtriton_python.so may not speak its protocol")
    runs = "\n".join(df.runs)
    venv = df.env.get("VIRTUAL_ENV")
    if not venv:
        return problems + ["ENV VIRTUAL_ENV (the venv the project is installed in) is not set"]
    site = layout.libs.parent
    py = [("uv python install", re.search(r"\buv python install (\S+)", runs)),
          ("uv venv --python", re.search(rf"\buv venv\b[^\n&;]*--python[ =](\S+)[^\n&;]*\s{re.escape(venv)}\b", runs))]
    problems += [f"`{what}` must name Python {PY_TAG} (requires-python; the stub is built for it): "
                 f"{hit.group(1) if hit else 'none'}" for what, hit in py if not hit or hit.group(1) != PY_TAG]
    if not re.search(rf"\buv pip install\b[^\n&;]*--python[ =]{re.escape(venv)}/bin/python\S*[^\n&;]* \.(\s|$)", runs):
        problems.append(f"the project must be installed into {venv} (`uv pip install --python {venv}/bin/python .`)")
    problems += [f"does not COPY {f} (infra/deploy/Dockerfile does)"
                 for f in sorted(base_df.context_files - df.context_files)]
    if not re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+",
                        next((f[7:] for flags, _, _ in df.copies for f in flags if "astral-sh/uv" in f), "")):
        problems.append("uv must be copied from ghcr.io/astral-sh/uv pinned to a version")
    # The stub: a copy of the package's one for PY_TAG, over the image's (a link would run from
    # the wrong directory).
    rel = layout.stub_src.relative_to(site)
    if not layout.stub_src.is_file():
        problems.append(f"the installed nvidia-pytriton has no stub for Python {PY_TAG}: {layout.stub_src}")
    stub_in_image = f"{venv}/lib/python{PY_TAG}/site-packages/{rel}"
    dests = [d for src, d in re.findall(r"\bcp\s+(?:-\S+\s+)*(\S+)\s+(\S+)", runs) if src == stub_in_image]
    if not any(d.rstrip("/") in (TRITON_PYTHON_BACKEND, f"{TRITON_PYTHON_BACKEND}/triton_python_backend_stub")
               for d in dests):
        problems.append(f"must cp {stub_in_image} (Python {PY_TAG}) to "
                        f"{TRITON_PYTHON_BACKEND}/triton_python_backend_stub")
    # The loader: the copy's RPATH points nowhere, so LD_LIBRARY_PATH names what it needs.
    ld = df.path_list("LD_LIBRARY_PATH")
    libs_in_image = f"{venv}/lib/python{PY_TAG}/site-packages/{layout.libs.relative_to(site)}"
    needed = elf_needed(layout.stub_src) if layout.stub_src.is_file() else []
    bundled = [n for n in needed if (layout.libs / n).is_file()]
    if libs_in_image not in ld:
        problems.append(f"LD_LIBRARY_PATH does not name {libs_in_image} (the stub needs {', '.join(bundled) or 'it'})")
    libpython = next((n for n in needed if n.startswith("libpython")), f"libpython{PY_TAG}.so.1.0")
    linked = {dst for dst in re.findall(r"\bln\s+-\w*s\w*\s+\S+\s+(\S+)", runs)}
    if not (re.search(r"\bLIBDIR\b", runs) and re.search(rf"\btest -f \S*/{re.escape(libpython)}\b", runs)
            and linked & set(ld)):
        problems.append(f"LD_LIBRARY_PATH must name a fixed link to the Python LIBDIR, checked to hold "
                        f"{libpython} (the stub needs it)")
    if "<LD_LIBRARY_PATH>" not in ld:
        problems.append("LD_LIBRARY_PATH drops the base image's value")
    path = df.path_list("PATH")
    if path[:1] != [f"{venv}/bin"] or "<PATH>" not in path:
        problems.append(f"PATH must start with {venv}/bin (the stub's Python finds the venv's site-packages "
                        "through it) and keep the image's PATH")
    if df.entrypoint is not None:
        problems.append("sets an ENTRYPOINT: keep the image's (the workloads start tritonserver)")
    if not any(srcs == ["infra/deploy/docker-entrypoint.sh"] and dst == "/usr/local/bin/modelbus-entrypoint"
               for _, srcs, dst in df.copies):
        problems.append("must install infra/deploy/docker-entrypoint.sh as /usr/local/bin/modelbus-entrypoint "
                        "(compose starts Triton through it)")
    return problems
