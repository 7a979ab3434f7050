"""README sections rendered from the code: topic catalogue, settings reference, dashboard queries;
and whole generated pages under docs/ (the wire format's test vectors).

Hand-kept tables drift from what they describe, so these three are rendered
from ``infra/kafka/topics.py`` + the Avro schemas, ``infra/settings.py`` and
``infra/clickhouse/dashboards/*.sql``, and written between marker comments in
README.md; a generated page is written whole. ``tests/infra/app/test_docs.py``
fails when the README or a page holds an older rendering. Only defaults are shown, never the current environment, so the
output is the same on every machine.

Refresh: ``python -m infra.app.docs``; check only: ``python -m infra.app.docs --check``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
WIRE_VECTORS = ROOT / "docs" / "wire-vectors.md"
REFRESH_COMMAND = "python -m infra.app.docs"
_KEY = re.compile(r"Key:\s*([^.]+)\.")


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell ('<data_dir>' would otherwise vanish as an HTML tag)."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


# -- topics -------------------------------------------------------------------------------------
def event_key(event: str) -> str:
    """The message key an event is sent with, as its schema's doc states it ('Key: model name.')."""
    from schemas.catalog import AVRO_DIR, NAMESPACE

    doc = json.loads((AVRO_DIR / f"{NAMESPACE}.{event}.avsc").read_text()).get("doc", "")
    m = _KEY.search(doc)
    return m.group(1).strip() if m else ""


def render_topics() -> str:
    from infra.kafka.topics import CATALOGUE, DLQ_SUFFIX
    from infra.settings import KafkaSettings
    from schemas.catalog import AVRO_DIR, NAMESPACE

    prefix = KafkaSettings.model_fields["topic_prefix"].default
    lines = ["| topic | event (schema) | key | partitions | produced by | consumed by |",
             "|---|---|---|---|---|---|"]
    for spec in CATALOGUE:
        events = ", ".join(f"[{e}]({_rel(AVRO_DIR / f'{NAMESPACE}.{e}.avsc')})" for e in spec.events)
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


def render_settings() -> str:
    lines = ["| environment variable | type | default | description |", "|---|---|---|---|"]
    for env, kind, default, desc, _secret in settings_rows():
        lines.append(f"| `{env}` | {kind} | {default} | {_cell(desc)} |")
    return "\n".join(lines)


# -- dashboard queries ----------------------------------------------------------------------------
def render_dashboards() -> str:
    from infra.clickhouse.dashboards import DASHBOARD_DIR, describe, load_dashboard_queries, parameters

    lines = ["| query | shows | parameters |", "|---|---|---|"]
    for name, sql in load_dashboard_queries().items():
        params = ", ".join(f"`{p}` ({t})" for p, t in parameters(sql).items())
        lines.append(f"| [`{name}`]({_rel(DASHBOARD_DIR / f'{name}.sql')}) | {_cell(describe(sql))} "
                     f"| {_cell(params)} |")
    return "\n".join(lines)


# -- wire test vectors ---------------------------------------------------------------------------
def render_wire_vectors() -> str:
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


PAGES: dict[Path, Callable[[], str]] = {WIRE_VECTORS: render_wire_vectors}


def stale_pages() -> list[Path]:
    """Generated pages that are missing or differ from a fresh rendering."""
    return [p for p, render in PAGES.items() if not p.exists() or p.read_text() != render()]


SECTIONS: dict[str, Callable[[], str]] = {
    "topics": render_topics,
    "settings": render_settings,
    "dashboards": render_dashboards,
}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated:{name} -->", f"<!-- END generated:{name} -->"


def _span(text: str, name: str) -> tuple[int, int]:
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README.md lacks the markers {begin} ... {end}")
    return i + len(begin), j


def update(text: str) -> str:
    """``text`` with every generated section replaced by a fresh rendering."""
    for name, render in SECTIONS.items():
        start, stop = _span(text, name)
        text = text[:start] + "\n" + render() + "\n" + text[stop:]
    return text


def stale_sections(text: str) -> list[str]:
    """Names of the generated sections whose text differs from a fresh rendering."""
    fresh = update(text)
    return [n for n in SECTIONS if text[slice(*_span(text, n))] != fresh[slice(*_span(fresh, n))]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REFRESH_COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale; write nothing")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    stale = stale_sections(text)
    pages = stale_pages()
    if args.check:
        if stale:
            print(f"{args.readme}: stale generated section(s) {', '.join(stale)}; run `{REFRESH_COMMAND}`",
                  file=sys.stderr)
        for page in pages:
            print(f"{_rel(page)}: stale generated page; run `{REFRESH_COMMAND}`", file=sys.stderr)
        return 1 if stale or pages else 0
    if stale:
        args.readme.write_text(update(text))
    for page in pages:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(PAGES[page]())
        print(f"{_rel(page)}: refreshed")
    print(f"{args.readme}: " + (f"refreshed {', '.join(stale)}" if stale else "up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
