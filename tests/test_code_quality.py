"""The code checks of the test command: ruff (the rule set in [tool.ruff]), mypy ([tool.mypy]) and
import-linter (the floors in [tool.importlinter]) pass on the tree.

Each tool also gets a tiny input it must refuse under the same configuration: a check that cannot fail
(a tool that reads no config, or an entry point that runs nothing) would otherwise pass forever.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
# import-linter has no `python -m` entry point (`-m importlinter.cli` runs nothing): call its command.
LINT_IMPORTS = [sys.executable, "-c",
                "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]

pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.timeout(900)   # mypy without a cache takes minutes on a busy machine
@pytest.mark.parametrize("argv", [
    pytest.param([sys.executable, "-m", "ruff", "check", "--no-cache", "."], id="ruff"),
    pytest.param([sys.executable, "-m", "mypy"], id="mypy"),
    pytest.param([*LINT_IMPORTS, "--no-cache"], id="import-linter"),
])
def test_tree_is_clean(argv):
    proc = run(argv)
    assert proc.returncode == 0, output(proc)


def test_ruff_refuses_with_our_rule_set(tmp_path):
    """An unused import (a default rule) and a blind except (BLE, only in our selection)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ntry:\n    pass\nexcept BaseException:\n    pass\n")
    proc = run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(PYPROJECT), str(bad)],
               cwd=tmp_path)
    assert proc.returncode == 1, output(proc)
    assert "F401" in proc.stdout and "BLE001" in proc.stdout, output(proc)


def test_mypy_refuses_a_type_error_with_our_config(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("count: int = 'three'\n")
    proc = run([sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT), str(bad)], cwd=tmp_path)
    assert proc.returncode == 1, output(proc)
    assert "bad.py:1: error" in proc.stdout and "[assignment]" in proc.stdout, output(proc)


def test_import_linter_refuses_a_low_layer_importing_a_high_one(tmp_path):
    for sub, body in (("", ""), ("high", ""), ("low", "import qualitypkg.high\n")):
        package = tmp_path / "qualitypkg" / sub
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(body)
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = qualitypkg

        [importlinter:contract:floors]
        name = floors
        type = layers
        layers =
            qualitypkg.high
            qualitypkg.low
        """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = run([*LINT_IMPORTS, "--config", ".importlinter", "--no-cache"], cwd=tmp_path, env=env)
    assert proc.returncode == 1, output(proc)
    assert "BROKEN" in proc.stdout, output(proc)


def test_the_floors_contract_names_the_layers_top_down():
    """The contract is the architecture's floors; losing one from it would stop checking that floor."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    floors = next(c for c in contracts if c["type"] == "layers")["layers"]
    modules = [name.strip() for layer in floors for name in re.split(r"[:|]", layer)]
    expected = ["infra.app", "consumers", "producers", "serving", "trainer", "schemas"]
    assert [m for m in modules if m in expected] == expected, floors
