"""Errors of the ClickHouse layer.

Both drivers raise the same ``ClickHouseError`` carrying ClickHouse's own
message and numeric code, so callers (sinks, CLI, dashboards) never need to
know whether the engine ran in-process or behind HTTP.
"""

from __future__ import annotations

import re

from infra.errors import ModelBusError

# "Code: 60. DB::Exception: Unknown table ... (UNKNOWN_TABLE) (version 26.9.2.1)"
_CH_MESSAGE = re.compile(r"Code:\s*(?P<code>\d+)[.,]")
_CH_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_VERSION_TAIL = re.compile(r"\s*\(version [^)]*\)\s*$")
_URL_TAIL = re.compile(r"\s*\(for url [^)]*\)\s*$")


class ClickHouseError(ModelBusError):
    """ClickHouse refused a statement; ``code``/``name`` are ClickHouse's own (e.g. 60, UNKNOWN_TABLE)."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None):
        super().__init__(message)
        self.code = code
        self.name = name

    @classmethod
    def from_text(cls, text: str, code: int | None = None) -> ClickHouseError:
        """Build from an engine/server message, keeping ClickHouse's text and extracting its code."""
        text = _URL_TAIL.sub("", str(text).strip())
        m = _CH_MESSAGE.search(text)
        if m:
            code = int(m.group("code"))
            text = _VERSION_TAIL.sub("", text[m.start():].strip())
        names = _CH_NAME.findall(text)
        return cls(text, code, names[-1] if names else None)


    @property
    def is_transient(self) -> bool:
        """The outcome policy's question (``infra/kafka/outcome.py``): may the same statement succeed later?"""
        return is_transient(self)


class ClickHouseUnavailable(ClickHouseError):
    """No ClickHouse answers at the configured place (server down, chdb directory locked)."""


# ClickHouse codes that describe the server's state, not the data: retrying later can succeed.
TRANSIENT_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE (connection cut)
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    394,  # QUERY_WAS_CANCELLED
    999,  # KEEPER_EXCEPTION
})


def is_transient(exc: BaseException) -> bool:
    """Whether a failed insert may succeed unchanged later (server down or busy) rather than never."""
    return isinstance(exc, ClickHouseUnavailable) or (
        isinstance(exc, ClickHouseError) and exc.code in TRANSIENT_CODES)
