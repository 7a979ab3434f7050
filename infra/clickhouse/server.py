"""The embedded ClickHouse owner: chdb in this process, ClickHouse's HTTP interface on loopback.

chdb locks its data directory, so one process must own it while sinks, the
dashboard and the CLI run elsewhere. This process is that owner: it holds the
engine and answers the subset of ClickHouse's HTTP protocol that clickhouse-connect
(and curl users) need, so every other process uses the same ``HttpStore`` it would
use against a real server. Tests start it as a subprocess as their stand-in for a
real ClickHouse server (none can be installed here).

Supported: ``GET /`` and ``/ping`` (``Ok.``); GET/POST queries with the SQL in the
``query`` parameter and/or the body (also multipart form fields); ``database``;
``param_<name>`` binds; settings as URL parameters, applied to that request only;
``default_format``; ``INSERT ... FORMAT X`` with the data in the body (chunked or
not), parsed by the engine itself; request bodies in any ``Content-Encoding`` and
responses compressed on ``enable_http_compression=1`` + ``Accept-Encoding`` (see
``compression.py``: lz4, zstd, br, gzip, deflate); users with passwords and readonly
levels from settings (``auth.py``), GET requests read-only as in ClickHouse;
sessions (``session_id``, ``session_timeout``, ``session_check``, ``close_session``,
see ``sessions.py``); ClickHouse's response headers; errors with ClickHouse's HTTP
status, ``X-ClickHouse-Exception-Code`` and the ``Code: N. DB::Exception: ...`` text.
Refused with a clear error: ``SET``/``USE``/temporary tables outside a session,
several statements in one request, ClickHouse's native compressed framing
(``compress=1``/``decompress=1``), external data tables.

Run: ``python -m infra.clickhouse.server --path DIR --port N [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from infra.clickhouse import compression
from infra.clickhouse.auth import User, authenticate, credentials, users_from_settings
from infra.clickhouse.engine import TRANSPORT_PARAMS, ChdbEngine, Connection, exception
from infra.clickhouse.errors import ClickHouseError
from infra.clickhouse.sessions import Sessions
from infra.logs import configure_logging
from infra.signals import on_stop_signals

log = logging.getLogger("modelbus.clickhouse.server")

_INSERT = re.compile(r"^\s*(?P<head>INSERT\s+INTO\s.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z][A-Za-z0-9_]*)",
                     re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.IGNORECASE)
_HEAD_SCAN = 1 << 16  # an INSERT statement in front of its data is never longer than this
_SECRET_PARAM = re.compile(r"(?i)\b(password)=[^&\s]*")

# ClickHouse's HTTP status per exception name (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp); others: 500.
_STATUS = {
    401: {"REQUIRED_PASSWORD"},
    403: {"UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"},
    400: {"BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
          "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
          "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
          "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
          "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"},
    404: {"UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
          "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
          "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"},
    408: {"TIMEOUT_EXCEEDED"}, 411: {"HTTP_LENGTH_REQUIRED"}, 413: {"QUERY_IS_TOO_LARGE"},
    415: {"UNSUPPORTED_MEDIA_TYPE"}, 501: {"NOT_IMPLEMENTED"},
    503: {"SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"},
}
_STATUS_OF = {name: status for status, names in _STATUS.items() for name in names}


def http_status(name: str | None) -> int:
    return _STATUS_OF.get(name or "", 500)


def redact(text: str) -> str:
    """``text`` (a request line) with password parameters masked, for logs."""
    return _SECRET_PARAM.sub(lambda m: m.group(1) + "=***", text)


def split_insert(text: bytes) -> tuple[str, str, bytes] | None:
    """``(INSERT head, format, inline data)`` when ``text`` is ``INSERT ... FORMAT X<data>``.

    Like ClickHouse, data starts after the format name, spaces/tabs and at most one newline.
    """
    m = _INSERT.match(text[:_HEAD_SCAN].decode("latin-1"))
    if not m:
        return None
    pos = m.end()
    while pos < len(text) and text[pos:pos + 1] in (b" ", b"\t"):
        pos += 1
    if text[pos:pos + 2] == b"\r\n":
        pos += 2
    elif text[pos:pos + 1] == b"\n":
        pos += 1
    head = m.group("head").encode("latin-1").decode("utf-8", errors="replace")
    return head, m.group("fmt"), text[pos:]


def content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if f in ("pretty", "prettycompact", "vertical", "markdown"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


class OwnerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: ChdbEngine, users: dict[str, User], sessions: Sessions):
        super().__init__(address, Handler)
        self.engine = engine
        self.users = users
        self.sessions = sessions
        self.display_name = f"modelbus-chdb@{socket.gethostname()}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per reply
    server: OwnerServer
    server_version = "ModelBus-chdb"

    def log_message(self, fmt: str, *args) -> None:  # route http.server's access log to logging, no secrets
        log.debug("%s %s", self.address_string(), redact(fmt % args))

    # -- routes -----------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and not url.query):
            self._read_body()
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        elif url.path in ("/", "/query"):
            self._query()
        else:
            self._read_body()
            self._reply(404, b"There is no handle " + url.path.encode() + b"\n", {"Content-Type": "text/plain"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path not in ("/", "/query"):
            self._read_body()
            self._reply(404, b"There is no handle\n", {"Content-Type": "text/plain"})
            return
        self._query()

    # -- request reading --------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _params(self, body: bytes) -> tuple[dict[str, str], bytes]:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            for part in msg.iter_parts():
                param = part.get_param("name", header="content-disposition")
                name = param if isinstance(param, str) else None   # the HTTP policy decodes name*= (RFC 2231) itself
                if part.get_filename():
                    raise exception(48, "NOT_IMPLEMENTED", "external data tables are not supported by the "
                                    "embedded server")
                if name:
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes), "a form field (not itself multipart) decodes to bytes"
                    params[name] = payload.decode("utf-8")
            body = b""
        if "X-ClickHouse-Database" in self.headers and "database" not in params:
            params["database"] = self.headers["X-ClickHouse-Database"]
        for name in ("compress", "decompress"):
            if params.get(name, "0") not in ("", "0", "false"):
                raise exception(48, "NOT_IMPLEMENTED", f"{name}=1 (ClickHouse's native compressed framing) is not "
                                "supported by the embedded server: use HTTP compression instead (Content-Encoding "
                                "for the request; enable_http_compression=1 and Accept-Encoding for the response)")
        return params, body

    # -- execution --------------------------------------------------------
    def _query(self) -> None:
        params: dict[str, str] = {}
        query_id = str(uuid.uuid4())
        method = None
        try:
            body = compression.decode_body(self._read_body(), self.headers.get("Content-Encoding"))
            params, body = self._params(body)
            query_id = params.get("query_id") or query_id
            method = compression.response_method(params.get("enable_http_compression"),
                                                  self.headers.get("Accept-Encoding"))
            user = authenticate(self.server.users, *credentials(self.headers, params))
            session_id = params.get("session_id")
            if session_id:
                with self.server.sessions.use(user.name, user.readonly, session_id, params.get("session_timeout"),
                                              _flag(params.get("session_check")),
                                              _flag(params.get("close_session"))) as conn:
                    res, out_fmt = self._run(params, body, user.readonly, conn)
            else:
                res, out_fmt = self._run(params, body, user.readonly, None)
        except ClickHouseError as exc:
            self._error(exc, query_id)
            return
        except Exception as exc:
            log.exception("request failed")
            self._error(exception(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)
            return
        data, headers = res.data, {}
        if method and data:
            data, headers = compression.encode_body(data, method), {"Content-Encoding": method}
        self._reply(200, data, {
            **headers,
            "Content-Type": content_type(out_fmt),
            "X-ClickHouse-Format": out_fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(res.summary()),
        })

    def _run(self, params: dict[str, str], body: bytes, readonly: int, conn: Connection | None):
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items() if not k.startswith("param_") and k not in TRANSPORT_PARAMS}
        database = params.get("database") or None
        default_format = params.get("default_format") or "TabSeparated"
        query = params.get("query", "")
        engine = self.server.engine
        on: dict[str, Any] = {"readonly": readonly, "get": self.command == "GET", "conn": conn}
        if query:
            ins = split_insert(query.encode())
            if ins is not None:
                head, fmt, inline = ins
                data = inline + body if inline.strip() else body
                return engine.insert(head, fmt, data, database, settings, **on), default_format
            sql = query + ("\n" + body.decode() if body else "")
        elif body:
            ins = split_insert(body)
            if ins is not None:
                head, fmt, data = ins
                return engine.insert(head, fmt, data, database, settings, **on), default_format
            sql = body.decode()
        else:
            raise exception(62, "SYNTAX_ERROR", "Empty query")
        m = _TRAILING_FORMAT.search(sql)
        out_fmt = m.group(1) if m else default_format
        return engine.execute(sql, default_format, binds, database, settings, **on), out_fmt

    # -- responses --------------------------------------------------------
    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"X-ClickHouse-Server-Display-Name": self.server.display_name,
                   "X-ClickHouse-Timezone": self.server.engine.timezone, **headers,
                   "Content-Length": str(len(body))}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, exc: ClickHouseError, query_id: str) -> None:
        code = exc.code or 1001
        text = str(exc) if str(exc).startswith("Code: ") else f"Code: {code}. DB::Exception: {exc}. ({exc.name})"
        self._reply(http_status(exc.name), f"{text} (version {self.server.engine.version})\n".encode(),
                    {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(code),
                     "X-ClickHouse-Query-Id": query_id})


def _flag(value: str | None) -> bool:
    return (value or "0").strip().lower() in ("1", "true")


def serve(path: str, host: str, port: int, settings) -> None:
    """Open the engine, apply migrations, serve until SIGTERM/SIGINT."""
    from infra.clickhouse.migrate import migrate
    from infra.clickhouse.store import ChdbStore

    ch = settings.clickhouse
    engine = ChdbEngine(path)
    store = ChdbStore(path, ch.database, engine=engine)
    applied = migrate(store, ch)
    log.info("migrations applied: %s", applied or "none (up to date)")
    users = users_from_settings(ch)
    sessions = Sessions(engine, ch.session_timeout_s, ch.max_session_timeout_s)
    httpd = OwnerServer((host, port), engine, users, sessions)
    stop = threading.Event()

    def _stop(_signum: int) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    def _expire_sessions() -> None:
        while not stop.wait(1.0):
            sessions.expire()

    on_stop_signals(_stop)
    threading.Thread(target=_expire_sessions, name="session-expiry", daemon=True).start()
    log.info("embedded ClickHouse (chdb %s, data %s) serving http://%s:%d; users: %s", engine.version, path, host,
             port, ", ".join(f"{u.name} (readonly={u.readonly})" for u in users.values()))
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        httpd.server_close()
        sessions.close()
        engine.close()
        log.info("embedded ClickHouse stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True, help="chdb data directory (locked by this process)")
    parser.add_argument("--port", type=int, required=True, help="HTTP port")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    from infra.settings import load_settings

    serve(args.path, args.host, args.port, load_settings())


if __name__ == "__main__":
    main()
