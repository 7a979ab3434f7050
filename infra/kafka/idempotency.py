"""Durable "already processed" markers keyed by event id, for handlers with no natural idempotency key.

Most ModelBus handlers are idempotent by construction (the training ledger's
run id, ReplacingMergeTree rows, uuid5 announcement ids). A handler whose side
effect has no such key (a webhook, an e-mail, an external API call) gets
exactly-once *effects* on top of at-least-once delivery by running behind a
``ProcessedLog``: the ``ConsumerRunner`` skips an event whose id is marked, and
marks ids only after the handler's outputs are durable and before the offsets
are committed. A crash between marking and committing redelivers events that
are then skipped; a crash before marking redoes them (the handler's own outputs
must tolerate that, as under plain at-least-once).

Markers live in the artifact store, so they survive restarts, are shared by
every consumer of the group (local directory or S3), and cost one small write
per event: meant for lifecycle streams, not telemetry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

from infra.storage import ArtifactStore, validate_key


class ProcessedLog:
    def __init__(self, store: ArtifactStore, scope: str, cache_size: int = 10_000):
        self.store = store
        self.scope = validate_key(scope)   # e.g. the consumer group: refused if it could escape the store
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def _key(self, key: str) -> str:
        # Hashed, so any event id (or logical key) maps to one inert, collision-free file name.
        return f"_processed/{self.scope}/{hashlib.sha256(key.encode()).hexdigest()}.json"

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
