"""Versioned DDL, applied idempotently when the owner (or a test) starts.

Migrations are ``migrations/NNN_name.sql`` templates. Only validated values are
substituted (``$database`` must be an identifier, TTLs are integers), so a
setting can never inject SQL. Each applied version is recorded in
``schema_migrations``; statements also use ``IF NOT EXISTS`` so a migration cut
short by a crash can simply run again.

TTLs are fixed when a table is created; changing ``telemetry_ttl_days`` later
needs an ``ALTER TABLE ... MODIFY TTL`` migration.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra.clickhouse.engine import check_database
from infra.errors import ConfigError

log = logging.getLogger("modelbus.clickhouse.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS $database.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError(f"migration file {path.name} must be named NNN_snake_case.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"duplicate migration versions in {directory}")
    return found


def template_values(ch_settings) -> dict[str, str]:
    """The only values migrations may reference, validated before substitution."""
    try:
        database = check_database(ch_settings.database)
    except Exception as exc:
        raise ConfigError(f"clickhouse.database: {exc}") from exc
    return {"database": database,
            "telemetry_ttl_days": str(int(ch_settings.telemetry_ttl_days)),
            "metadata_ttl_days": str(int(ch_settings.metadata_ttl_days))}


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` outside quotes and comments (ClickHouse's HTTP interface takes one per request)."""
    out, buf, i, n = [], [], 0, len(sql)
    quote: str | None = None
    while i < n:
        c = sql[i]
        if quote:
            buf.append(c)
            if c == "\\" and i + 1 < n:
                buf.append(sql[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in ("'", '"', "`"):
            quote = c
            buf.append(c)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif c == ";":
            out.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def render(migration: Migration, values: dict[str, str]) -> list[str]:
    try:
        return split_statements(Template(migration.template).substitute(values))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"migration {migration.version:03d}_{migration.name}: bad placeholder {exc}") from exc


def applied_versions(store) -> dict[int, str]:
    rows = store.query_rows(f"SELECT version, argMax(checksum, applied_at) AS checksum "
                            f"FROM {store.database}.schema_migrations GROUP BY version")
    return {int(r["version"]): r["checksum"] for r in rows}


def migrate(store, ch_settings, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration in order; returns the versions applied now."""
    values = template_values(ch_settings)
    if values["database"] != store.database:
        raise ConfigError(f"store database {store.database!r} differs from settings {values['database']!r}")
    store.command(Template(_BOOTSTRAP).substitute(values))
    done = applied_versions(store)
    applied = []
    for mig in load_migrations(directory):
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                log.warning("migration %03d_%s changed after it was applied; add a new migration instead",
                            mig.version, mig.name)
            continue
        for statement in render(mig, values):
            store.command(statement)
        store.command(f"INSERT INTO {values['database']}.schema_migrations (version, name, checksum) "
                      "VALUES ({v:UInt32}, {n:String}, {c:String})",
                      {"v": mig.version, "n": mig.name, "c": mig.checksum})
        log.info("applied migration %03d_%s", mig.version, mig.name)
        applied.append(mig.version)
    return applied
