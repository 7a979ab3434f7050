"""The read-only user a real ClickHouse server gets from the migration job (infra/clickhouse/access.py).

No ClickHouse server can be installed here, and chdb has no writable access
storage, so the statements cannot be *executed* here. They are parsed by
ClickHouse's own parser inside chdb instead: a valid access statement is refused
for privileges (497) or an unknown user (511), a malformed one with a syntax
error (62), which the last test shows. ``ensure_reader``'s calls are recorded
by a stand-in store (it only needs ``command``).
"""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from infra.clickhouse import ChdbStore, ClickHouseError
from infra.clickhouse.access import PROFILE, ensure_reader, reader_statements
from infra.settings import load_settings

PASSWORD = SecretStr("s3cr'et\"pw")


def _code(store, sql: str) -> int:
    with pytest.raises(ClickHouseError) as info:
        store.command(sql)
    return int(info.value.code)


def test_statements_parse_in_clickhouse(chdb_engine):
    store = ChdbStore(None, "default", engine=chdb_engine)
    codes = [_code(store, sql) for sql in reader_statements("modelbus_reader", PASSWORD, "modelbus")]
    assert codes == [497, 497, 497, 511]    # access refused / unknown user: parsed, never a syntax error
    assert _code(store, "ALTER USER `x` IDENTIFIED WITH sha256_hash BY 'ab' SETTINGS PROFILE") == 62


def test_statements_carry_the_hash_not_the_password():
    sql = "\n".join(reader_statements("modelbus_reader", PASSWORD, "modelbus"))
    assert PASSWORD.get_secret_value() not in sql
    assert hashlib.sha256(PASSWORD.get_secret_value().encode()).hexdigest() in sql
    assert "SETTINGS readonly = 1, max_execution_time CHANGEABLE_IN_READONLY" in sql
    assert "GRANT SELECT ON `modelbus`.* TO `modelbus_reader`" in sql and "INSERT" not in sql


@pytest.mark.parametrize("user", ["a b", "x`; DROP TABLE t; --", "", "1abc"])
def test_names_that_need_quoting_are_refused(user):
    with pytest.raises(ValueError, match="ClickHouse user"):
        reader_statements(user, PASSWORD, "modelbus")


class _Recorder:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def command(self, sql: str, params=None) -> None:
        self.sql.append(sql)


def _ch(**kw):
    return load_settings(clickhouse=kw).clickhouse


def test_ensure_reader_on_a_real_server_runs_every_statement():
    rec = _Recorder()
    ch = _ch(url="http://clickhouse:8123", user="modelbus", read_user="modelbus_reader", read_password=PASSWORD)
    assert ensure_reader(rec, ch) == "modelbus_reader"
    assert rec.sql == reader_statements("modelbus_reader", PASSWORD, ch.database)
    assert rec.sql[0].startswith(f"CREATE SETTINGS PROFILE OR REPLACE {PROFILE}")


def test_ensure_reader_does_nothing_where_there_is_nothing_to_create():
    rec = _Recorder()
    assert ensure_reader(rec, _ch(read_user="modelbus_reader")) is None       # embedded: users are settings
    assert ensure_reader(rec, _ch(url="http://ch:8123")) is None              # no read user configured
    assert ensure_reader(rec, _ch(url="http://ch:8123", user="w", read_user="w")) is None
    assert rec.sql == []


def test_a_read_user_without_a_password_is_refused():
    with pytest.raises(ValueError, match="read_password is not"):
        ensure_reader(_Recorder(), _ch(url="http://ch:8123", read_user="modelbus_reader"))
