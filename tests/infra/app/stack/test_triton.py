"""TritonServer start-up failures explain themselves in one line (the happy path runs in tests/serving)."""

from __future__ import annotations

import socket

import pytest

from infra.app.stack.process import free_port
from infra.app.stack.triton import TritonServer, settings_env
from infra.errors import ConfigError, StackError
from infra.settings import load_settings


def _settings(tmp_path, **triton):
    return load_settings(stack={"data_dir": str(tmp_path), "triton_grpc_port": free_port(),
                                "triton_http_port": free_port(), "triton_metrics_port": free_port()},
                         triton=triton)


def test_port_in_use_names_the_port_and_setting(tmp_path):
    s = _settings(tmp_path)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", s.stack.triton_http_port))
        sock.listen()
        with pytest.raises(ConfigError) as info:
            TritonServer(s).start(timeout=5)
    msg = str(info.value)
    assert f"127.0.0.1:{s.stack.triton_http_port} is already in use" in msg
    assert "MODELBUS_STACK__TRITON_HTTP_PORT" in msg


def test_missing_binary_says_where_it_was_expected(tmp_path):
    with pytest.raises(ConfigError, match="binary not found or not executable at /nowhere/tritonserver"):
        TritonServer(_settings(tmp_path, server_binary="/nowhere/tritonserver")).start(timeout=5)


def test_server_dying_at_start_reports_its_last_log_lines(tmp_path):
    script = tmp_path / "fake-tritonserver"
    script.write_text("#!/bin/sh\necho 'error: simulated startup failure' >&2\nexit 3\n")
    script.chmod(0o755)
    server = TritonServer(_settings(tmp_path, server_binary=str(script)))
    with pytest.raises(StackError) as info:
        server.start(timeout=10)
    assert "exited with code 3" in str(info.value) and "simulated startup failure" in str(info.value)
    assert not server.is_running() and not server.pidfile.path.exists()


def test_command_line_and_environment(tmp_path):
    s = _settings(tmp_path).with_overrides(kafka={"bootstrap_servers": "127.0.0.1:1", "sasl_password": "pw"})
    server = TritonServer(s, repository=str(tmp_path / "repo"))
    cmd = server.command()
    assert "--model-control-mode=explicit" in cmd and f"--model-repository={tmp_path / 'repo'}" in cmd
    assert {"--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(cmd)
    assert f"--grpc-port={s.stack.triton_grpc_port}" in cmd
    env = server.environment()
    assert env["MODELBUS_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert env["MODELBUS_KAFKA__SASL_PASSWORD"] == "pw"     # the served model's producer needs the secret
    assert env["PATH"].split(":")[0].endswith("bin") and "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    backends = server.prepare_backends() / "python"
    assert (backends / "triton_python_backend_stub").is_file()
    assert not (backends / "triton_python_backend_stub").is_symlink()
    assert (backends / "libtriton_python.so").is_symlink()


def test_settings_env_round_trips(tmp_path, monkeypatch):
    s = load_settings(stack={"data_dir": str(tmp_path)}, kafka={"extra": {"linger.ms": "7"}},
                      serving={"policies": {"churn": {"slice_tolerance": 0.1}}}, triton={"telemetry": False})
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    assert load_settings() == s
