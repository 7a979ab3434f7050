"""The in-process ClickHouse engine (chdb), shared by ``ChdbStore`` and the HTTP owner.

chdb locks its data directory, so exactly one process (the owner) opens it and
every other process talks to that owner over ClickHouse's HTTP interface. Inside
the owner, chdb connections to the same directory share the data but each has
its own settings, current database and temporary tables, so the engine keeps:

* a pool of plain connections per readonly level (0, 1, 2) for requests without a
  session: readonly is SET once when a connection opens (nothing can lift it
  later), so a request borrows from the pool of its level; its other settings are
  SET on the connection it borrows and the next borrower's settings replace them;
* dedicated connections for sessions (``open_connection``, see ``sessions.py``).

A borrowed connection runs one statement at a time; different connections run in
parallel. Statements that would change a pooled connection's state for the next
borrower (``SET``, ``USE``, temporary tables, several statements at once) are
refused outside a session; the check is ClickHouse's own parser
(``formatQuerySingleLine``), run only when the text could hold such a statement.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa

from infra.clickhouse.binding import encode_params
from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

# Parameters of ClickHouse's HTTP interface that are transport concerns, not settings of the query.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "enable_http_compression", "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
    "add_http_cors_header", "http_response_buffer_size", "http_wait_end_of_query", "role", "close_session",
    "stacktrace",
})


def quote_identifier(name: str) -> str:
    """Backtick-quote a table/column/database name (names with dots, e.g. Nested columns, allowed)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def check_database(name: str) -> str:
    if not IDENTIFIER.match(name or ""):
        raise ClickHouseError(f"invalid database name {name!r}: use letters, digits and '_'", 81, "UNKNOWN_DATABASE")
    return name


def _literal(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Result:
    """Bytes in the requested format plus the counters ClickHouse reports in X-ClickHouse-Summary."""

    data: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, str]:
        return {"read_rows": str(self.read_rows), "read_bytes": str(self.read_bytes),
                "written_rows": str(self.written_rows), "written_bytes": str(self.written_bytes),
                "total_rows_to_read": str(self.read_rows), "result_rows": "0", "result_bytes": str(len(self.data)),
                "elapsed_ns": str(int(self.elapsed_s * 1e9))}


def _counter(res: Any, name: str) -> int:
    try:
        return int(getattr(res, name)())
    except Exception:  # noqa: BLE001 - counters are informational; DDL results may lack them
        return 0


def _result(res: Any) -> Result:
    if res is None:
        return Result(b"")
    try:
        elapsed = float(res.elapsed())
    except Exception:  # noqa: BLE001
        elapsed = 0.0
    return Result(bytes(res.bytes()), _counter(res, "rows_read"), _counter(res, "bytes_read"),
                  _counter(res, "rows_written"), _counter(res, "bytes_written"), elapsed)


# Text that might hold a statement changing a connection's state; only such text pays for the parser check.
_SUSPECT = re.compile(r";|\b(?:SET|USE|TEMPORARY)\b", re.IGNORECASE)
_STATEFUL = re.compile(r"^(?:SET|USE|CREATE\s+(?:OR\s+REPLACE\s+)?TEMPORARY)\b")
_USE = re.compile(r"\bUSE\b", re.IGNORECASE)
_SET = re.compile(r"\bSET\b", re.IGNORECASE)
_READ = re.compile(r"^\(*\s*(?:SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b")
_MAX_IDLE = 16   # idle pooled connections kept per readonly level
_STRICTNESS = {0: 0, 2: 1, 1: 2}   # readonly=1 reads only; 2 also changes settings; 0 also writes


def readonly_level(floor: int, asked: str | None) -> int:
    """A request's readonly level: its floor made stricter by a ``readonly`` setting, never looser."""
    if asked is None:
        return floor
    try:
        level = int(asked)
        _STRICTNESS[level]
    except (ValueError, KeyError):
        raise exception(36, "BAD_ARGUMENTS", f"readonly must be 0, 1 or 2, not '{asked}'") from None
    if _STRICTNESS[level] < _STRICTNESS[floor]:
        raise exception(164, "READONLY", "Cannot modify 'readonly' setting in readonly mode")
    return max(level, floor, key=_STRICTNESS.__getitem__)


