"""Inserts into the embedded engine fail when one of the table's materialized views fails, as on a server.

chdb's streaming inserter swallowed such an exception: the insert returned, the table got its rows and the
view's target none, so a sink would commit Kafka offsets for rows that were never stored. Both drivers
(in-process chdb and the owner's HTTP interface, which clickhouse-connect talks to) must raise instead.
"""

from __future__ import annotations

import pytest

from infra.clickhouse import ClickHouseError


@pytest.fixture
def viewed(bare_store):
    """src (rows) → a view that refuses a row without items → dst."""
    s = bare_store
    s.command(f"CREATE DATABASE IF NOT EXISTS {s.database}")
    s.command(f"CREATE TABLE {s.database}.src (id Int64, items Array(Int64)) ENGINE = MergeTree ORDER BY id")
    s.command(f"CREATE TABLE {s.database}.dst (id Int64, n Int64) ENGINE = MergeTree ORDER BY id")
    s.command(f"CREATE MATERIALIZED VIEW {s.database}.src_mv TO {s.database}.dst AS "
              f"SELECT id, intDiv(100, length(items)) AS n FROM {s.database}.src")
    return s


def _count(store, table: str) -> int:
    return store.query_rows(f"SELECT count() AS n FROM {table}")[0]["n"]


def test_an_insert_whose_view_fails_raises_and_one_whose_view_passes_lands_in_both(viewed):
    viewed.insert_raw("src", b'{"id": 1, "items": [1, 2]}\n{"id": 2, "items": [7]}\n', "JSONEachRow")
    assert (_count(viewed, "src"), _count(viewed, "dst")) == (2, 2)

    with pytest.raises(ClickHouseError, match="Division by zero"):
        viewed.insert_raw("src", b'{"id": 3, "items": [1]}\n{"id": 4, "items": []}\n', "JSONEachRow")
    assert _count(viewed, "dst") == 2                     # the caller knows: it keeps the batch and retries


def test_text_after_the_format_name_is_never_run_as_sql(viewed):
    """The in-process driver refuses a format that is not a name; over HTTP the server reads the name from
    the statement, as ClickHouse does, and the rest is data that fails to parse. Either way nothing runs."""
    with pytest.raises(ClickHouseError, match="Unknown input format|Cannot parse input"):
        viewed.insert_raw("src", b"", "JSONEachRow SETTINGS readonly=0")
    assert _count(viewed, "src") == 0
