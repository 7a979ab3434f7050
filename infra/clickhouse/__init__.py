"""ClickHouse: the metrics store (telemetry, lifecycle metadata, dashboards, drift inputs).

``connect(settings)`` gives every component a ``Store``; the embedded engine is
chdb, owned by one process (``python -m infra.clickhouse.server``) that serves
ClickHouse's HTTP interface to the others.
"""

from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable
from infra.clickhouse.store import ChdbStore, HttpStore, Store, connect

__all__ = ["ChdbStore", "ClickHouseError", "ClickHouseUnavailable", "HttpStore", "Store", "connect"]