_FORMAT_SQL = "SELECT formatQuerySingleLine({q:String})"


def _normalized(conn: Connection, sql: str) -> str:
    """ClickHouse's own one-line rendering of ``sql`` (its parser decides what the statement is)."""
    return conn.query(_FORMAT_SQL, "RawBLOB", encode_params(_FORMAT_SQL, {"q": sql})).data.decode()


def exception(code: int, name: str, message: str) -> ClickHouseError:
    """A ClickHouseError worded as ClickHouse words its own (``Code: N. DB::Exception: ... (NAME)``)."""
    return ClickHouseError(f"Code: {code}. DB::Exception: {message}. ({name})", code, name)


class Connection:
    """One chdb connection and the state the engine put on it."""

    def __init__(self, raw: Any, readonly: int):
        self.raw = raw
        self.readonly = readonly          # the floor set when opened (the user's level, or 2 for GET)
        self.database: str | None = "default"   # None: unknown (a session ran USE)
        self.overrides: dict[str, str] = {}     # settings SET by the last request (pooled connections)
        self.sealed = False               # a SET failed half-way: close it after the request
        self.known: dict[str, str] = {}   # a session's own setting values as last read (forgotten on SET)

    def query(self, sql: str, fmt: str = "TabSeparated", params: Mapping[str, str] | None = None) -> Result:
        if self.raw is None:
            raise ClickHouseUnavailable("the chdb engine is closed")
        try:
            return _result(self.raw.query(sql, fmt, params=dict(params or {})))
        except Exception as exc:
            raise ClickHouseError.from_text(str(exc)) from exc

    def use(self, database: str | None) -> None:
        """Make ``database`` current; None keeps the current one (a session's own ``USE``)."""
        if database is not None and check_database(database) != self.database:
            self.query(f"USE {quote_identifier(database)}")
            self.database = database

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()


