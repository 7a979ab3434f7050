"""The main job (`modelbus demo`) on the real embedded stack: the whole loop, and failing fast.

The loop test runs `run_demo` in-process so that it can assert on the summary it
returns (read back from events and from ClickHouse with SQL); the failure tests
run the real `modelbus demo` command, because "one clear line and a non-zero exit"
is a property of the CLI.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from infra.app.stack.process import free_port
from infra.settings import load_settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REQUESTS = 800


def _ports() -> dict[str, int]:
    return {"kafka_port": free_port(), "triton_grpc_port": free_port(), "triton_http_port": free_port(),
            "triton_metrics_port": free_port(), "clickhouse_http_port": free_port()}


def _bindable(port: int) -> bool:
    """Nothing listens there (SO_REUSEADDR: connections in TIME_WAIT after a clean stop do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MODELBUS_")]:
        monkeypatch.delenv(key)


def test_demo_runs_the_whole_loop_and_stops_what_it_started(tmp_path, clean_env):
    from infra.app.demo.run import run_demo

    ports = _ports()
    ch_port = ports.pop("clickhouse_http_port")
    # No wall-clock training budget here: under a loaded CI runner (the suite runs one worker per core) the
    # default 45 s would stop the first candidate early, and a slower machine would then change which model the
    # gate sees. This test is about the loop, so its models must not depend on the runner's speed.
    settings = load_settings(stack={"data_dir": str(tmp_path / "demo"), **ports, "start_timeout_s": 120},
                             clickhouse={"http_port": ch_port}, training={"default_spec": {"time_budget_s": None}})
    out = io.StringIO()
    summary = run_demo(settings, keep=False, requests=REQUESTS, shifted_share=0.35,
                       console=Console(file=out, width=140))
    text = out.getvalue()

    # every stage ran, in order, and reported its time
    assert list(summary["stage_seconds"]) == ["stack", "consumers", "dataset-v1", "train-v1", "deploy-v1",
                                              "traffic", "telemetry", "drift", "outcomes", "dataset-v2", "challenger",
                                              "report"]
    # the first model beat its baselines (it is serving); the challenger got a decision with its checks
    v1, v2 = summary["models"]
    primary = v1["primary_metric"]
    assert all(v1["metrics"][primary] > b[primary] for b in v1["baselines"].values())
    assert summary["decision"]["event"] in ("ModelDeployed", "DeploymentRejected")
    assert summary["decision"]["checks"] and all("passed" in c for c in summary["decision"]["checks"])
    if summary["decision"]["event"] == "DeploymentRejected":
        failed = [c for c in summary["decision"]["checks"] if not c["passed"]]
        assert failed and failed[0]["name"] in summary["decision"]["reason"]
    # traffic: every request answered, and ClickHouse counts exactly those (plus the deployer's smoke tests)
    assert summary["traffic"] == {**summary["traffic"], "ok": REQUESTS, "errors": 0}
    v1_rows = [r for r in summary["latency_sql"] if r["model_version"] == v1["version"]]
    labelled_batches = 1280 // 64     # the outcomes stage's labelled traffic, 64 rows a request
    assert v1_rows and v1_rows[0]["requests"] - v1_rows[0]["smoke"] == REQUESTS + labelled_batches
    assert 0 < v1_rows[0]["p50_ms"] <= v1_rows[0]["p95_ms"] <= v1_rows[0]["p99_ms"]
    # the shifted share of traffic was caught as drift on the shifted features
    assert {"monthly_charges", "support_calls"} & {d["feature"] for d in summary["drift"]}
    # outcomes: 3/4 of the labelled rows got theirs (half at once, a quarter late), joined to v1's rows
    (live,) = [v for v in summary["live_quality"]["versions"] if v["model_version"] == v1["version"]]
    assert live["labelled"] == 960 and 0.5 < live["accuracy"] <= 1.0
    assert live["rows"] >= REQUESTS + 1280 and 0 < live["coverage"] < 1
    assert live["estimated_accuracy"] is not None and abs(live["estimated_accuracy"] - live["accuracy"]) < 0.15
    assert "Live quality from outcomes" in text
    # lineage of the serving model reaches back to the dataset-created event
    lin = summary["lineage"]
    assert lin["model_version"] == summary["serving_version"] and lin["dataset_event_id"]
    assert lin["dataset_version"] in (v1["dataset_version"], v2["dataset_version"])
    # the page exists and the report names it; slices are reported
    assert Path(summary["dashboard"]).is_file() and summary["dashboard"] in text.replace("\n", "")
    assert {s["column"] for s in summary["slices"]} == {"region", "contract"}
    assert all(s["count"] > 0 and primary in s["metrics"] for s in summary["slices"])
    for heading in ("Model vs baselines", "Per-slice metrics", "Promotion decision", "read back from ClickHouse",
                    "Lineage of the serving model", "stage times"):
        assert heading in text
    # --stop: nothing is left listening
    assert all(_bindable(p) for p in (*ports.values(), ch_port))


def _demo_cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    ports = _ports()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    base.update({f"MODELBUS_STACK__{k.upper()}": str(v) for k, v in ports.items() if k != "clickhouse_http_port"})
    base["MODELBUS_CLICKHOUSE__HTTP_PORT"] = str(ports["clickhouse_http_port"])
    base.update(env)
    return subprocess.run([sys.executable, "-m", "infra.app.cli.main", "demo", "--data-dir", str(tmp_path / "demo")],
                          env=base, capture_output=True, text=True, timeout=240)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return errors[0]


def test_taken_port_fails_fast_with_one_line(tmp_path):
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        line = _one_error_line(_demo_cli(tmp_path, MODELBUS_STACK__KAFKA_PORT=str(port)))
    assert f"127.0.0.1:{port} is already in use" in line


def test_part_that_does_not_start_stops_the_parts_already_started(tmp_path):
    """Triton's port is taken, so tansu and the ClickHouse owner, already up, must be stopped again."""
    kafka_port, ch_port, triton_port = free_port(), free_port(), free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", triton_port))
        blocker.listen(1)
        line = _one_error_line(_demo_cli(tmp_path, MODELBUS_STACK__KAFKA_PORT=str(kafka_port),
                                         MODELBUS_CLICKHOUSE__HTTP_PORT=str(ch_port),
                                         MODELBUS_STACK__TRITON_GRPC_PORT=str(triton_port)))
    assert str(triton_port) in line
    assert _bindable(kafka_port) and _bindable(ch_port)
    assert not list((tmp_path / "demo").rglob("*.pid"))


def test_too_little_disk_fails_fast_before_anything_starts(tmp_path):
    """The real free space of this disk is below the configured floor (a full disk cannot be made here)."""
    line = _one_error_line(_demo_cli(tmp_path, MODELBUS_STACK__MIN_FREE_MB=str(1 << 40)))
    assert "MiB free under" in line and "needs" in line
    assert not list((tmp_path / "demo").rglob("*.pid"))


def test_the_demo_refuses_to_wipe_a_directory_it_did_not_create(tmp_path):
    """Both ways of naming the directory: --data-dir, and the configured MODELBUS_STACK__DATA_DIR."""
    foreign = tmp_path / "demo"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("not the demo's")
    line = _one_error_line(_demo_cli(tmp_path))
    assert str(foreign) in line and "was not created by the demo" in line
    configured = tmp_path / "platform"
    configured.mkdir()
    (configured / "precious.txt").write_text("not the demo's either")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env["MODELBUS_STACK__DATA_DIR"] = str(configured)
    proc = subprocess.run([sys.executable, "-m", "infra.app.cli.main", "demo"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert str(configured) in _one_error_line(proc)
    assert (foreign / "precious.txt").read_text() == "not the demo's" and (configured / "precious.txt").is_file()


def test_the_demo_wipes_its_own_directory_and_marks_it(tmp_path):
    from infra.app.demo.run import DEMO_MARKER, fresh_demo_dir

    own = tmp_path / "demo"
    fresh_demo_dir(own)                       # created: marked
    (own / "stale-version").write_text("from the last demo")
    fresh_demo_dir(own)                       # its own: wiped, marked again
    assert sorted(p.name for p in own.iterdir()) == [DEMO_MARKER]
