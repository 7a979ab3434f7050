"""Docs sections rendered from the code: topic catalogue, settings reference, dashboard queries;
and whole generated pages under docs/ (the wire format's test vectors).

Hand-kept tables drift from what they describe, so these three are rendered
from ``infra/kafka/topics.py`` + the Avro schemas, ``infra/settings.py`` and
``infra/clickhouse/dashboards/*.sql``, and written between marker comments in
the page each one lives in (``SECTIONS`` names it); a generated page is written
whole (``PAGES``). ``tests/infra/app/test_docs.py`` fails when a file holds an
older rendering. Only defaults are shown, never the current environment, so the
output is the same on every machine.

Refresh: ``python -m infra.app.docs``; check only: ``python -m infra.app.docs --check``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
WIRE_VECTORS = DOCS / "wire-vectors.md"
REFRESH_COMMAND = "python -m infra.app.docs"
_KEY = re.compile(r"Key:\s*([^.]+)\.")


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell ('<data_dir>' would otherwise vanish as an HTML tag)."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _link(path: Path, page: Path) -> str:
    """Link target of ``path`` as written in the markdown file ``page``."""
    return Path(os.path.relpath(path.resolve(), page.parent)).as_posix()


# -- topics -------------------------------------------------------------------------------------
def event_key(event: str) -> str:
    """The message key an event is sent with, as its schema's doc states it ('Key: model name.')."""
    from schemas.catalog import AVRO_DIR, NAMESPACE

    doc = json.loads((AVRO_DIR / f"{NAMESPACE}.{event}.avsc").read_text()).get("doc", "")
    m = _KEY.search(doc)
    return m.group(1).strip() if m else ""


def render_topics(page: Path) -> str:
    from infra.kafka.topics import CATALOGUE, DLQ_SUFFIX
    from infra.settings import KafkaSettings
    from schemas.catalog import AVRO_DIR, NAMESPACE

    prefix = KafkaSettings.model_fields["topic_prefix"].default
    lines = ["| topic | event (schema) | key | partitions | produced by | consumed by |",
             "|---|---|---|---|---|---|"]
    for spec in CATALOGUE:
        events = ", ".join(f"[{e}]({_link(AVRO_DIR / f'{NAMESPACE}.{e}.avsc', page)})" for e in spec.events)
        keys = "; ".join(sorted({event_key(e) for e in spec.events} - {""})) or "-"
        parts = str(spec.partitions) if spec.partitions else "`kafka.default_partitions`"
        if spec.compacted:
            parts += ", compacted"
        lines.append(f"| `{prefix}.{spec.name}` | {events} | {_cell(keys)} | {parts} | {_cell(spec.producers)} "
                     f"| {_cell(spec.consumers)} |")
    lines += ["", f"Every topic has a dead-letter twin `<topic>{DLQ_SUFFIX}` (1 partition). Names carry the "
              f"prefix `kafka.topic_prefix` (default `{prefix}`)."]
    return "\n".join(lines)


