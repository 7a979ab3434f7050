"""What each UI page reads from ClickHouse, through named SQL files with bound parameters only.

A value from the address bar (a model name, a run id, a status) reaches
ClickHouse only as a bound parameter (``{model:String}``); no identifier and no
SQL text is ever built from it, so quoting cannot go wrong. Values that are
choices (a status, a range, a limit) are checked here and refused with the
reason as a ``UIError``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from infra.app.dashboard.data import RANGES
from infra.clickhouse.binding import placeholders
from infra.errors import ModelBusError

T = TypeVar("T")
SQL_DIR = Path(__file__).parent / "sql"
RUN_STATUSES = ("", "queued", "running", "finished", "failed", "cancelled")
MAX_TEXT = 512
MAX_COMPARE = 8


class UIError(ModelBusError):
    """A request the UI refuses, with the reason shown to the person who made it."""


@cache
def sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def one(query: Mapping[str, Any], key: str, default: str = "") -> str:
    value = query.get(key, default)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else default
    text = str(value if value is not None else default).strip()
    if len(text) > MAX_TEXT:
        raise UIError(f"{key} is longer than {MAX_TEXT} characters")
    return text


def _limit(query: Mapping[str, Any], default: int = 100) -> int:
    text = one(query, "limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise UIError("limit must be a whole number from 1 to 1000")
    return int(text)


@dataclass(frozen=True)
class RunFilter:
    model: str = ""
    dataset: str = ""
    status: str = ""
    limit: int = 100

    @classmethod
    def parse(cls, query: Mapping[str, Any]) -> RunFilter:
        status = one(query, "status")
        if status not in RUN_STATUSES:
            raise UIError(f"unknown status {status!r}; choose one of {', '.join(s for s in RUN_STATUSES if s)}")
        return cls(one(query, "model"), one(query, "dataset"), status, _limit(query))


def parse_version(query: Mapping[str, Any]) -> tuple[str, int]:
    model, version = one(query, "model"), one(query, "version")
    if not model:
        raise UIError("name a model: ?model=NAME&version=N")
    if not version.isdigit() or not 0 < int(version) < 2**31:
        raise UIError(f"version must be a positive whole number, got {version!r}")
    return model, int(version)


def parse_ids(query: Mapping[str, Any]) -> list[str]:
    """Run ids to show side by side: repeated ``?run=`` or one comma-separated ``?runs=``."""
    raw = query.get("run", [])
    ids = [str(v).strip() for v in (raw if isinstance(raw, (list, tuple)) else [raw])]
    ids += [part.strip() for part in one(query, "runs").split(",")]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise UIError("pick one run to show, or two or more to compare: ?run=ID&run=ID")
    if len(ids) > MAX_COMPARE or any(len(i) > MAX_TEXT for i in ids):
        raise UIError(f"compare at most {MAX_COMPARE} runs, each id under {MAX_TEXT} characters")
    return ids


def parse_range(query: Mapping[str, Any]) -> str:
    rng = one(query, "range", "1h") or "1h"
    if rng not in RANGES:
        raise UIError(f"unknown range {rng!r}; choose one of {', '.join(RANGES)}")
    return rng


class Reader:
    """The UI's one ClickHouse client, shared by request threads under a lock (a client is not thread-safe)."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()

    def rows(self, name: str, **params: Any) -> list[dict[str, Any]]:
        text = sql(name)
        bound = {k: v for k, v in params.items() if k in placeholders(text)}
        with self._lock:
            return self.store.query_arrow(text, bound).to_pylist(maps_as_pydicts="lossy")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(store, *args)`` under the client's lock (for readers shared with the dashboard)."""
        with self._lock:
            return fn(self.store, *args)

    def panel_rows(self, text: str, params: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
        with self._lock:
            table = self.store.query_arrow(text, dict(params))
        return table.column_names, table.to_pylist(maps_as_pydicts="lossy")
