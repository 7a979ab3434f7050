"""The ``Store``: how every ModelBus component talks to ClickHouse.

Two drivers run the SAME SQL: ``ChdbStore`` holds the engine in-process (the
embedded owner, tests, notebooks) and ``HttpStore`` speaks ClickHouse's HTTP
interface through clickhouse-connect (a real server, or the embedded owner seen
from another process). Results travel as Arrow in both, parameters are always
bound (``{name:Type}``), and failures are ``ClickHouseError`` with ClickHouse's
own message and code.
"""

from __future__ import annotations

import abc
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
from pydantic import SecretStr

from infra.clickhouse.binding import check_params, encode_params
from infra.clickhouse.engine import ChdbEngine, check_database, quote_identifier
from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable

Params = Mapping[str, Any] | None


def _arrow_from_bytes(data: bytes) -> pa.Table:
    """Parse ClickHouse's ``Arrow`` output; naive timestamps are UTC (the engine's timezone)."""
    if not data:
        return pa.table({})
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    fields = []
    changed = False
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            f = f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
            changed = True
        fields.append(f)
    return table.cast(pa.schema(fields)) if changed else table


class Store(abc.ABC):
    """ClickHouse access shared by sinks, dashboards, drift monitor and CLI.

    A store works in one database (created on connect when missing); SQL names
    tables without a database prefix.
    """

    database: str

    @abc.abstractmethod
    def command(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""

    @abc.abstractmethod
    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        """Run a SELECT; the result as an Arrow table (timestamps UTC-aware)."""

    def query_rows(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Run a SELECT; rows as dicts (maps as dicts), for small results."""
        return self.query_arrow(sql, params).to_pylist(maps_as_pydicts="strict")

    @abc.abstractmethod
    def insert_arrow(self, table_name: str, table: pa.Table) -> None:
        """Insert an Arrow table into ``table_name`` (columns matched by name) as one block."""

    @abc.abstractmethod
    def insert_raw(self, table_name: str, data: bytes, fmt: str, columns: Sequence[str] | None = None,
                   settings: Mapping[str, Any] | None = None) -> None:
        """Insert bytes already encoded in a ClickHouse input format (e.g. an Avro container) as is.

        The engine parses the data itself, so hot paths (the telemetry sink)
        never decode events in Python.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine or the HTTP connection pool."""

    def ping(self) -> bool:
        try:
            return self.query_rows("SELECT 1 AS ok")[0]["ok"] == 1
        except ClickHouseError:
            return False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _insert_head(table_name: str, columns: Sequence[str] | None) -> str:
    cols = f" ({', '.join(quote_identifier(c) for c in columns)})" if columns else ""
    return f"INSERT INTO {quote_identifier(table_name)}{cols}"


class ChdbStore(Store):
    """The engine in this process; only the process owning ``path`` may use it."""

    def __init__(self, path: str | Path, database: str = "modelbus", *, engine: ChdbEngine | None = None):
        self.database = check_database(database)
        self._own_engine = engine is None
        self.engine = engine or ChdbEngine(path)
        self.engine.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")

    def command(self, sql: str, params: Params = None) -> None:
        self.engine.execute(sql, "TabSeparated", encode_params(sql, params), self.database)

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        return _arrow_from_bytes(self.engine.execute(sql, "Arrow", encode_params(sql, params), self.database).data)

    def insert_arrow(self, table_name: str, table: pa.Table) -> None:
        self.engine.insert_arrow(table_name, table, self.database)

    def insert_raw(self, table_name: str, data: bytes, fmt: str, columns: Sequence[str] | None = None,
                   settings: Mapping[str, Any] | None = None) -> None:
        self.engine.insert(_insert_head(table_name, columns), fmt, data, self.database, settings)

    def close(self) -> None:
        if self._own_engine:
            self.engine.close()


class HttpStore(Store):
    """A ClickHouse server (or the embedded owner) over HTTP, through clickhouse-connect."""

    def __init__(self, url: str, user: str = "default", password: SecretStr | None = None,
                 database: str = "modelbus", *, connect_timeout: float = 10, send_receive_timeout: float = 300):
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError as CCError

        self.database = check_database(database)
        self.url = url
        self._cc_error = CCError
        try:
            self._client = clickhouse_connect.get_client(
                dsn=url, username=user, password=password.get_secret_value() if password else "",
                compress=False, autogenerate_session_id=False, connect_timeout=connect_timeout,
                send_receive_timeout=send_receive_timeout, query_limit=0)
        except CCError as exc:
            if _is_connection_error(exc):
                raise ClickHouseUnavailable(f"ClickHouse at {url} does not answer: {exc}") from exc
            raise _wrap(exc) from exc
        # Only create what is missing: a production user may read and write without CREATE DATABASE rights.
        if not int(self._call(self._client.command, f"EXISTS DATABASE {quote_identifier(self.database)}")):
            self._call(self._client.command, f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")
        self._client.database = self.database

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._cc_error as exc:
            raise _wrap(exc) from exc

    def command(self, sql: str, params: Params = None) -> None:
        self._call(self._client.command, sql, parameters=check_params(sql, params) or None)

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        data = self._call(self._client.raw_query, sql, parameters=check_params(sql, params) or None, fmt="Arrow",
                          settings={"output_format_arrow_string_as_string": 1})
        return _arrow_from_bytes(data)

    def insert_arrow(self, table_name: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self.insert_raw(table_name, sink.getvalue(), "ArrowStream", columns=table.column_names)

    def insert_raw(self, table_name: str, data: bytes, fmt: str, columns: Sequence[str] | None = None,
                   settings: Mapping[str, Any] | None = None) -> None:
        self._call(self._client.raw_insert, quote_identifier(table_name), list(columns) if columns else None,
                   data, settings=dict(settings or {}), fmt=fmt)

    def close(self) -> None:
        self._client.close()


def _is_connection_error(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("Connection refused", "Max retries exceeded", "NewConnectionError",
                                   "timed out", "Failed to establish"))


def _wrap(exc: Exception) -> ClickHouseError:
    if _is_connection_error(exc):
        return ClickHouseUnavailable(f"ClickHouse does not answer: {exc}")
    return ClickHouseError.from_text(str(exc), getattr(exc, "code", None))


def read_credentials(ch) -> tuple[str, Any]:
    """(user, password) of read-only clients: ``read_user``, else the embedded server's first read-only user,
    else ``user`` (a real server whose read-only user was not configured)."""
    if ch.read_user:
        entry = ch.server_users.get(ch.read_user) if not ch.url else None
        return ch.read_user, ch.read_password or (entry.password if entry is not None else None)
    if not ch.url:
        for name, entry in ch.server_users.items():
            if entry.readonly:
                return name, entry.password
    return ch.user, ch.password


def connect(settings, *, owner: bool = False, read_only: bool = False) -> Store:
    """The store a process should use, from its settings.

    ``clickhouse.url`` set: that server. Otherwise the embedded engine: the
    owner process (``owner=True``, i.e. ``modelbus up``'s ClickHouse part)
    opens chdb itself; everybody else reaches the owner over loopback HTTP.
    ``read_only``: as the read-only user (``read_credentials``), so a dashboard cannot write even if it tried.
    """
    ch = settings.clickhouse
    user, password = read_credentials(ch) if read_only else (ch.user, ch.password)
    if ch.url:
        return HttpStore(ch.url, user, password, ch.database)
    if owner:
        return ChdbStore(settings.chdb_path, ch.database)
    url = f"http://127.0.0.1:{ch.http_port}"
    try:
        return HttpStore(url, user, password, ch.database, connect_timeout=3)
    except ClickHouseUnavailable as exc:
        raise ClickHouseUnavailable(
            f"embedded ClickHouse is not running: start it with `modelbus up` (nothing answers at {url})") from exc
