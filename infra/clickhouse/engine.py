"""The in-process ClickHouse engine (chdb), shared by ``ChdbStore`` and the HTTP owner.

chdb locks its data directory, so exactly one process (the owner) opens it and
every other process talks to that owner over ClickHouse's HTTP interface. Inside
the owner one connection serves every caller: statements are serialized with a
lock because a chdb connection runs one statement (or streaming insert) at a time
and because per-request settings and the current database are connection state.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

# Parameters of ClickHouse's HTTP interface that are transport concerns, not settings of the query.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "enable_http_compression", "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
    "add_http_cors_header", "http_response_buffer_size", "http_wait_end_of_query", "role",
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


class ChdbEngine:
    """A chdb connection with ClickHouse-server semantics per call: database, settings, bound params."""

    def __init__(self, path: str | Path):
        from chdb.state import sqlitelike

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlitelike.connect(str(self.path))
        except Exception as exc:  # noqa: BLE001 - chdb raises plain RuntimeError/ChdbError
            raise ClickHouseUnavailable(
                f"cannot open the chdb data directory {self.path}: {exc}. Only one process may open it; "
                "other processes reach it through the embedded ClickHouse owner's HTTP interface "
                "(`modelbus up`).") from exc
        self._lock = threading.RLock()
        self._database = "default"
        self._overrides: dict[str, str] = {}
        rows = self._raw("SELECT name FROM system.settings", "TabSeparated").data.decode().split("\n")
        self._known_settings = frozenset(r for r in rows if r)
        info = self._raw("SELECT version(), timezone()", "TabSeparated").data.decode().strip().split("\t")
        self.version, self.timezone = info[0], info[1]

    # -- low level -------------------------------------------------------
    def _raw(self, sql: str, fmt: str, params: Mapping[str, str] | None = None) -> Result:
        if self._conn is None:
            raise ClickHouseUnavailable("the chdb engine is closed")
        try:
            return _result(self._conn.query(sql, fmt, params=dict(params or {})))
        except Exception as exc:  # noqa: BLE001 - every engine failure carries ClickHouse's text
            raise ClickHouseError.from_text(str(exc)) from exc

    def _use(self, database: str | None) -> None:
        database = check_database(database or "default")
        if database != self._database:
            self._raw(f"USE {quote_identifier(database)}", "TabSeparated")
            self._database = database

    def _apply(self, settings: Mapping[str, Any] | None) -> None:
        """Make the connection's settings equal to defaults + ``settings`` (SET only what changed)."""
        wanted = {k: str(v) for k, v in (settings or {}).items() if k not in TRANSPORT_PARAMS}
        for name in wanted:
            if name not in self._known_settings:
                raise ClickHouseError(f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)",
                                      115, "UNKNOWN_SETTING")
        for name in [n for n in self._overrides if n not in wanted]:
            self._raw(f"SET {name} = DEFAULT", "TabSeparated")
            del self._overrides[name]
        for name, value in wanted.items():
            if self._overrides.get(name) != value:
                self._raw(f"SET {name} = {_literal(value)}", "TabSeparated")
                self._overrides[name] = value

    # -- calls ------------------------------------------------------------
    def execute(self, sql: str, fmt: str = "TabSeparated", params: Mapping[str, str] | None = None,
                database: str | None = None, settings: Mapping[str, Any] | None = None) -> Result:
        """Run one statement; a FORMAT clause in ``sql`` wins over ``fmt`` as on a server."""
        with self._lock:
            self._use(database)
            self._apply(settings)
            return self._raw(sql, fmt, params)

    def insert(self, head_sql: str, fmt: str, data: bytes, database: str | None = None,
               settings: Mapping[str, Any] | None = None) -> Result:
        """``INSERT INTO t [(cols)]`` with ``data`` in input format ``fmt``, parsed by the engine itself."""
        with self._lock:
            self._use(database)
            self._apply(settings)
            try:
                ins = self._conn.send_insert(head_sql, fmt)
            except Exception as exc:  # noqa: BLE001
                raise ClickHouseError.from_text(str(exc)) from exc
            try:
                if data:
                    ins.append(data)
                res = ins.finish()
            except Exception as exc:  # noqa: BLE001
                try:
                    ins.cancel()
                except Exception:  # noqa: BLE001 - the insert is already aborted
                    pass
                raise ClickHouseError.from_text(_strip_wrapper(str(exc))) from exc
            return Result(b"", written_rows=int(res.rows_written), written_bytes=int(res.bytes_written),
                          elapsed_s=float(res.elapsed))

    def insert_arrow(self, table: str, arrow_table: pa.Table, database: str | None = None) -> Result:
        """Bulk insert through chdb's zero-copy ``Python()`` table function."""
        cols = ", ".join(quote_identifier(c) for c in arrow_table.column_names)
        sql = f"INSERT INTO {quote_identifier(table)} ({cols}) SELECT * FROM Python(arrow_table)"
        with self._lock:
            self._use(database)
            self._apply(None)
            return self._raw(sql, "TabSeparated")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _strip_wrapper(text: str) -> str:
    """chdb prefixes streaming-insert errors with its own words; keep ClickHouse's message."""
    idx = text.find("Code: ")
    return text[idx:] if idx >= 0 else text
