"""README.md stays true: generated sections fresh, commands parse, SQL runs, links and cited tests exist.

A README nobody checks drifts from the code within weeks; each test here turns
one kind of claim the README makes into something CI notices.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import uuid
from pathlib import Path

import pytest

from infra.app import docs

ROOT = docs.ROOT
README = ROOT / "README.md"
REFRESH = f"run `{docs.REFRESH_COMMAND}` (or `bash infra/bootstrap.sh run {docs.REFRESH_COMMAND}`) and commit README.md"
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_SHELLS = {"bash", "sh", "shell", "console"}


def _text() -> str:
    return README.read_text()


def _blocks(lang: set[str] | str) -> list[tuple[int, str]]:
    """(line number, body) of every fenced code block in one of the languages."""
    langs = {lang} if isinstance(lang, str) else lang
    text = _text()
    return [(text[:m.start()].count("\n") + 2, m.group(2)) for m in _FENCE.finditer(text) if m.group(1) in langs]


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def _commands() -> list[tuple[int, list[str]]]:
    """(line, argv after 'modelbus') of every modelbus command in the README's shell blocks.

    Shell lines are joined while a quote is open or a line ends in '\\'; leading
    VAR=value assignments and ``bash infra/bootstrap.sh run`` are stripped; ``bootstrap.sh demo`` is ``modelbus demo``.
    """
    found = []
    for first, body in _blocks(_SHELLS):
        pending, start = "", first
        for i, line in enumerate(body.splitlines()):
            if not pending:
                start = first + i
                line = line[2:] if line.startswith("$ ") else line
            pending += line + "\n"
            if pending.rstrip().endswith("\\"):
                pending = pending.rstrip()[:-1] + " "
                continue
            try:
                argv = shlex.split(pending, comments=True)
            except ValueError:   # open quote: the command goes on
                continue
            pending = ""
            while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
                argv = argv[1:]
            if argv[:3] == ["bash", "infra/bootstrap.sh", "run"]:
                argv = argv[3:]
            elif argv[:3] == ["bash", "infra/bootstrap.sh", "demo"]:
                argv = ["modelbus", *argv[2:]]
            if argv[:1] == ["modelbus"]:
                found.append((start, argv[1:]))
        assert not pending, f"README.md line {start}: unterminated shell command"
    return found


def _parse(argv: list[str]) -> None:
    """Parse argv with the real ``modelbus`` command tree, without running anything."""
    from typer.main import get_command

    from infra.app.cli.main import app

    group = get_command(app)
    ctx = group.make_context("modelbus", list(argv))
    cmd, rest = group, list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
    while hasattr(cmd, "resolve_command"):
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)


# -- generated sections ---------------------------------------------------------------------------
def test_generated_sections_are_up_to_date():
    stale = docs.stale_sections(_text())
    assert not stale, f"README.md: generated section(s) {', '.join(stale)} are stale; {REFRESH}"


def test_generated_pages_are_up_to_date():
    stale = [str(p.relative_to(ROOT)) for p in docs.stale_pages()]
    assert not stale, f"generated page(s) {', '.join(stale)} are stale; run `{docs.REFRESH_COMMAND}` and commit them"


def test_generator_detects_and_refreshes_a_stale_copy(tmp_path, capsys):
    copy = tmp_path / "README.md"
    copy.write_text(_text().replace("| `MODELBUS_LOG_LEVEL` |", "| `MODELBUS_LOG_LEVEL_OLD` |"))
    assert docs.main(["--check", "--readme", str(copy)]) == 1
    assert docs.REFRESH_COMMAND in capsys.readouterr().err
    assert docs.main(["--readme", str(copy)]) == 0
    assert docs.main(["--check", "--readme", str(copy)]) == 0
    assert copy.read_text() == docs.update(_text())          # only the generated parts changed


def test_every_catalogue_event_states_its_key_and_every_setting_a_description():
    from infra.kafka.topics import CATALOGUE

    missing = [e for t in CATALOGUE for e in t.events if not docs.event_key(e)]
    assert not missing, f"schema doc of {missing} lacks 'Key: ....' (the README's key column comes from it)"
    undocumented = [env for env, _, _, desc, _ in docs.settings_rows() if not desc]
    assert not undocumented, f"settings without a description (the README table shows it): {undocumented}"


# -- commands and examples ------------------------------------------------------------------------
def test_every_modelbus_command_in_the_readme_parses():
    commands = _commands()
    assert len(commands) >= 10, "the command extractor found suspiciously few commands"
    failures = []
    for line, argv in commands:
        try:
            _parse(argv)
        except Exception as exc:  # noqa: BLE001 - collect every broken command, not only the first
            if getattr(exc, "exit_code", None) == 0 or "does not exist" in str(exc):
                continue   # --help exits 0; example file names (data.csv, rows.json) need not exist here
            failures.append(f"line {line}: modelbus {shlex.join(argv)}\n    {type(exc).__name__}: {exc}")
    assert not failures, "README commands that `modelbus` refuses:\n" + "\n".join(failures)


def test_python_examples_compile_and_their_imports_resolve():
    blocks = _blocks("python")
    assert blocks
    for line, body in blocks:
        compile(body, f"README.md:{line}", "exec")
        for m in re.finditer(r"^from ([\w.]+) import ([\w, ]+)$|^import ([\w.]+)(?: as \w+)?$", body, re.M):
            module = importlib.import_module(m.group(1) or m.group(3))
            for name in filter(None, (n.strip() for n in (m.group(2) or "").split(","))):
                assert hasattr(module, name), f"README.md:{line}: {m.group(1)} has no {name}"


def test_config_excerpt_is_what_the_repository_writes(tmp_path, base_settings):
    """The config.pbtxt excerpt must be stanzas the deployer really writes for the demo's model."""
    from infra.app.demo.data import FEATURES
    from serving.repository import ModelRepository, RepositoryOptions
    from serving.signature import Signature

    numeric = {"tenure_months", "monthly_charges", "support_calls"}
    sig = Signature.parse({"task": "binary", "labels": ["no", "yes"], "model_name": "churn", "model_version": 1,
                           "inputs": [{"name": f, "column": f, "dims": [1], "dtype": "FP32" if f in numeric
                                       else "BYTES", "kind": "numeric" if f in numeric else "categorical"}
                                      for f in FEATURES],
                           "outputs": [{"name": "scores__0", "dtype": "FP32", "dims": [2]},
                                       {"name": "label__1", "dtype": "INT64", "dims": [1]}]})
    repo = ModelRepository.open(str(tmp_path), RepositoryOptions.from_settings(base_settings))
    written = _stanzas(repo.render_config("churn", sig, [1]))
    (line, excerpt), = _blocks("protobuf")
    unknown = [s for s in _stanzas(excerpt) if s not in written]
    assert not unknown, f"README.md:{line}: config.pbtxt excerpt differs from what the repository writes: {unknown}"


