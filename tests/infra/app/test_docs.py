"""README.md and docs/*.md stay true: generated parts fresh, commands parse, SQL runs, links and cited tests exist.

Docs nobody checks drift from the code within weeks; each test here turns one
kind of claim the README or a page under docs/ makes into something CI notices.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import shutil
import uuid
from pathlib import Path

import pytest

from infra.app import docs

ROOT = docs.ROOT
README = ROOT / "README.md"
PAGES = sorted(docs.DOCS.glob("*.md"))
FILES = [README, *PAGES]                      # every file the checks below read
GUARANTEES = docs.DOCS / "guarantees.md"
SQL = docs.DOCS / "sql.md"
REFRESH = f"run `{docs.REFRESH_COMMAND}` (or `bash infra/bootstrap.sh run {docs.REFRESH_COMMAND}`) and commit the docs"
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_SHELLS = {"bash", "sh", "shell", "console"}


def _name(file: Path) -> str:
    return file.relative_to(ROOT).as_posix()


def _blocks(lang: set[str] | str) -> list[tuple[str, str]]:
    """('file:line', body) of every fenced code block in one of the languages, in the README and docs/*.md."""
    langs = {lang} if isinstance(lang, str) else lang
    found = []
    for file in FILES:
        text = file.read_text()
        for m in _FENCE.finditer(text):
            if m.group(1) in langs:
                line = text[:m.start()].count("\n") + 2
                found.append((f"{_name(file)}:{line}", m.group(2)))
    return found


def _where(block: str, offset: int) -> str:
    """'file:line' of the line ``offset`` lines into the block that starts at 'file:line' ``block``."""
    file, _, line = block.rpartition(":")
    return f"{file}:{int(line) + offset}"


def _commands() -> list[tuple[str, list[str]]]:
    """('file:line', argv after 'modelbus') of every modelbus command in the shell blocks of the README and docs.

    Shell lines are joined while a quote is open or a line ends in '\\'; leading
    VAR=value assignments and ``bash infra/bootstrap.sh run`` are stripped; ``bootstrap.sh demo`` is ``modelbus demo``.
    """
    found = []
    for first, body in _blocks(_SHELLS):
        pending, start = "", first
        for i, line in enumerate(body.splitlines()):
            if not pending:
                start = _where(first, i)
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
        assert not pending, f"{start}: unterminated shell command"
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


# -- generated sections and pages -----------------------------------------------------------------
def test_generated_sections_and_pages_are_up_to_date():
    stale = docs.stale()
    assert not stale, "\n".join(f"{_name(p)}: {why}" for p, why in stale.items()) + f"\n{REFRESH}"


def test_every_generated_section_lives_in_the_page_that_names_it():
    """Markers left behind in another file (the README, a page a section moved out of) would never be refreshed."""
    begin = re.compile(r"<!-- BEGIN generated:([\w-]+) -->")
    misplaced = [f"{_name(f)}: generated:{n}" for f in FILES for n in begin.findall(f.read_text())
                 if n not in docs.SECTIONS or docs.SECTIONS[n][0] != f]
    assert not misplaced, f"markers outside the page their section names (docs.SECTIONS): {misplaced}"
    assert {p for p, _ in docs.SECTIONS.values()} | set(docs.PAGES) <= set(PAGES)


def _stale_copy(tmp_path: Path, what: str) -> Path:
    """A copy of the docs with one generated part made stale: a section by name, or the page of wire vectors."""
    root = tmp_path / "repo"
    shutil.copytree(docs.DOCS, root / "docs")
    shutil.copy(README, root / "README.md")
    if what in docs.SECTIONS:
        file = root / docs.SECTIONS[what][0].relative_to(ROOT)
        end = docs._markers(what)[1]
        file.write_text(file.read_text().replace(end, "| an older row |\n" + end))
    elif what == "page-edited":
        file = root / docs.WIRE_VECTORS.relative_to(ROOT)
        file.write_text(file.read_text().replace("| schema | version |", "| schema | release |"))
    else:
        file = root / docs.WIRE_VECTORS.relative_to(ROOT)
        file.unlink()
    return file


@pytest.mark.parametrize("what", [*docs.SECTIONS, "page-edited", "page-missing"])
def test_generator_detects_and_refreshes_a_stale_copy(tmp_path, capsys, what):
    stale = _stale_copy(tmp_path, what)
    root = tmp_path / "repo"
    assert docs.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert _name(ROOT / stale.relative_to(root)) in err and docs.REFRESH_COMMAND in err
    assert docs.main(["--root", str(root)]) == 0
    assert docs.main(["--check", "--root", str(root)]) == 0
    for file in FILES:                                  # only the generated parts changed
        assert (root / file.relative_to(ROOT)).read_text() == _fresh(file), _name(file)


def _fresh(file: Path) -> str:
    """What ``file`` holds once the generator has refreshed it."""
    return docs.PAGES[file](file) if file in docs.PAGES else docs.update(file.read_text(), file)


def test_every_catalogue_event_states_its_key_and_every_setting_a_description():
    from infra.kafka.topics import CATALOGUE

    missing = [e for t in CATALOGUE for e in t.events if not docs.event_key(e)]
    assert not missing, f"schema doc of {missing} lacks 'Key: ....' (docs/events.md's key column comes from it)"
    undocumented = [env for env, _, _, desc, _ in docs.settings_rows() if not desc]
    assert not undocumented, f"settings without a description (docs/settings.md shows it): {undocumented}"


# -- commands and examples ------------------------------------------------------------------------
def test_every_modelbus_command_in_the_docs_parses():
    commands = _commands()
    assert len(commands) >= 10, "the command extractor found suspiciously few commands"
    failures = []
    for line, argv in commands:
        try:
            _parse(argv)
        except Exception as exc:  # noqa: BLE001 - collect every broken command, not only the first
            if getattr(exc, "exit_code", None) == 0 or "does not exist" in str(exc):
                continue   # --help exits 0; example file names (data.csv, rows.json) need not exist here
            failures.append(f"{line}: modelbus {shlex.join(argv)}\n    {type(exc).__name__}: {exc}")
    assert not failures, "commands in the docs that `modelbus` refuses:\n" + "\n".join(failures)


def test_python_examples_compile_and_their_imports_resolve():
    blocks = _blocks("python")
    assert blocks
    for line, body in blocks:
        compile(body, line, "exec")
        for m in re.finditer(r"^from ([\w.]+) import ([\w, ]+)$|^import ([\w.]+)(?: as \w+)?$", body, re.M):
            module = importlib.import_module(m.group(1) or m.group(3))
            for name in filter(None, (n.strip() for n in (m.group(2) or "").split(","))):
                assert hasattr(module, name), f"{line}: {m.group(1)} has no {name}"


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
    assert not unknown, f"{line}: config.pbtxt excerpt differs from what the repository writes: {unknown}"


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


def _anchors(text: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _FENCE.sub("", text), re.M)}


def _broken_links(file: Path, text: str) -> list[str]:
    """Relative links and anchors in ``text`` (the content of ``file``) that lead nowhere."""
    broken = []
    for label, target in _LINK.findall(_FENCE.sub("", text)):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (file.parent / path).resolve() if path else file
        if path and not linked.exists():
            broken.append(f"[{label}]({target}): {path} does not exist")
        elif fragment and linked.suffix == ".md":
            if fragment not in _anchors(text if linked == file else linked.read_text()):
                broken.append(f"[{label}]({target}): {path or _name(file)} has no heading #{fragment}")
    return broken


def test_every_relative_link_and_anchor_exists():
    broken = [f"{_name(f)}: {b}" for f in FILES for b in _broken_links(f, f.read_text())]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_broken_links():
    page = docs.DOCS / "example.md"
    text = "# Example\n\n[a](missing.md) [b](#nowhere) [c](events.md#no-such-heading) [ok](events.md) [ok](#example)\n"
    assert [b.split(":")[0] for b in _broken_links(page, text)] == [
        "[a](missing.md)", "[b](#nowhere)", "[c](events.md#no-such-heading)"]


def test_the_readme_links_every_docs_page():
    """The README is the newcomer's page: it links every page under docs/ (and each link's page exists)."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in _LINK.findall(README.read_text())}
    assert PAGES, "docs/ holds no pages"
    assert not set(PAGES) - linked, f"docs pages the README does not link: {[_name(p) for p in set(PAGES) - linked]}"
    missing = [_name(p) for p in linked if p.is_relative_to(docs.DOCS) and not p.exists()]
    assert not missing, f"the README links docs pages that do not exist: {missing}"


def test_the_readme_stays_a_newcomers_page():
    """What it is, the two commands, the loop once, where to go next: the reference lives under docs/."""
    text = README.read_text()
    assert len(text.encode()) < 10_000, "README.md grew past 10 KB: move reference material to a page under docs/"
    shells = "\n".join(body for where, body in _blocks(_SHELLS) if where.startswith("README.md:"))
    assert "bash infra/bootstrap.sh demo" in shells and "bash infra/bootstrap.sh test" in shells
    assert text.count("```mermaid") == 1


def test_every_cited_test_exists():
    cited = [(f, label, target) for f in FILES for label, target in _LINK.findall(f.read_text()) if "::" in label]
    assert len([c for c in cited if c[0] == GUARANTEES]) >= 10, "the guarantees should cite the tests that prove them"
    missing = []
    for file, label, target in cited:
        file_name, _, test_name = label.strip("`").partition("::")
        path = file.parent / target
        if Path(target).name != file_name or not path.is_file():
            missing.append(f"{_name(file)}: {label} → {target}: the link must point at {file_name}")
        elif not re.search(rf"^(?:async )?def {re.escape(test_name)}\(", path.read_text(), re.M):
            missing.append(f"{_name(file)}: {label}: no test {test_name} in {target}")
    assert not missing, "the docs cite tests that do not exist:\n" + "\n".join(missing)


def test_every_clickhouse_table_and_view_is_described():
    from infra.clickhouse.migrate import MIGRATIONS_DIR

    ddl = "\n".join(p.read_text() for p in sorted(MIGRATIONS_DIR.glob("*.sql")))
    names = re.findall(r"CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+IF\s+NOT\s+EXISTS\s+\$database\.(\w+)", ddl)
    assert len(names) >= 10
    sql = SQL.read_text()
    undescribed = [n for n in names if f"`{n}`" not in sql]
    assert not undescribed, f"{_name(SQL)} does not describe {undescribed}"


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
    from infra.clickhouse.rows import write_events
    from tests.clickhouse_db import insert_telemetry

    samples = _clickhouse_fixtures()
    settings = base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(clickhouse_owner.url, database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    write_events(store, samples._lifecycle())
    insert_telemetry(store, ([samples._telemetry(at=samples.BASE) for _ in range(5)]))
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
    assert len(runs) >= 4, "the docs should show example queries"
    for line, argv in runs:
        if not {"-f", "--format"} & set(argv):
            argv = [*argv, "-f", "json"]
        res = CliRunner().invoke(app, argv, env=sql_env)
        assert res.exit_code == 0, f"{line}: {shlex.join(argv)}\n{res.output}"
        rows = json.loads(res.stdout)
        if re.search(r"\bv_(model_lineage|dataset_models)\b", argv[1]):
            assert rows, f"{line}: the lineage example finds nothing on a complete lifecycle chain"
