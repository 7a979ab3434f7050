"""The embedded owner's HTTP interface, spoken to with plain HTTP the way ClickHouse clients do.

The owner (``infra.clickhouse.server``) runs as a real subprocess; it is also the suites'
stand-in for a real ClickHouse server, which cannot be installed on this machine.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from infra.app.stack.process import free_port
from infra.clickhouse import ChdbStore, ClickHouseUnavailable, HttpStore, connect
from infra.clickhouse.server import split_insert

stack = pytest.mark.stack


def _http(url, query=None, body=None, headers=None, method=None, **params):
    if query is not None:
        params["query"] = query
    full = url + "/?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(full, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def owner_db(clickhouse_owner):
    db = f"t_{uuid.uuid4().hex[:12]}"
    url = clickhouse_owner.url
    assert _http(url, f"CREATE DATABASE {db}", method="POST")[0] == 200
    _http(url, "CREATE TABLE t (a UInt32, s String) ENGINE = MergeTree ORDER BY a", method="POST", database=db)
    yield url, db
    _http(url, f"DROP DATABASE {db}", method="POST")


def test_split_insert_finds_where_the_data_starts():
    assert split_insert(b"INSERT INTO t (a) FORMAT Native\n\n\x01\x02") == ("INSERT INTO t (a)", "Native",
                                                                           b"\n\x01\x02")
    assert split_insert(b"insert into db.t format TSV  \r\n1\tx\n") == ("insert into db.t", "TSV", b"1\tx\n")
    assert split_insert(b"INSERT INTO t FORMAT Values (1, 'a')") == ("INSERT INTO t", "Values", b"(1, 'a')")
    assert split_insert(b"INSERT INTO t SELECT 1") is None
    assert split_insert(b"SELECT 'INSERT INTO t FORMAT X'") is None


@stack
def test_ping_headers_and_default_format(clickhouse_owner):
    with urllib.request.urlopen(clickhouse_owner.url + "/ping", timeout=5) as resp:
        assert resp.read() == b"Ok.\n"
    status, headers, body = _http(clickhouse_owner.url, "SELECT 1 AS x, 'a' AS s", default_format="JSONEachRow",
                                  query_id="q-123")
    assert status == 200 and json.loads(body) == {"x": 1, "s": "a"}
    assert headers["X-ClickHouse-Format"] == "JSONEachRow" and headers["X-ClickHouse-Query-Id"] == "q-123"
    assert headers["X-ClickHouse-Timezone"] and headers["X-ClickHouse-Server-Display-Name"]
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"
    status, headers, body = _http(clickhouse_owner.url, "SELECT 2 FORMAT CSV")
    assert body == b"2\n" and headers["X-ClickHouse-Format"] == "CSV"


@stack
def test_insert_with_data_in_body_params_and_settings(owner_db):
    url, db = owner_db
    status, headers, _ = _http(url, "INSERT INTO t FORMAT TabSeparated", body=b"1\tone\n2\ttwo\n", database=db)
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    status, _, _ = _http(url, None, body=b"INSERT INTO t FORMAT CSV\n3,\"th'ree\"\n", database=db)
    assert status == 200
    gz = gzip.compress(b"INSERT INTO t FORMAT JSONEachRow\n{\"a\": 4, \"s\": \"four\"}\n")
    assert _http(url, None, body=gz, headers={"Content-Encoding": "gzip"}, database=db)[0] == 200
    status, _, body = _http(url, "SELECT s FROM t WHERE a >= {lo:UInt32} ORDER BY a", database=db,
                            param_lo="2", max_threads="1")
    assert status == 200 and body == b"two\nth\\'ree\nfour\n"   # TabSeparated escapes quotes, as ClickHouse does


@stack
def test_errors_carry_clickhouse_http_status_code_and_text(owner_db):
    """ClickHouse's own status per code (exceptionCodeToHTTPStatus.cpp): unknown names 404, bad input 400."""
    url, db = owner_db
    status, headers, body = _http(url, "SELECT * FROM missing", database=db)
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"UNKNOWN_TABLE" in body
    status, headers, body = _http(url, "SELECT 1", database=db, no_such_setting="1")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "115"
    status, headers, body = _http(url, "SELECT FROM WHERE", method="POST", database=db)
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62"
    status, headers, body = _http(url, "INSERT INTO t FORMAT TabSeparated", body=b"not-a-number\tx\n", database=db)
    assert status >= 400 and headers["X-ClickHouse-Exception-Code"] not in ("", "0")
    assert _http(url, "SELECT count() FROM t", database=db)[2] == b"0\n"     # the failed insert stored nothing
    assert _http(url, "SELECT 1")[0] == 200                                  # and the server keeps serving


@stack
def test_settings_apply_to_one_request_only(owner_db):
    url, db = owner_db
    assert _http(url, "SELECT getSetting('max_threads')", max_threads="3")[2] == b"3\n"
    assert _http(url, "SELECT getSetting('max_threads')")[2] != b"3\n"


@stack
def test_chdb_directory_is_owned_by_one_process(clickhouse_owner):
    code = ("from infra.clickhouse import ChdbStore, ClickHouseUnavailable\n"
            f"try:\n    ChdbStore({str(clickhouse_owner.path)!r}, 'x')\n"
            "except ClickHouseUnavailable as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "REFUSED" in out.stdout and "HTTP interface" in out.stdout, out.stderr


def test_connect_to_missing_embedded_owner_says_how_to_start_it(base_settings):
    s = base_settings.with_overrides(clickhouse={"http_port": free_port()})
    with pytest.raises(ClickHouseUnavailable, match="modelbus up"):
        connect(s)


def test_connect_picks_the_driver_from_settings(base_settings, tmp_path):
    owner = connect(base_settings.with_overrides(clickhouse={"chdb_path": str(tmp_path / "own"),
                                                             "database": "picked"}), owner=True)
    try:
        assert isinstance(owner, ChdbStore) and owner.database == "picked"
        assert owner.query_rows("SELECT currentDatabase() AS d") == [{"d": "picked"}]
    finally:
        owner.close()


@stack
def test_connect_with_url_uses_http(base_settings, clickhouse_owner):
    store = connect(base_settings.with_overrides(clickhouse={"url": clickhouse_owner.url, "database": "viaurl"}))
    try:
        assert isinstance(store, HttpStore)
        assert store.query_rows("SELECT currentDatabase() AS d") == [{"d": "viaurl"}]
    finally:
        store.command("DROP DATABASE viaurl")
        store.close()