class ChdbEngine:
    """chdb with ClickHouse-server semantics per call: database, settings, bound params, readonly level."""

    def __init__(self, path: str | Path):
        from chdb.state import sqlitelike

        self._connect = sqlitelike.connect
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle: dict[int, list[Connection]] = {0: [], 1: [], 2: []}
        self._closed = False
        conn = self.open_connection(0)
        rows = conn.query("SELECT name FROM system.settings").data.decode().split("\n")
        self._known_settings = frozenset(r for r in rows if r)
        info = conn.query("SELECT version(), timezone()").data.decode().strip().split("\t")
        self.version, self.timezone = info[0], info[1]
        self._release(conn)

    # -- connections -------------------------------------------------------
    def open_connection(self, readonly: int = 0) -> Connection:
        """A new connection of its own (a session's): same data, its own settings and temporary tables."""
        if self._closed:
            raise ClickHouseUnavailable("the chdb engine is closed")
        try:
            raw = self._connect(str(self.path))
        except Exception as exc:
            raise ClickHouseUnavailable(
                f"cannot open the chdb data directory {self.path}: {exc}. Only one process may open it; "
                "other processes reach it through the embedded ClickHouse owner's HTTP interface "
                "(`modelbus up`).") from exc
        conn = Connection(raw, readonly)
        if readonly:
            conn.query(f"SET readonly = {int(readonly)}")
        return conn

    @contextmanager
    def _borrow(self, readonly: int) -> Iterator[Connection]:
        with self._lock:
            idle = self._idle[readonly]
            conn = idle.pop() if idle else None
        conn = conn or self.open_connection(readonly)
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: Connection) -> None:
        with self._lock:
            if not (conn.sealed or self._closed) and len(self._idle[conn.readonly]) < _MAX_IDLE:
                self._idle[conn.readonly].append(conn)
                return
        conn.close()

    # -- per-request state -------------------------------------------------
    def _checked(self, settings: Mapping[str, Any] | None) -> dict[str, str]:
        wanted = {k: str(v) for k, v in (settings or {}).items() if k not in TRANSPORT_PARAMS}
        for name in wanted:
            if name not in self._known_settings:
                raise exception(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        return wanted

    def _guard(self, conn: Connection, sql: str, session: bool) -> None:
        """Refuse what would leak state to the next borrower (outside sessions) and multi-statements."""
        if not (";" in sql if session else _SUSPECT.search(sql)):
            return
        try:
            text = _normalized(conn, sql)
        except ClickHouseError as exc:
            if "Multi-statements" in str(exc):
                raise exception(62, "SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed): "
                                "send one statement per request") from None
            return   # the statement itself fails below with the engine's own syntax error
        if not session and _STATEFUL.match(text):
            raise exception(36, "BAD_ARGUMENTS", f"'{text.split(' ', 1)[0]} ...' outside a session would change "
                            "nothing (each request stands alone): send settings as URL parameters or a SETTINGS "
                            "clause, the database as the `database` parameter, or open a session with `session_id` "
                            "for SET, USE and temporary tables")

    def _apply_pooled(self, conn: Connection, wanted: dict[str, str]) -> None:
        """Make a pooled connection's settings the defaults + ``wanted`` (SET only what changed)."""
        changes = [f"{n} = DEFAULT" for n in conn.overrides if n not in wanted]
        changes += [f"{n} = {_literal(v)}" for n, v in wanted.items() if conn.overrides.get(n) != v]
        if changes:
            try:
                conn.query("SET " + ", ".join(changes))
            except ClickHouseError:
                conn.sealed = True   # its state is no longer known
                raise
        conn.overrides = wanted

    @contextmanager
    def _session_settings(self, conn: Connection, wanted: dict[str, str], level: int) -> Iterator[int | None]:
        """A session request's settings for that request only; yields the readonly level its statement must
        add when the request is stricter than the session (e.g. ``readonly=1``, a GET)."""
        if not wanted and level == 0:   # nothing to set, nothing stricter: costs nothing
            yield None
            return
        missing = {*wanted, "readonly"} - conn.known.keys()
        if missing:   # system.settings gives values in the text form SET takes back (a ~4 ms scan, once)
            rows = conn.query("SELECT name, value FROM system.settings WHERE name IN {n:Array(String)}",
                              "JSONEachRow", {"n": "[" + ", ".join(_literal(n) for n in missing) + "]"})
            conn.known.update({r["name"]: r["value"] for r in map(json.loads, rows.data.decode().splitlines())})
        before = conn.known
        current = int(before["readonly"])
        changed = [n for n in wanted if before.get(n) != wanted[n]]
        if changed:
            conn.query("SET " + ", ".join(f"{n} = {_literal(wanted[n])}" for n in changed))
        try:
            yield level if _STRICTNESS[level] > _STRICTNESS[current] else None
        finally:
            if changed:
                conn.query("SET " + ", ".join(f"{n} = {_literal(before[n])}" for n in changed))

    @staticmethod
    def _read_only(conn: Connection, sql: str, level: int) -> str:
        """``sql`` under ``readonly = level`` for this statement only: a session's readonly cannot be lifted
        once SET, so a read-only request in a read-write session carries it in a trailing SETTINGS clause
        (on ClickHouse's own normalized text of the statement); anything but a read is refused as readonly
        refuses it."""
        text = _normalized(conn, sql)
        if not _READ.match(text):
            raise exception(164, "READONLY", "Cannot execute query in readonly mode")
        return f"{text} SETTINGS readonly = {level}"

    # -- calls ------------------------------------------------------------
    @contextmanager
    def _one_off(self, floor: int, wanted: dict[str, str], level: int) -> Iterator[Connection]:
        """A connection for a request that raises its own readonly AND changes settings: as in ClickHouse,
        its settings are checked against the user's level, then readonly applies; never pooled again."""
        conn = self.open_connection(floor)
        conn.sealed = True
        try:
            self._apply_pooled(conn, wanted)
            conn.query(f"SET readonly = {level}")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _prepared(self, sql: str, database: str | None, settings: Mapping[str, Any] | None, floor: int,
                  get: bool, conn: Connection | None) -> Iterator[tuple[Connection, int | None]]:
        """The connection to run ``sql`` on, its database and settings applied, and the readonly level the
        statement itself must carry (None: the connection's own)."""
        wanted = self._checked(settings)
        level = readonly_level(floor, wanted.pop("readonly", None))
        if get:   # GET requests are read-only: readonly=2 unless stricter already
            level = max(level, 2, key=_STRICTNESS.__getitem__)
        if conn is not None:
            self._guard(conn, sql, session=True)
            conn.use(database)
            with self._session_settings(conn, wanted, level) as extra:
                yield conn, extra
            if _USE.search(sql):
                conn.database = None
            if _SET.search(sql):
                conn.known.clear()
            return
        one_off = wanted and level == 1 and floor != 1
        with self._one_off(floor, wanted, level) if one_off else self._borrow(level) as pooled:
            self._guard(pooled, sql, session=False)
            pooled.use(database or "default")
            self._apply_pooled(pooled, wanted)
            yield pooled, None

    def execute(self, sql: str, fmt: str = "TabSeparated", params: Mapping[str, str] | None = None,
                database: str | None = None, settings: Mapping[str, Any] | None = None, *,
                readonly: int = 0, get: bool = False, conn: Connection | None = None) -> Result:
        """Run one statement; a FORMAT clause in ``sql`` wins over ``fmt`` as on a server.

        ``readonly``: the user's level, which a ``readonly`` setting can only make stricter; ``get``: an HTTP
        GET (read-only, as in ClickHouse). ``conn``: a session's connection; none: a pooled one.
        """
        with self._prepared(sql, database, settings, readonly, get, conn) as (c, extra):
            return c.query(self._read_only(c, sql, extra) if extra else sql, fmt, params)

    def insert(self, head_sql: str, fmt: str, data: bytes, database: str | None = None,
               settings: Mapping[str, Any] | None = None, *, readonly: int = 0, get: bool = False,
               conn: Connection | None = None) -> Result:
        """``INSERT INTO t [(cols)]`` with ``data`` in input format ``fmt``, parsed by the engine itself."""
        with self._prepared(head_sql, database, settings, readonly, get, conn) as (c, extra):
            if extra:
                raise exception(164, "READONLY", "Cannot execute query in readonly mode")
            return _file_insert(c, head_sql, fmt, data)

    def insert_arrow(self, table: str, arrow_table: pa.Table, database: str | None = None) -> Result:
        """Bulk insert through chdb's zero-copy ``Python()`` table function."""
        cols = ", ".join(quote_identifier(c) for c in arrow_table.column_names)
        sql = f"INSERT INTO {quote_identifier(table)} ({cols}) SELECT * FROM Python(arrow_table)"
        with self._borrow(0) as conn:
            conn.use(database or "default")
            self._apply_pooled(conn, {})
            return conn.query(sql)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            for conns in self._idle.values():
                conns.clear()
        for conn in idle:
            conn.close()


_FORMAT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def _file_insert(conn: Connection, head_sql: str, fmt: str, data: bytes) -> Result:
    """``INSERT ... FROM INFILE``: the data goes through a private temporary file and the statement path.

    Not chdb's streaming inserter (``send_insert``): it drops an exception raised inside a materialized
    view, so the insert "succeeded", the table got its rows and the view's target silently none (a view
    dividing by zero lost every served row of its block; ``tests/infra/clickhouse/test_engine_inserts.py``).
    The statement path raises it, as a ClickHouse server does, and the caller keeps its data to retry.
    """
    if not _FORMAT_NAME.match(fmt):
        raise exception(73, "UNKNOWN_FORMAT", f"Unknown input format {fmt[:64]!r}")
    fd, path = tempfile.mkstemp(prefix="modelbus-insert-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        literal = "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return conn.query(f"{head_sql} FROM INFILE {literal} COMPRESSION 'none' FORMAT {fmt}")
    finally:
        os.unlink(path)
