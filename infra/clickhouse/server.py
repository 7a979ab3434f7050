"""The embedded ClickHouse owner: chdb in this process, ClickHouse's HTTP interface on loopback.

chdb locks its data directory, so one process must own it while sinks, the
dashboard and the CLI run elsewhere. This process is that owner: it holds the
engine and answers the subset of ClickHouse's HTTP protocol that clickhouse-connect
(and curl users) need, so every other process uses the same ``HttpStore`` it would
use against a real server. Tests start it as a subprocess as their stand-in for a
real ClickHouse server (none can be installed here).

Supported: ``/ping``; GET/POST queries with the SQL in the ``query`` parameter
and/or the body (also multipart form fields); ``database``; ``param_<name>``
binds; settings as URL parameters; ``default_format``; ``INSERT ... FORMAT X``
with the data in the body (chunked or not, identity/gzip/deflate encoded), parsed
by the engine itself; ClickHouse's response headers; errors as HTTP 500 with
``X-ClickHouse-Exception-Code`` and the ``Code: N. DB::Exception: ...`` text.
Not supported: sessions (each request stands alone), lz4/zstd compression,
external data tables, authentication (it binds to loopback only).

Run: ``python -m infra.clickhouse.server --path DIR --port N [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import socket
import threading
import uuid
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from infra.clickhouse.engine import TRANSPORT_PARAMS, ChdbEngine
from infra.clickhouse.errors import ClickHouseError
from infra.logs import configure_logging
from infra.signals import on_stop_signals

log = logging.getLogger("modelbus.clickhouse.server")

_INSERT = re.compile(r"^\s*(?P<head>INSERT\s+INTO\s.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z][A-Za-z0-9_]*)",
                     re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.IGNORECASE)
_HEAD_SCAN = 1 << 16  # an INSERT statement in front of its data is never longer than this


class RequestError(Exception):
    """A malformed HTTP request, answered like ClickHouse answers it."""

    def __init__(self, message: str, code: int = 62, name: str = "SYNTAX_ERROR"):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code


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

    def __init__(self, address: tuple[str, int], engine: ChdbEngine):
        super().__init__(address, Handler)
        self.engine = engine
        self.display_name = f"modelbus-chdb@{socket.gethostname()}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per reply
    server: OwnerServer
    server_version = "ModelBus-chdb"

    def log_message(self, fmt: str, *args) -> None:  # route http.server's access log to logging
        log.debug("%s " + fmt, self.address_string(), *args)

    # -- routes -----------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/replicas_status"):
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        elif path in ("/", "/query"):
            self._query(b"")
        else:
            self._read_body()
            self._reply(404, b"There is no handle " + path.encode() + b"\n", {"Content-Type": "text/plain"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path not in ("/", "/query"):
            self._read_body()
            self._reply(404, b"There is no handle\n", {"Content-Type": "text/plain"})
            return
        try:
            body = self._read_body()
        except RequestError as exc:
            self._error(exc.code, str(exc), str(uuid.uuid4()))
            return
        self._query(body)

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
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding != "identity":
            raise RequestError(f"Unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)",
                               1, "UNSUPPORTED_METHOD")
        return body

    def _params(self, body: bytes) -> tuple[dict[str, str], bytes]:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    raise RequestError("external data tables are not supported by the embedded server",
                                       48, "NOT_IMPLEMENTED")
                if name:
                    params[name] = part.get_payload(decode=True).decode("utf-8")
            body = b""
        if "X-ClickHouse-Database" in self.headers and "database" not in params:
            params["database"] = self.headers["X-ClickHouse-Database"]
        return params, body

    # -- execution --------------------------------------------------------
    def _query(self, body: bytes) -> None:
        params: dict[str, str] = {}
        query_id = str(uuid.uuid4())
        try:
            params, body = self._params(body)
            query_id = params.get("query_id") or query_id
            binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {k: v for k, v in params.items() if not k.startswith("param_") and k not in TRANSPORT_PARAMS}
            database = params.get("database") or None
            default_format = params.get("default_format") or "TabSeparated"
            query = params.get("query", "")
            engine = self.server.engine
            if query:
                ins = split_insert(query.encode())
                if ins is not None:
                    head, fmt, inline = ins
                    data = inline + body if inline.strip() else body
                    res = engine.insert(head, fmt, data, database, settings)
                    out_fmt = default_format
                else:
                    sql = query + ("\n" + body.decode() if body else "")
                    res, out_fmt = self._select(sql, default_format, binds, database, settings)
            elif body:
                ins = split_insert(body)
                if ins is not None:
                    head, fmt, data = ins
                    res = engine.insert(head, fmt, data, database, settings)
                    out_fmt = default_format
                else:
                    res, out_fmt = self._select(body.decode(), default_format, binds, database, settings)
            else:
                raise RequestError("Empty query")
        except (ClickHouseError, RequestError) as exc:
            self._error(getattr(exc, "code", None) or 1001, str(exc), query_id)
            return
        except Exception as exc:  # noqa: BLE001 - answer like a server, keep serving
            log.exception("request failed")
            self._error(1001, f"Code: 1001. DB::Exception: {type(exc).__name__}: {exc}. (STD_EXCEPTION)", query_id)
            return
        self._reply(200, res.data, {
            "Content-Type": content_type(out_fmt),
            "X-ClickHouse-Format": out_fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(res.summary()),
        })

    def _select(self, sql, default_format, binds, database, settings):
        m = _TRAILING_FORMAT.search(sql)
        out_fmt = m.group(1) if m else default_format
        return self.server.engine.execute(sql, default_format, binds, database, settings), out_fmt

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

    def _error(self, code: int, message: str, query_id: str) -> None:
        text = f"{message} (version {self.server.engine.version})\n".encode()
        self._reply(500, text, {"Content-Type": "text/plain; charset=UTF-8",
                                "X-ClickHouse-Exception-Code": str(code), "X-ClickHouse-Query-Id": query_id})


def serve(path: str, host: str, port: int, settings) -> None:
    """Open the engine, apply migrations, serve until SIGTERM/SIGINT."""
    from infra.clickhouse.migrate import migrate
    from infra.clickhouse.store import ChdbStore

    engine = ChdbEngine(path)
    store = ChdbStore(path, settings.clickhouse.database, engine=engine)
    applied = migrate(store, settings.clickhouse)
    log.info("migrations applied: %s", applied or "none (up to date)")
    httpd = OwnerServer((host, port), engine)
    stop = threading.Event()

    def _stop(_signum: int) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    on_stop_signals(_stop)
    log.info("embedded ClickHouse (chdb %s, data %s) serving http://%s:%d", engine.version, path, host, port)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
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