def _stanzas(text: str) -> list[str]:
    """Top-level entries of a protobuf text document (a field line or a whole message block)."""
    out, cur, depth = [], [], 0
    for line in text.strip().splitlines():
        cur.append(line.rstrip())
        depth += line.count("{") - line.count("}")
        if depth == 0:
            out.append("\n".join(cur))
            cur = []
    return out


# -- links, cited tests, described tables ---------------------------------------------------------
def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_exists():
    text = _FENCE.sub("", _text())
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    broken = []
    for label, target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        if not path:
            if fragment not in anchors:
                broken.append(f"[{label}]({target}): no heading with that anchor")
            continue
        file = ROOT / path
        if not file.exists():
            broken.append(f"[{label}]({target}): {path} does not exist")
        elif fragment and file.suffix == ".md":
            if fragment not in {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}:
                broken.append(f"[{label}]({target}): {path} has no heading #{fragment}")
    assert not broken, "broken links in README.md:\n" + "\n".join(broken)


def test_every_test_cited_in_the_guarantees_exists():
    cited = [(label, target) for label, target in _LINK.findall(_section("Guarantees")) if "::" in label]
    assert len(cited) >= 10, "the guarantees section should cite the tests that prove it"
    missing = []
    for label, target in cited:
        file_name, _, test_name = label.strip("`").partition("::")
        path = ROOT / target
        if Path(target).name != file_name or not path.is_file():
            missing.append(f"{label} → {target}: the link must point at {file_name}")
        elif not re.search(rf"^(?:async )?def {re.escape(test_name)}\(", path.read_text(), re.M):
            missing.append(f"{label}: no test {test_name} in {target}")
    assert not missing, "README guarantees cite tests that do not exist:\n" + "\n".join(missing)


def test_every_clickhouse_table_and_view_is_described():
    from infra.clickhouse.migrate import MIGRATIONS_DIR

    ddl = "\n".join(p.read_text() for p in sorted(MIGRATIONS_DIR.glob("*.sql")))
    names = re.findall(r"CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+IF\s+NOT\s+EXISTS\s+\$database\.(\w+)", ddl)
    assert len(names) >= 10
    sql = _section("SQL")
    undescribed = [n for n in names if f"`{n}`" not in sql]
    assert not undescribed, f"README.md's SQL section does not describe {undescribed}"


# -- SQL examples against a real, migrated store -------------------------------------------------
def _clickhouse_fixtures():
    """The lifecycle and telemetry builders of tests/infra/clickhouse/conftest.py (one sample, shared)."""
    path = ROOT / "tests" / "infra" / "clickhouse" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_readme_clickhouse_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sql_env(clickhouse_owner, base_settings):
    """Environment pointing ``modelbus sql`` at a fresh migrated database holding one lifecycle chain."""
    import os

    from infra.clickhouse import HttpStore
    from infra.clickhouse.migrate import migrate
    from infra.clickhouse.rows import telemetry_arrow, write_events

    samples = _clickhouse_fixtures()
    settings = base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(clickhouse_owner.url, database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    write_events(store, samples._lifecycle())
    store.insert_arrow("inference_telemetry", telemetry_arrow([samples._telemetry(at=samples.BASE) for _ in range(5)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update({"MODELBUS_CLICKHOUSE__URL": clickhouse_owner.url,
                "MODELBUS_CLICKHOUSE__DATABASE": settings.clickhouse.database})
    yield env
    store.command(f"DROP DATABASE IF EXISTS {settings.clickhouse.database} SYNC")
    store.close()


@pytest.mark.stack
def test_every_sql_example_runs_against_the_schema(sql_env):
    from typer.testing import CliRunner

    from infra.app.cli.main import app

    runs = [(line, argv) for line, argv in _commands() if argv[:1] == ["sql"]]
    runs += [(line, ["sql", body]) for line, body in _blocks("sql")]
    assert len(runs) >= 4, "the README should show example queries"
    for line, argv in runs:
        if not {"-f", "--format"} & set(argv):
            argv = [*argv, "-f", "json"]
        res = CliRunner().invoke(app, argv, env=sql_env)
        assert res.exit_code == 0, f"README.md:{line}: {shlex.join(argv)}\n{res.output}"
        rows = json.loads(res.stdout)
        if re.search(r"\bv_(model_lineage|dataset_models)\b", argv[1]):
            assert rows, f"README.md:{line}: the lineage example finds nothing on a complete lifecycle chain"