# -- settings -----------------------------------------------------------------------------------
def _type(annotation: Any) -> tuple[str, bool]:
    """(readable type, is secret) of a settings field annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is SecretStr:
        return "**secret** string", True
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args), False
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, secret = _type(next(a for a in args if a is not type(None)))
        return f"{inner} (optional)", secret
    if origin is dict:
        return "JSON object", False
    return getattr(annotation, "__name__", str(annotation)), False


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def settings_rows() -> list[tuple[str, str, str, str, bool]]:
    """(env var, type, default, description, is secret) of every setting, in declaration order."""
    from infra.settings import Settings

    rows = []
    for section, sfield in Settings.model_fields.items():
        model = sfield.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, field in model.model_fields.items():
                kind, secret = _type(field.annotation)
                rows.append((f"MODELBUS_{section.upper()}__{name.upper()}", kind, _default(field),
                             field.description or "", secret))
        else:
            kind, secret = _type(sfield.annotation)
            rows.append((f"MODELBUS_{section.upper()}", kind, _default(sfield), sfield.description or "", secret))
    return rows


def render_settings(page: Path) -> str:
    lines = ["| environment variable | type | default | description |", "|---|---|---|---|"]
    for env, kind, default, desc, _secret in settings_rows():
        lines.append(f"| `{env}` | {kind} | {default} | {_cell(desc)} |")
    return "\n".join(lines)


# -- dashboard queries ----------------------------------------------------------------------------
def render_dashboards(page: Path) -> str:
    from infra.clickhouse.dashboards import DASHBOARD_DIR, describe, load_dashboard_queries, parameters

    lines = ["| query | shows | parameters |", "|---|---|---|"]
    for name, sql in load_dashboard_queries().items():
        params = ", ".join(f"`{p}` ({t})" for p, t in parameters(sql).items())
        lines.append(f"| [`{name}`]({_link(DASHBOARD_DIR / f'{name}.sql', page)}) | {_cell(describe(sql))} "
                     f"| {_cell(params)} |")
    return "\n".join(lines)


# -- wire test vectors ---------------------------------------------------------------------------
def render_wire_vectors(page: Path) -> str:
    from schemas.vectors import vectors

    found = vectors()
    lines = ["# Wire format test vectors", "",
             f"<!-- generated by `{REFRESH_COMMAND}` from schemas/; do not edit -->", "",
             "A ModelBus event in single-object encoding is `C3 01`, then the writer schema's CRC-64-AVRO "
             "fingerprint as 8 **little-endian** bytes, then the Avro binary body. Below: each event schema "
             "readers know (every released version; the current one is the highest), its Parsing Canonical "
             "Form and its fingerprint. The first row is the Avro specification's own vector. Readers also "
             "accept the byte-reversed fingerprint that ModelBus wrote before it followed the spec; writers "
             "never write it.", "",
             "| schema | version | fingerprint (unsigned 64-bit) | bytes on the wire after `C3 01` |",
             "|---|---|---|---|"]
    for v in found:
        lines.append(f"| {_cell(v.name)} | {v.version if v.version is not None else '-'} | {v.as_int} "
                     f"| `{' '.join(f'{b:02x}' for b in v.fingerprint)}` |")
    lines += ["", "## Parsing Canonical Forms", ""]
    for v in found[1:]:
        lines += [f"### {v.name} v{v.version}", "", "```json", v.canonical_form, "```", ""]
    return "\n".join(lines)


# -- where each rendering goes --------------------------------------------------------------------
# Renderers take the file they are written into (in the real tree), so their links are relative to it.
Render = Callable[[Path], str]
SECTIONS: dict[str, tuple[Path, Render]] = {       # marker name → (the page holding the markers, renderer)
    "topics": (DOCS / "events.md", render_topics),
    "settings": (DOCS / "settings.md", render_settings),
    "dashboards": (DOCS / "sql.md", render_dashboards),
}
PAGES: dict[Path, Render] = {WIRE_VECTORS: render_wire_vectors}    # pages generated whole


def targets() -> list[Path]:
    """Every file the generator writes into: the pages holding sections, then the whole pages."""
    return sorted({page for page, _ in SECTIONS.values()}) + list(PAGES)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated:{name} -->", f"<!-- END generated:{name} -->"


def _span(text: str, name: str, page: Path) -> tuple[int, int]:
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{_rel(page)} lacks the markers {begin} ... {end}")
    return i + len(begin), j


def _sections_in(page: Path) -> list[str]:
    return [name for name, (target, _) in SECTIONS.items() if target == page]


def update(text: str, page: Path) -> str:
    """``text`` of ``page`` with every generated section it holds replaced by a fresh rendering."""
    for name in _sections_in(page):
        start, stop = _span(text, name, page)
        text = text[:start] + "\n" + SECTIONS[name][1](page) + "\n" + text[stop:]
    return text


def stale_sections(text: str, page: Path) -> list[str]:
    """Names of the generated sections of ``page`` whose text differs from a fresh rendering."""
    fresh = update(text, page)
    return [n for n in _sections_in(page) if text[slice(*_span(text, n, page))] != fresh[slice(*_span(fresh, n, page))]]


def stale(root: Path = ROOT) -> dict[Path, str]:
    """Generated files that are missing or differ from a fresh rendering → why. ``root`` holds the files
    (the repository, or a copy of it); renderings are always made for their place in the real tree."""
    found: dict[Path, str] = {}
    for page in targets():
        file = root / page.relative_to(ROOT)
        if page in PAGES:
            if not file.exists() or file.read_text() != PAGES[page](page):
                found[page] = "stale generated page"
        elif names := stale_sections(file.read_text(), page):
            found[page] = f"stale generated section(s) {', '.join(names)}"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REFRESH_COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale; write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose docs to check or refresh "
                                                              "(default: this repository; tests use a copy)")
    args = parser.parse_args(argv)
    found = stale(args.root)
    for page, why in found.items():
        if args.check:
            print(f"{_rel(page)}: {why}; run `{REFRESH_COMMAND}`", file=sys.stderr)
            continue
        file = args.root / page.relative_to(ROOT)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(PAGES[page](page) if page in PAGES else update(file.read_text(), page))
        print(f"{_rel(page)}: refreshed ({why})")
    if not found:
        print(f"{', '.join(_rel(p) for p in targets())}: up to date")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
