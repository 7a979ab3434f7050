"""faust agents on the ModelBus broker: edge decoding, DLQ, and table state recovered after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.app.stack.triton import settings_env
from infra.kafka import EventProducer
from infra.kafka.dlq import H_REASON
from infra.kafka.topics import MONITORING_DRIFT, dlq_name

from .conftest import drift_event, read_all

pytestmark = [pytest.mark.stack, pytest.mark.slow]

APP = textwrap.dedent('''
    import json, sys
    from infra.settings import load_settings
    from infra.kafka.faust_app import EdgeDecoder, make_app, raw_topic

    settings = load_settings()
    out = sys.argv[1]
    topic_name = settings.topic("monitoring.drift")
    app = make_app(settings, "test-counter", topic_partitions=3)
    counts = app.Table("counts", default=int, partitions=3)
    decoder = EdgeDecoder(settings, "test-counter", expected_types={"DriftDetected"})

    @app.agent(raw_topic(app, topic_name, partitions=3))
    async def count(stream):
        async for event, env in decoder.envelopes(stream):
            counts[env.value["model_name"]] += 1
            with open(out, "a") as fh:
                fh.write(json.dumps({"model": env.value["model_name"], "n": counts[env.value["model_name"]]}) + "\\n")

    if __name__ == "__main__":
        sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
        app.main()
''')


def _start(script, out, env):
    """The worker's log goes to ``<out>.log`` (appended by both runs), shown when an assertion fails."""
    with open(f"{out}.log", "ab") as log:
        return subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=os.getcwd())


def _log_tail(out, lines=60):
    path = Path(f"{out}.log")
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait_lines(path, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_lines(path)) >= n:
            return _lines(path)
        time.sleep(0.2)
    return _lines(path)


def test_agent_state_survives_restart_and_poison_goes_to_dlq(isolated_settings, tmp_path):
    s = isolated_settings
    script = tmp_path / "app.py"
    script.write_text(APP)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, **settings_env(s), "PYTHONPATH": os.getcwd()}
    topic = s.topic(MONITORING_DRIFT)
    producer = EventProducer(s, name="tests")
    for _ in range(3):
        producer.send(topic, "DriftDetected", drift_event(), key="m")
    producer.send_raw(topic, b"not avro at all", b"m")
    producer.flush()

    worker = _start(script, out, env)
    try:
        assert [x["n"] for x in _wait_lines(out, 3)] == [1, 2, 3], _log_tail(out)
    finally:
        worker.terminate()
        worker.wait(30)
    dead = read_all(s, dlq_name(topic), 1)
    assert len(dead) == 1 and dict(dead[0].headers())[H_REASON] == b"undecodable"

    for _ in range(2):
        producer.send(topic, "DriftDetected", drift_event(), key="m")
    producer.flush()
    worker = _start(script, out, env)   # a fresh process: in-memory table rebuilt from the changelog
    try:
        # Generous: table recovery starts only after the group's rebalance, slow on a loaded CI runner.
        seen = [x["n"] for x in _wait_lines(out, 5, timeout=150)]
        assert seen == [1, 2, 3, 4, 5], (seen, _log_tail(out))
    finally:
        worker.terminate()
        worker.wait(30)
