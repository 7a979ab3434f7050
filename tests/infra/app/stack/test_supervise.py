"""The consumer supervisor on real child processes, without the stack: what a failed start does to it."""

from __future__ import annotations

import json
import sys
import time

import pytest

from infra.app.stack.consumers import ConsumerSupervisor
from infra.app.stack.supervise import Child, Supervisor
from infra.errors import StackError
from infra.settings import load_settings


def _child(tmp_path, name, argv):
    return Child(name, name.rsplit("-", 1)[0], argv, str(tmp_path / "logs" / f"{name}.log"))


def test_a_child_that_cannot_be_started_is_retried_and_the_others_keep_running(tmp_path):
    """A refused start (here: no such executable; on a full machine: fork refused) is that child's crash."""
    bad = _child(tmp_path, "bad-1", [str(tmp_path / "no-such-python")])
    good = _child(tmp_path, "good-1", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    sup = Supervisor([bad, good], tmp_path / "supervisor.json", grace_s=0.2, backoff_max_s=4)
    try:
        sup.tick()
        assert bad.state == "backoff" and bad.pid is None and "could not start" in bad.last_error
        assert "no-such-python" in bad.last_error and bad.backoff_s == 1.0
        assert good.state == "starting" and good.proc is not None and good.proc.poll() is None
        bad.next_start = 0.0    # its backoff is over: the retry fails the same way, the backoff doubles
        sup.tick()
        assert (bad.state, bad.restarts, bad.backoff_s) == ("backoff", 1, 2.0)
        sup.write_state()
        doc = json.loads((tmp_path / "supervisor.json").read_text())
        assert {p["name"]: p["state"] for p in doc["processes"]} == {"bad-1": "backoff", "good-1": "starting"}
    finally:
        sup.stop_children()
    assert good.proc is None and good.state == "stopped"


def test_up_names_the_consumer_that_failed_even_when_the_supervisor_is_already_gone(tmp_path, monkeypatch):
    """The state file a stopped supervisor left behind still says which consumer failed, and why."""
    for key in [k for k in __import__("os").environ if k.startswith("MODELBUS_")]:
        monkeypatch.delenv(key)
    sup = ConsumerSupervisor(load_settings(stack={"data_dir": str(tmp_path / "data")}))
    sup.state_path.parent.mkdir(parents=True)
    child = _child(tmp_path, "metadata-sink-1", ["x"])
    child.state, child.last_exit, child.last_error = "stopped", 2, "error: unrecognized arguments: --nope"
    sup.state_path.write_text(json.dumps({"pid": 1, "running": False, "updated_at": time.time(),
                                          "processes": [child.public()]}))
    with pytest.raises(StackError, match=r"consumer metadata-sink-1 exited at start with code 2: .*--nope"):
        sup.wait_started(timeout=5)

    child.last_exit, child.last_error = None, ""      # nothing failed: the supervisor's own last error is shown
    sup.state_path.write_text(json.dumps({"pid": 1, "running": False, "updated_at": time.time(),
                                          "processes": [child.public()]}))
    sup.log_path.parent.mkdir(parents=True)
    sup.log_path.write_text("2026-01-01 INFO started\nMemoryError: cannot allocate\n")
    with pytest.raises(StackError, match=r"supervisor exited at start: MemoryError: cannot allocate"):
        sup.wait_started(timeout=5)
