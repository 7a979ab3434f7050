"""Durable 'already processed' markers keyed by event id (or any logical key).

Handlers of lifecycle events are idempotent by checking a marker before the
work and writing it after the outputs are durable; the marker lives in the
artifact store next to those outputs, so it survives restarts and is shared by
every consumer in the group.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from typing import Any

from infra.storage import ArtifactStore

_SAFE = re.compile(r"[^A-Za-z0-9._=-]")


def _safe(part: str) -> str:
    cleaned = _SAFE.sub("_", str(part))[:180]
    return cleaned if cleaned[:1].isalnum() else "k" + cleaned


class ProcessedLog:
    def __init__(self, store: ArtifactStore, scope: str, cache_size: int = 10000):
        self.store = store
        self.scope = _safe(scope)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def _key(self, key: str) -> str:
        return f"_processed/{self.scope}/{_safe(key)}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record written when ``key`` was processed, or None."""
        if key in self._cache:
            return self._cache[key]
        k = self._key(key)
        if not self.store.exists(k):
            return None
        rec = json.loads(self.store.get_bytes(k))
        self._remember(key, rec)
        return rec

    def seen(self, key: str) -> bool:
        return self.get(key) is not None

    def mark(self, key: str, **info: Any) -> dict[str, Any]:
        rec = {"key": key, "time": time.time(), **info}
        self.store.put_bytes(self._key(key), json.dumps(rec, default=str).encode())
        self._remember(key, rec)
        return rec

    def _remember(self, key: str, rec: dict[str, Any]) -> None:
        self._cache[key] = rec
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
