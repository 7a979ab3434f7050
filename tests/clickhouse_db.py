"""A test-private ClickHouse database on the session's embedded owner: created, migrated, dropped afterwards.

One helper for every fixture that needs real tables without sharing rows with other tests.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate
from infra.settings import Settings


def private_settings(settings: Settings, owner_url: str) -> Settings:
    """``settings`` pointed at the owner and at a database of its own (nothing is created yet)."""
    return settings.with_overrides(clickhouse={"url": owner_url, "database": f"t_{uuid.uuid4().hex[:12]}"})


@contextmanager
def migrated_store(settings: Settings) -> Iterator[HttpStore]:
    """A store on ``settings``' database with every migration applied; the database is dropped on exit."""
    store = HttpStore(settings.clickhouse.url, database=settings.clickhouse.database)
    migrate(store, settings.clickhouse)
    try:
        yield store
    finally:
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
