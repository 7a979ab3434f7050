"""The read-only ClickHouse user of a real server: created and kept in step by the migration job.

The embedded server takes its users from settings (``server_users``); a real
server keeps them in its access storage, so a deployment needs them created
there. Grafana runs whatever SQL a panel holds, so it must not connect as the
writer. ``ensure_reader`` gives ``clickhouse.read_user`` (with
``read_password``) exactly SELECT on the ModelBus database, under a profile with
``readonly = 1``. Grafana's ClickHouse data source sets ``max_execution_time``
on every query, which ``readonly = 1`` refuses unless that one setting is
``CHANGEABLE_IN_READONLY`` (the plugin's and ClickHouse's documentation say
so); ``readonly = 2`` would let a client change every setting.

The password travels only as its SHA-256 (``IDENTIFIED WITH sha256_hash``), so
it never needs quoting and never appears in the server's query log. Every
statement is idempotent, and the ALTER also rotates a changed password, so the
job can run on every deployment.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import SecretStr

PROFILE = "modelbus_readonly"
CHANGEABLE = ("max_execution_time",)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _ident(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"ClickHouse {what} {name!r}: use letters, digits, '_' or '-' (at most 64), "
                         "starting with a letter or '_'")
    return f"`{name}`"


def reader_statements(user: str, password: SecretStr, database: str) -> list[str]:
    """The SQL that makes ``user`` a read-only reader of ``database`` (idempotent, password hashed)."""
    u, db = _ident(user, "user"), _ident(database, "database")
    digest = hashlib.sha256(password.get_secret_value().encode()).hexdigest()
    changeable = ", ".join(f"{s} CHANGEABLE_IN_READONLY" for s in CHANGEABLE)
    auth = f"IDENTIFIED WITH sha256_hash BY '{digest}'"
    return [
        f"CREATE SETTINGS PROFILE OR REPLACE {PROFILE} SETTINGS readonly = 1, {changeable}",
        f"CREATE USER IF NOT EXISTS {u} {auth} SETTINGS PROFILE '{PROFILE}'",
        f"ALTER USER {u} {auth} SETTINGS PROFILE '{PROFILE}'",
        f"GRANT SELECT ON {db}.* TO {u}",
    ]


def ensure_reader(store, ch) -> str | None:
    """Create or update ``ch.read_user`` on a real server; the user's name, or None when there is none to make.

    Nothing to do on the embedded server (its users are settings) or where no
    read user is configured. A read user without a password is refused: a
    passwordless account is not a role.
    """
    if not ch.url or not ch.read_user or ch.read_user == ch.user:
        return None
    if ch.read_password is None or not ch.read_password.get_secret_value():
        raise ValueError(f"clickhouse.read_user {ch.read_user!r} is set but clickhouse.read_password is not")
    for sql in reader_statements(ch.read_user, ch.read_password, ch.database):
        store.command(sql)
    return ch.read_user
