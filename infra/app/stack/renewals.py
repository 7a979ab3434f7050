"""Kafka producer renewals per process, read back from ClickHouse for `modelbus status`.

Why from ClickHouse: a renewal happens inside whichever process owns the producer (a
consumer, a model server's telemetry emitter, the SDK), and each reports it as a
ServerMetrics sample (``infra.kafka.producer.RENEWAL_METRIC``,
``serving.telemetry_losses``) that the metadata sink stores in ``server_metrics``. So
status sees the renewals of every process, local or not, the way SQL does.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings

METRICS = ("modelbus_producer_renewals", "modelbus_telemetry_renewals")

SQL = """
SELECT labels['process'] AS process, name AS metric, toUInt64(sum(value)) AS renewals,
       max(event_time) AS last_at
FROM server_metrics FINAL
WHERE name IN {metrics:Array(String)} AND event_time >= now64(6) - INTERVAL {hours:UInt32} HOUR
GROUP BY process, metric
ORDER BY last_at DESC
"""


@dataclass(frozen=True)
class Renewals:
    process: str
    kind: str        # 'producer' (an EventProducer) or 'telemetry' (a model's telemetry emitter)
    renewals: int
    last_at: str


def producer_renewals(store, hours: int = 24) -> list[Renewals]:
    rows = store.query_rows(SQL, {"metrics": list(METRICS), "hours": hours})
    return [Renewals(r["process"], "telemetry" if r["metric"] == METRICS[1] else "producer", int(r["renewals"]),
                     str(r["last_at"])) for r in rows]


def renewals_of(settings: Settings, hours: int = 24) -> list[Renewals]:
    from infra.clickhouse import connect

    with connect(settings) as store:
        return producer_renewals(store, hours)
