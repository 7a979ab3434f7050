"""``modelbus ui`` as a user starts it: a real subprocess, fetched with curl, and a taken port refused in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from infra.app.stack.triton import settings_env
from tests.conftest import free_port

pytestmark = pytest.mark.stack


def _start(settings, port: int) -> subprocess.Popen:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-m", "infra.app.cli.main", "ui", "--port", str(port), "--no-open"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _curl(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_ui_serves_pages_to_curl_and_a_taken_port_is_one_clear_line(ui_settings, ui_store):
    port = free_port()
    proc = _start(ui_settings, port)
    try:
        deadline = time.monotonic() + 60
        while _curl(f"http://127.0.0.1:{port}/healthz").returncode != 0 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.3)
        page = _curl(f"http://127.0.0.1:{port}/runs?status=finished")
        body, code = page.stdout.rsplit("\n", 1)
        assert code == "200" and 'data-run="run-b"' in body and 'data-run="run-c"' not in body
        assert _curl(f"http://127.0.0.1:{port}/static/plotly.min.js").stdout.rsplit("\n", 1)[1] == "200"

        second = _start(ui_settings, port)
        _, err = second.communicate(timeout=60)
        assert second.returncode != 0
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"cannot serve on 127.0.0.1:{port}" in lines[0] and "--port" in lines[0], err
    finally:
        proc.terminate()
        proc.wait(timeout=30)
