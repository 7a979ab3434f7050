"""`modelbus up` runs the whole platform: the real stack and every consumer under the real supervisor.

Everything goes through the `modelbus` command as a user types it (subprocesses, their
stdout parsed), on free loopback ports and a temporary data directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra.app.stack.process import free_port

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def platform_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Stack ports and the clients' endpoints agree, as a user's settings would say."""
    kafka, grpc, http, metrics, ch = (free_port() for _ in range(5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update({
        "MODELBUS_STACK__DATA_DIR": str(data_dir), "MODELBUS_STACK__KAFKA_PORT": str(kafka),
        "MODELBUS_STACK__TRITON_GRPC_PORT": str(grpc), "MODELBUS_STACK__TRITON_HTTP_PORT": str(http),
        "MODELBUS_STACK__TRITON_METRICS_PORT": str(metrics), "MODELBUS_CLICKHOUSE__HTTP_PORT": str(ch),
        "MODELBUS_STACK__START_TIMEOUT_S": "120", "MODELBUS_STACK__CONSUMER_GRACE_S": "5",
        "MODELBUS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}", "MODELBUS_TRITON__GRPC_URL": f"127.0.0.1:{grpc}",
        "MODELBUS_TRITON__HTTP_URL": f"127.0.0.1:{http}",
        "MODELBUS_TRITON__METRICS_URL": f"http://127.0.0.1:{metrics}/metrics",
        "MODELBUS_KAFKA__SESSION_TIMEOUT_MS": "2000", "MODELBUS_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        # no wall-clock training budget: on a loaded runner it would cut training short and let the runner's
        # speed decide whether the gate serves the model (tests/infra/app/test_demo.py says the same)
        "MODELBUS_TRAINING__DEFAULT_SPEC": '{"time_budget_s": null}',
    })
    env.update(extra)
    return env


def modelbus(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.app.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def as_json(env: dict[str, str], *args: str):
    res = modelbus(env, *args, "--json", timeout=60)
    assert res.returncode in (0, 1), (args, res.stdout[-2000:], res.stderr[-2000:])
    return json.loads(res.stdout)   # the whole of stdout is one JSON document


def platform_pids(data_dir: Path) -> set[int]:
    """The supervisor, every process under it, and every part of the stack with its children."""
    pids = set()
    for pidfile in (data_dir / "run").glob("*.pid"):
        try:
            proc = psutil.Process(int(pidfile.read_text()))
            pids |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
        except (psutil.Error, ValueError):
            continue
    return pids


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr + res.stdout, res.stderr
    return errors[0]


def test_up_then_a_push_serves_a_model_survives_kill_9_and_down_leaves_nothing(tmp_path):
    from infra.app.demo.data import generate_churn

    data_dir = tmp_path / "data"
    env = platform_env(data_dir)
    up = modelbus(env, "up")
    pids: set[int] = set()
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        pids = platform_pids(data_dir)
        status = as_json(env, "status")
        assert status["healthy"] and {p["consumer"] for p in status["consumers"]} >= {
            "training", "deployer", "metadata-sink", "telemetry-sink", "drift-monitor"}

        victim = next(p for p in status["consumers"] if p["name"] == "training-1")
        os.kill(victim["pid"], signal.SIGKILL)
        restarted = wait_for(lambda: next((p for p in as_json(env, "status")["consumers"] if p["name"] == "training-1"
                                           and p["restarts"] == 1 and p["state"] == "running"), None),
                             60, "training-1 restarted")
        assert restarted["pid"] != victim["pid"] and "SIGKILL" in restarted["last_error"]
        pids |= platform_pids(data_dir)

        csv = tmp_path / "churn.csv"
        generate_churn(6000, seed=7).to_csv(csv, index=False)
        push = modelbus(env, "dataset", "push", str(csv), "--name", "churn", "--label", "churned", timeout=120)
        assert push.returncode == 0, push.stderr[-2000:]

        served = wait_for(lambda: [m for m in as_json(env, "models", "list")["models"]
                                   if m["model"] == "churn" and m["triton_state"] == "READY"], 400, "churn served")
        assert served[0]["serving"] == 1

        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps({"tenure_months": [3.0, 40.0], "monthly_charges": [90.0, 20.0],
                                    "support_calls": [5, 0], "contract": ["monthly", "yearly"],
                                    "region": ["east", "west"]}))
        pred = as_json(env, "predict", "churn", "-i", str(rows))
        assert [r["row"] for r in pred["predictions"]] == [0, 1]
        assert all(r["prediction"] in ("yes", "no") and 0.5 <= r["confidence"] <= 1 for r in pred["predictions"])
        table = modelbus(env, "predict", "churn", "-i", str(rows))
        assert table.stdout.splitlines()[1] == "row\tprediction\tconfidence\tprediction id"   # inputs: --show-inputs
        wide = modelbus(env, "predict", "churn", "-i", str(rows), "--show-inputs")
        assert wide.stdout.splitlines()[1].startswith("row\tprediction\tconfidence\tprediction id\ttenure_months")

        # The truth of the two predictions, reported later: the outcome sink `up` started joins it to them.
        truth = tmp_path / "truth.csv"
        truth.write_text("prediction_id,label\n" + "".join(f"{r['prediction_id']},{r['prediction']}\n"
                                                            for r in pred["predictions"]))
        assert modelbus(env, "outcome", "push", str(truth), "--model", "churn").returncode == 0
        quality = "SELECT sum(labelled) AS n, min(accuracy) AS acc FROM v_live_quality WHERE model_name = 'churn'"
        got = wait_for(lambda: [r for r in json.loads(modelbus(env, "sql", quality, "-f", "json").stdout or "[]")
                                if r["n"] == 2], 90, "the outcomes joined to their predictions")
        assert got[0]["acc"] == 1.0

        runs = as_json(env, "runs", "list")
        assert runs and runs[0]["dataset_name"] == "churn"
        assert as_json(env, "runs", "show", runs[0]["run_id"])["summary"]["run_id"] == runs[0]["run_id"]
        assert as_json(env, "dataset", "list")[0]["name"] == "churn"
        assert as_json(env, "dataset", "show", "churn")["label_column"] == "churned"
        assert len(as_json(env, "topics")) > 5 and as_json(env, "consumer", "list")
        lag = as_json(env, "status")["lag"]
        assert any(g["group"].endswith(".training") and g["topic"].endswith("datasets.created") for g in lag)

        logs = modelbus(env, "logs", "training-1", "-n", "5")
        assert logs.returncode == 0 and 0 < len(logs.stdout.splitlines()) <= 5
    finally:
        pids |= platform_pids(data_dir)
        started = time.monotonic()
        down = modelbus(env, "down", timeout=120)
        took = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert len(pids) >= 10 and not alive(pids), f"left running: {alive(pids)}"
    print(f"modelbus down took {took:.1f}s for {len(pids)} processes")
    assert took < 30


def test_a_taken_port_gives_one_line_and_leaves_nothing_running(tmp_path):
    data_dir = tmp_path / "data"
    env = platform_env(data_dir)
    port = int(env["MODELBUS_STACK__TRITON_GRPC_PORT"])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        line = one_error_line(modelbus(env, "up"))
    assert f"127.0.0.1:{port} is already in use" in line
    assert not list((data_dir / "run").glob("*.pid")) and not platform_pids(data_dir)


def test_a_consumer_that_crashes_at_start_fails_up_and_stops_everything(tmp_path):
    """Bad settings for one consumer: an option its command line does not know."""
    data_dir = tmp_path / "data"
    env = platform_env(data_dir, MODELBUS_STACK__CONSUMER_ARGS=json.dumps({"metadata-sink": ["--no-such-option"]}))
    try:
        line = one_error_line(modelbus(env, "up"))
    finally:
        leftover = platform_pids(data_dir)
        if leftover:
            modelbus(env, "down", timeout=120)
    assert "consumer metadata-sink-1 exited at start with code 2" in line and "--no-such-option" in line, line
    assert not leftover and not list((data_dir / "run").glob("*.pid"))
    assert not as_json(env, "status")["healthy"]


def test_too_little_disk_gives_one_line_before_anything_starts(tmp_path):
    """The real free space is below the configured floor (a full disk cannot be made here)."""
    data_dir = tmp_path / "data"
    line = one_error_line(modelbus(platform_env(data_dir, MODELBUS_STACK__MIN_FREE_MB=str(1 << 40)), "up"))
    assert "MiB free under" in line and not platform_pids(data_dir)
