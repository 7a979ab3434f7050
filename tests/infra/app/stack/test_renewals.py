"""`modelbus status` lists producer renewals from server_metrics, as the processes reported them (real ClickHouse
owner; the rows are written the metadata sink's way, ``write_events``)."""

from __future__ import annotations

import pytest

from infra.app.stack.renewals import producer_renewals
from infra.clickhouse.rows import write_events
from schemas.events import new_header
from tests.clickhouse_db import migrated_store, private_settings

pytestmark = pytest.mark.stack


@pytest.fixture
def ch(base_settings, clickhouse_owner):
    with migrated_store(private_settings(base_settings, clickhouse_owner.url)) as store:
        yield store


def _report(server: str, name: str, process: str, value: float, age_s: float = 0.0) -> tuple[str, dict]:
    header = new_header("tests")
    header["event_time"] -= int(age_s * 1_000_000)
    return "ServerMetrics", {"header": header, "server": server,
                             "samples": [{"name": name, "labels": {"process": process}, "value": value}]}


def test_renewals_per_process_from_the_last_day_only(ch):
    write_events(ch, [
        _report("producer:training.dlq", "modelbus_producer_renewals", "training.dlq", 1),
        _report("producer:training.dlq", "modelbus_producer_renewals", "training.dlq", 1),
        _report("telemetry:churn-1", "modelbus_telemetry_renewals", "churn-1", 3),
        _report("telemetry:churn-1", "modelbus_telemetry_dropped", "churn-1", 50),              # a loss, not one
        _report("producer:old", "modelbus_producer_renewals", "old", 1, age_s=2 * 86400),       # older than a day
    ])
    got = {(r.process, r.kind): r.renewals for r in producer_renewals(ch)}
    assert got == {("training.dlq", "producer"): 2, ("churn-1", "telemetry"): 3}
    assert {(r.process, r.kind): r.renewals for r in producer_renewals(ch, hours=72)}[("old", "producer")] == 1
