"""ClickHouse HTTP sessions (``session_id``) on the embedded engine.

A session is a chdb connection of its own: its ``SET`` settings, ``USE`` database and
temporary tables belong to it alone and vanish with it. Sessions are keyed by
(user, id) as in ClickHouse, used by one request at a time (a concurrent request
gets SESSION_IS_LOCKED, as ClickHouse answers), and expire after ``session_timeout``
idle seconds (default and ceiling from settings).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from infra.clickhouse.engine import ChdbEngine, Connection, exception


@dataclass
class _Session:
    conn: Connection
    timeout_s: float
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False


class Sessions:
    def __init__(self, engine: ChdbEngine, default_timeout_s: float = 60, max_timeout_s: float = 3600,
                 clock=time.monotonic):
        self.engine = engine
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], _Session] = {}

    def _timeout(self, text: str | None) -> float:
        if not text:
            return self.default_timeout_s
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= self.max_timeout_s:
            raise exception(374, "INVALID_SESSION_TIMEOUT", f"Invalid session timeout: '{text}' (give seconds, "
                            f"more than 0 and at most {self.max_timeout_s:g})")
        return value

    @contextmanager
    def use(self, user: str, readonly: int, session_id: str, timeout: str | None = None,
            check: bool = False, close: bool = False) -> Iterator[Connection]:
        """The session's connection for one request (created unless ``check``; closed after it when ``close``)."""
        timeout_s = self._timeout(timeout)
        self.expire()
        key = (user, session_id)
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None and check:
                raise exception(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
            if sess is not None and sess.busy:
                raise exception(373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client")
            if sess is None:
                sess = self._sessions[key] = _Session(self.engine.open_connection(readonly), timeout_s)
            sess.busy, sess.timeout_s = True, timeout_s
        try:
            yield sess.conn
        finally:
            with self._lock:
                sess.busy, sess.last_used = False, self._clock()
                if close:
                    self._sessions.pop(key, None)
            if close:
                sess.conn.close()

    def expire(self) -> int:
        """Close sessions idle longer than their timeout; how many were closed."""
        now = self._clock()
        with self._lock:
            dead = [k for k, s in self._sessions.items() if not s.busy and now - s.last_used > s.timeout_s]
            closing = [self._sessions.pop(k) for k in dead]
        for sess in closing:
            sess.conn.close()
        return len(closing)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            closing, self._sessions = list(self._sessions.values()), {}
        for sess in closing:
            sess.conn.close()
