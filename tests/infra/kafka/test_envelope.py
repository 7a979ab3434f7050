"""``Envelope.typed``: a handler's typed view of the decoded value, refused for another event type, and checked
by mypy (a misspelled key or a wrong value type in a handler or builder is a type error)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.kafka.envelope import Envelope
from schemas import AvroCodec
from schemas.types import DriftDetected, ModelRegistered
from tests.infra.kafka.conftest import drift_event

ROOT = Path(__file__).resolve().parents[3]


def envelope(event_type: str, value: dict) -> Envelope:
    return Envelope(key="k", value=value, event_type=event_type, topic="t", partition=0, offset=7, event_id="e1")


def test_typed_is_the_decoded_value_itself():
    codec = AvroCodec()
    value = codec.decode(codec.encode("DriftDetected", drift_event(3))).value
    env = envelope("DriftDetected", value)
    drift = env.typed(DriftDetected)
    assert drift is value and drift["feature"] == "f3"


def test_typed_refuses_another_event_type():
    env = envelope("DriftDetected", drift_event())
    with pytest.raises(TypeError, match=r"t\[0\]@7: a DriftDetected event, not ModelRegistered"):
        env.typed(ModelRegistered)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mypy_checks_the_keys_a_handler_reads_and_a_builder_writes(tmp_path):
    snippet = tmp_path / "handler.py"
    snippet.write_text(textwrap.dedent("""\
        from infra.kafka.envelope import Envelope
        from schemas.events import new_header
        from schemas.types import ModelRegistered, TrainingRequested

        def handle(env: Envelope) -> str:
            value = env.typed(ModelRegistered)
            ok = value["model_name"] + value["checksum"]
            return ok + value["model_nmae"]

        def build() -> TrainingRequested:
            return {"header": new_header("x"), "request_id": "r", "dataset_name": "d", "n_trials": "3"}
        """))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--no-incremental", str(snippet)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert 'handler.py:8: error: TypedDict "ModelRegistered" has no key "model_nmae"' in out, out
    assert 'handler.py:11: error: Incompatible types (expression has type "str", TypedDict item "n_trials"' in out, out
    assert out.count(": error:") == 2, out
