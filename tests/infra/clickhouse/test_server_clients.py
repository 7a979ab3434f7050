"""The embedded owner as real clients see it: clickhouse-connect at its defaults, the curl binary, and the
request shapes of Grafana's ClickHouse data source (clickhouse-go over HTTP: POST, basic auth,
``default_format=Native``, settings such as ``limit`` as URL parameters, gzip both ways).

One owner per module, started as a real subprocess with passwords and a read-only user from settings;
it stands in for a real ClickHouse server, which cannot be installed here.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import clickhouse_connect
import lz4.frame
import pytest
from backports import zstd
from clickhouse_connect.driver.exceptions import DatabaseError

from consumers.telemetry_sink import INSERT_SETTINGS
from infra.app.stack.clickhouse import ChdbServer
from infra.app.stack.process import free_port
from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate

pytestmark = pytest.mark.stack

WRITER_PW, DASH_PW, VIEWER_PW = "writer-s3cret", "dash-s3cret", "viewer-s3cret"


@pytest.fixture(scope="module")
def owner(base_settings, tmp_path_factory):
    s = base_settings.with_overrides(
        stack={"data_dir": str(tmp_path_factory.mktemp("ch-secured"))},
        clickhouse={"http_port": free_port(), "password": WRITER_PW,
                    "server_users": {"dashboard": {"password": DASH_PW, "readonly": 2},
                                     "viewer": {"password": VIEWER_PW, "readonly": 1}}})
    server = ChdbServer(s)
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture
def db(owner):
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW)
    admin.command(f"CREATE DATABASE {name}")
    admin.command(f"CREATE TABLE {name}.t (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    yield name
    admin.command(f"DROP DATABASE {name}")
    admin.close()


def _curl(url: str, *args: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """The real curl binary; (status, lower-cased headers, body)."""
    cmd = ["curl", "-sS", "-D", "-", *args, url] + (["--data-binary", "@-"] if data is not None else [])
    out = subprocess.run(cmd, input=data, capture_output=True, timeout=30, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _q(**params: str) -> str:
    return "/?" + urllib.parse.urlencode(params)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_get_root_and_ping_answer_ok(owner):
    assert _curl(owner.url + "/")[::2] == (200, b"Ok.\n")
    assert _curl(owner.url + "/ping")[::2] == (200, b"Ok.\n")


def test_ten_concurrent_clients_never_see_each_others_settings_or_tables(owner):
    """Each client: its own session (clickhouse-connect's default) with its own SET and temporary table,
    per-request settings, and raw requests with readonly=1 / max_result_rows=1 in between."""
    start = threading.Barrier(10)
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            c = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW)
            start.wait(30)
            c.command(f"SET max_result_rows = {100 + i}")
            c.command("CREATE TEMPORARY TABLE mine (who UInt32) ENGINE = Memory")
            c.command(f"INSERT INTO mine VALUES ({i})")
            for round_ in range(5):
                got = c.query("SELECT getSetting('max_result_rows'), getSetting('max_threads'), "
                              "(SELECT groupArray(who) FROM mine)", settings={"max_threads": i + 1}).result_rows
                if got != [(100 + i, i + 1, [i])]:
                    errors.append(f"client {i} round {round_}: {got}")
                params = {"readonly": "1"} if i % 2 else {"max_result_rows": "1"}
                status, _, body = _curl(owner.url + _q(query="SELECT getSetting('readonly'), "
                                                         "getSetting('max_result_rows')", **params),
                                        "-u", f"default:{WRITER_PW}")
                want = b"1\t0\n" if i % 2 else b"2\t1\n"   # curl sends GET: readonly=2 unless stricter
                if (status, body) != (200, want):
                    errors.append(f"client {i} raw: {status} {body!r}")
            c.close()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    fresh = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW, autogenerate_session_id=False)
    assert fresh.query("SELECT getSetting('max_result_rows'), getSetting('readonly')").result_rows == [(0, 0)]
    with pytest.raises(DatabaseError, match="mine"):
        fresh.query("SELECT * FROM mine")


def test_readonly_request_never_stops_the_sinks_inserts(owner, base_settings, make_telemetry, avro_container):
    ch = base_settings.clickhouse.model_copy(update={"database": f"t_{uuid.uuid4().hex[:12]}"})
    store = HttpStore(owner.url, "default", owner.settings.clickhouse.password, ch.database)
    try:
        migrate(store, ch)
        for args in (("-u", f"default:{WRITER_PW}"), ("-u", f"default:{WRITER_PW}", "-X", "POST")):
            status, _, body = _curl(owner.url + _q(query="SELECT 1", readonly="1"), *args)
            assert (status, body) == (200, b"1\n")
        status, headers, body = _curl(owner.url + _q(readonly="1", database=ch.database), "-u",
                                      f"default:{WRITER_PW}", data=b"INSERT INTO inference_telemetry_ingest "
                                      b"SELECT * FROM inference_telemetry_ingest")
        assert status == 500 and headers["x-clickhouse-exception-code"] == "164"   # that request only
        for session in (False, True):   # readonly with other settings in one request, as ClickHouse allows
            c = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW, autogenerate_session_id=session)
            got = c.query("SELECT getSetting('readonly'), getSetting('max_threads')",
                          settings={"readonly": 1, "max_threads": 3}).result_rows
            assert got == [(1, 3)]
            with pytest.raises(DatabaseError) as err:
                c.command(f"CREATE TABLE {ch.database}.nope (a UInt8) ENGINE = Memory", settings={"readonly": 1})
            assert err.value.code == 164
            assert c.query("SELECT getSetting('readonly'), getSetting('max_threads') != 3").result_rows == [(0, 1)]
        values = [make_telemetry() for _ in range(50)]
        store.insert_raw("inference_telemetry_ingest", avro_container(values, [("t", 0, i) for i in range(50)]),
                         "Avro", settings=INSERT_SETTINGS)   # exactly the telemetry sink's insert
        assert store.query_rows("SELECT count() AS n FROM inference_telemetry") == [{"n": 50}]
        assert owner.healthy() and owner.problem is None
    finally:
        store.command(f"DROP DATABASE {ch.database}")
        store.close()


def test_set_use_temporary_tables_and_multi_statements_outside_a_session_are_refused(owner):
    plain = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW, autogenerate_session_id=False)
    for sql in ("SET max_result_rows = 1", "  /* why */ set readonly = 1", "USE system",
                "CREATE TEMPORARY TABLE x (a UInt8)"):
        with pytest.raises(DatabaseError) as err:
            plain.command(sql)
        assert err.value.code == 36 and "session" in str(err.value)
    with pytest.raises(DatabaseError) as err:
        plain.command("SELECT 1; SET max_result_rows = 1")
    assert err.value.code == 62 and "Multi-statements" in str(err.value)
    status, headers, body = _curl(owner.url + "/", "-u", f"default:{WRITER_PW}", data=b"SET max_threads = 1")
    assert status == 400 and headers["x-clickhouse-exception-code"] == "36"
    assert body.startswith(b"Code: 36. DB::Exception: ") and b"(BAD_ARGUMENTS)" in body
    assert plain.query("SELECT getSetting('max_result_rows'), 'SET;USE' AS s").result_rows == [(0, "SET;USE")]


def test_temporary_tables_are_session_scoped_and_expire(owner):
    def post(sql: str, **params: str):
        return _curl(owner.url + _q(**params), "-u", f"default:{WRITER_PW}", data=sql.encode())

    assert post("CREATE TEMPORARY TABLE tmp (a UInt8)", session_id="s-a", session_timeout="2")[0] == 200
    assert post("INSERT INTO tmp VALUES (7)", session_id="s-a", session_timeout="2")[0] == 200
    assert post("SELECT a FROM tmp", session_id="s-a", session_timeout="2")[::2] == (200, b"7\n")
    assert post("SELECT a FROM tmp", session_id="s-b")[0] == 404
    assert post("SELECT a FROM tmp")[0] == 404
    status, headers, _ = post("SELECT 1", session_id="s-none", session_check="1")
    assert status == 500 and headers["x-clickhouse-exception-code"] == "372"
    assert post("SELECT 1", session_id="s-a", session_timeout="99999")[1]["x-clickhouse-exception-code"] == "374"

    slow = threading.Thread(target=post, args=("SELECT sleep(3)",),
                            kwargs={"session_id": "s-a", "session_timeout": "2"})
    slow.start()
    time.sleep(1.2)
    locked = post("SELECT 1", session_id="s-a")
    slow.join()
    assert locked[1]["x-clickhouse-exception-code"] == "373"   # SESSION_IS_LOCKED, as ClickHouse answers
    time.sleep(3.5)   # idle past its 2 s timeout (each request restates it, as in ClickHouse)
    assert post("SELECT 1", session_id="s-a", session_check="1")[1]["x-clickhouse-exception-code"] == "372"
    assert post("SELECT a FROM tmp", session_id="s-a")[0] == 404


def test_clickhouse_connect_defaults_insert_and_query_compressed(owner, db):
    c = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW)
    assert c.write_compression == "lz4" and c.compression.startswith("lz4")   # compress=True by default
    rows = [[i, f"row-{i}" * 20] for i in range(20000)]
    c.insert(f"{db}.t", rows, column_names=["a", "s"])
    assert c.query(f"SELECT count(), sum(a) FROM {db}.t").result_rows == [(20000, sum(range(20000)))]
    arrow = c.query_arrow(f"SELECT a, s FROM {db}.t WHERE a < 3 ORDER BY a")
    assert arrow.column("s").to_pylist()[2] == "row-2" * 20
    for method in ("zstd", "br", "gzip"):   # the methods clickhouse-connect can also write
        other = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW, compress=method)
        other.insert(f"{db}.t", [[100000, method]], column_names=["a", "s"])
        assert other.query(f"SELECT s FROM {db}.t WHERE a = 100000").result_rows == [(method,)]
        other.command(f"DELETE FROM {db}.t WHERE a = 100000")


def test_http_compression_both_ways_as_clickhouse_does_it(owner, db):
    auth = {"Authorization": _basic("default", WRITER_PW)}

    def post(body: bytes, headers: dict, **params: str):
        req = urllib.request.Request(owner.url + _q(database=db, **params), data=body, headers={**auth, **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    sql = b"INSERT INTO t FORMAT TSV\n" + b"".join(b"%d\tz\n" % i for i in range(1000))
    frames = lz4.frame.compress(sql[:500]) + lz4.frame.compress(sql[500:])   # one lz4 frame per block
    assert post(frames, {"Content-Encoding": "lz4"})[0] == 200
    assert post(zstd.compress(b"INSERT INTO t FORMAT TSV\n5000\tzz\n"), {"Content-Encoding": "zstd"})[0] == 200
    status, headers, body = post(b"SELECT count() FROM t", {"Accept-Encoding": "zstd, gzip"},
                                 enable_http_compression="1")
    assert status == 200 and headers["Content-Encoding"] == "zstd" and zstd.decompress(body) == b"1001\n"
    status, headers, body = post(b"SELECT count() FROM t", {"Accept-Encoding": "zstd"})
    assert body == b"1001\n" and "Content-Encoding" not in headers   # not asked with enable_http_compression
    status, headers, body = _curl(owner.url + _q(query="SELECT count() FROM t", database=db,
                                                 enable_http_compression="1"),
                                  "-u", f"default:{WRITER_PW}", "-H", "Accept-Encoding: gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b"1001\n"
    for enc in ("gzip", "deflate"):
        status, headers, body = _curl(owner.url + _q(query="SELECT count() FROM t", database=db,
                                                     enable_http_compression="1"),
                                      "-u", f"default:{WRITER_PW}", "--compressed", "-H", f"Accept-Encoding: {enc}")
        assert headers["content-encoding"] == enc and body == b"1001\n"
    status, headers, body = post(b"SELECT 1", {}, compress="1")
    assert status == 501 and b"native compressed framing" in body   # refused, never silently ignored
    status, headers, body = post(b"garbage", {"Content-Encoding": "lz4"})
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "271"


def test_bad_credentials_are_refused_every_way(owner):
    ok = owner.url + _q(query="SELECT currentUser() = currentUser()")
    for args in (("-u", "default:wrong"), ("-u", "nobody:" + WRITER_PW), ("-H", "X-ClickHouse-User: default",
                 "-H", "X-ClickHouse-Key: wrong"), ()):
        status, headers, body = _curl(ok, *args)
        assert status == 403 and headers["x-clickhouse-exception-code"] == "516", args
        assert b"Authentication failed" in body and WRITER_PW.encode() not in body
    status, headers, _ = _curl(owner.url + _q(query="SELECT 1", user="default", password="wrong"))
    assert status == 403 and headers["x-clickhouse-exception-code"] == "516"
    status, headers, body = _curl(owner.url + _q(query="SELECT 1", user="default", password=WRITER_PW),
                                  "-u", f"default:{WRITER_PW}")
    assert status == 403 and b"more than one authentication method" in body
    for args in (("-u", f"default:{WRITER_PW}"), ("-H", "X-ClickHouse-User: default", "-H",
                                                   f"X-ClickHouse-Key: {WRITER_PW}")):
        assert _curl(owner.url + _q(query="SELECT 1"), *args)[::2] == (200, b"1\n")
    assert _curl(owner.url + _q(query="SELECT 1", user="default", password=WRITER_PW))[::2] == (200, b"1\n")
    with pytest.raises(DatabaseError) as err:
        clickhouse_connect.get_client(dsn=owner.url, password="wrong")
    assert "516" in str(err.value)
    log = owner.log_path.read_text()
    assert WRITER_PW not in log and DASH_PW not in log and "wrong" not in log


@pytest.mark.parametrize("user,password", [("dashboard", DASH_PW), ("viewer", VIEWER_PW)])
def test_read_only_users_cannot_write(owner, db, user, password):
    admin = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW)
    admin.command(f"INSERT INTO {db}.t VALUES (1, 'kept')")
    for session in (True, False):
        c = clickhouse_connect.get_client(dsn=owner.url, username=user, password=password,
                                          autogenerate_session_id=session)
        assert c.query(f"SELECT s FROM {db}.t").result_rows == [("kept",)]
        for sql in (f"INSERT INTO {db}.t VALUES (2, 'x')", f"CREATE TABLE {db}.u (a UInt8) ENGINE = Memory",
                    f"DROP TABLE {db}.t", f"TRUNCATE TABLE {db}.t", f"ALTER TABLE {db}.t DELETE WHERE 1",
                    f"INSERT INTO {db}.t SELECT 3, 'y' SETTINGS readonly = 0"):
            with pytest.raises(DatabaseError) as err:
                c.command(sql)
            assert err.value.code == 164, (sql, err.value)
        with pytest.raises(DatabaseError):
            c.insert(f"{db}.t", [[4, "z"]], column_names=["a", "s"])
    status, headers, _ = _curl(owner.url + _q(database=db, readonly="0"), "-u", f"{user}:{password}",
                               data=b"INSERT INTO t VALUES (5, 'w')")
    assert headers["x-clickhouse-exception-code"] == "164"
    assert admin.query(f"SELECT a, s FROM {db}.t").result_rows == [(1, "kept")]


def test_grafana_http_query_shapes(owner, db):
    """clickhouse-go's HTTP transport as Grafana's data source configures it: POST, basic auth, the database
    and ``default_format=Native`` in the URL, its ``limit`` row-limit setting, gzip request and response."""
    admin = clickhouse_connect.get_client(dsn=owner.url, password=WRITER_PW)
    admin.command(f"INSERT INTO {db}.t SELECT number, toString(number) FROM numbers(50)")

    def grafana(sql: str, limit: str | None = "2"):
        params = {"database": db, "default_format": "Native", "enable_http_compression": "1",
                  **({"limit": limit} if limit else {}), "query_id": str(uuid.uuid4())}
        req = urllib.request.Request(owner.url + _q(**params), data=gzip.compress(sql.encode()), method="POST",
                                     headers={"Authorization": _basic("dashboard", DASH_PW),
                                              "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            return r.headers, gzip.decompress(r.read())

    headers, body = grafana("SELECT 1")   # the data source's ping
    assert headers["X-ClickHouse-Format"] == "Native"
    assert body == b"\x01\x01\x011\x05UInt8\x01"   # Native: 1 column, 1 row, name '1', type UInt8, value 1
    tz = json.loads(grafana("SELECT timeZone() AS tz FORMAT JSON")[1])["data"][0]["tz"]
    assert tz and tz == headers["X-ClickHouse-Timezone"]
    version = json.loads(grafana("SELECT version() AS v FORMAT JSON")[1])["data"][0]["v"]
    assert version.count(".") >= 2
    tables = json.loads(grafana(f"SELECT name FROM system.tables WHERE database = '{db}' FORMAT JSON")[1])
    assert [r["name"] for r in tables["data"]] == ["t"]
    cols = json.loads(grafana(f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 't' "
                              "FORMAT JSON")[1])
    assert [(r["name"], r["type"]) for r in cols["data"]] == [("a", "UInt32"), ("s", "String")]
    now = int(time.time())
    panel = (f"SELECT toStartOfMinute(now()) AS time, count() AS n FROM t WHERE now() >= toDateTime({now - 3600}) "
             f"AND now() <= toDateTime({now + 3600}) GROUP BY time ORDER BY time FORMAT JSON")
    assert json.loads(grafana(panel)[1])["data"][0]["n"] == 50
    assert len(json.loads(grafana("SELECT a FROM t ORDER BY a FORMAT JSON")[1])["data"]) == 2     # limit=2
    assert len(json.loads(grafana("SELECT a FROM t ORDER BY a FORMAT JSON", None)[1])["data"]) == 50


def test_health_needs_queries_that_work_for_the_writer_not_just_ping(owner):
    assert owner.check() is None
    wrong = ChdbServer(owner.settings.with_overrides(clickhouse={"password": "not-it"}))
    assert wrong.url == owner.url and not wrong.healthy()
    assert "queries fail" in wrong.problem and "516" in wrong.problem and "not-it" not in wrong.problem
    viewer = ChdbServer(owner.settings.with_overrides(clickhouse={"user": "viewer", "password": VIEWER_PW}))
    assert not viewer.healthy() and "read-only" in viewer.problem
    gone = ChdbServer(owner.settings.with_overrides(clickhouse={"http_port": free_port()}))
    assert not gone.healthy() and "/ping failed" in gone.problem


def test_read_only_clients_connect_as_the_read_only_user_and_cannot_write(owner, db, base_settings):
    """``connect(read_only=True)`` (what `modelbus dashboard` uses) picks the first read-only server user."""
    from infra.clickhouse import ClickHouseError, connect
    from infra.clickhouse.store import read_credentials

    s = base_settings.with_overrides(clickhouse={
        "http_port": int(owner.url.rsplit(":", 1)[1]), "password": WRITER_PW, "database": db,
        "server_users": {"dashboard": {"password": DASH_PW, "readonly": 2},
                         "viewer": {"password": VIEWER_PW, "readonly": 1}}})
    user, password = read_credentials(s.clickhouse)
    assert user == "dashboard" and password.get_secret_value() == DASH_PW
    with connect(s) as writer:
        writer.command("INSERT INTO t VALUES (1, 'kept')")
    with connect(s, read_only=True) as reader:
        assert reader.query_rows("SELECT s FROM t") == [{"s": "kept"}]
        with pytest.raises(ClickHouseError) as err:
            reader.command("INSERT INTO t VALUES (2, 'x')")
        assert err.value.code == 164
    named = s.with_overrides(clickhouse={"read_user": "viewer"})
    assert read_credentials(named.clickhouse)[0] == "viewer"
    with connect(named, read_only=True) as viewer:
        assert viewer.query_rows("SELECT count() AS n FROM t") == [{"n": 1}]
    real = s.with_overrides(clickhouse={"url": "https://ch.example:8443"})   # no read user configured there
    assert read_credentials(real.clickhouse) == ("default", real.clickhouse.password)
