-- Migration 007: what the telemetry path skipped or lost, so SQL sees it.
--
-- Kafka coordinates the telemetry sink dead-lettered instead of storing.
--
-- The sink resumes each partition after the record it handled last, looked up in ClickHouse (it never
-- trusts Kafka's committed offsets). A record it dead-lettered has no row in inference_telemetry, so
-- without this table a restart would read and dead-letter the same records again, and a partition whose
-- last records were poison would never advance its resume point. One row per skipped record, written
-- after its dead letter was acknowledged and before any later record of the same partition is stored.
CREATE TABLE IF NOT EXISTS $database.telemetry_sink_skipped
(
    kafka_topic      LowCardinality(String),
    kafka_partition  Int32,
    kafka_offset     Int64,
    reason           LowCardinality(String),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (kafka_topic, kafka_partition, kafka_offset);

-- Telemetry lost before it reached Kafka, per emitting process and minute (serving/telemetry_losses.py):
-- 'dropped' = not accepted or not queued (buffer full), 'failed' = queued but never acknowledged. The
-- emitters report them as ServerMetrics samples (server 'telemetry:<process>'), stored in server_metrics.
CREATE VIEW IF NOT EXISTS $database.telemetry_losses AS
SELECT
    toDateTime64(toUInt32OrZero(labels['minute']), 0, 'UTC')   AS minute,
    labels['process']                                          AS process,
    labels['model']                                            AS model_name,
    toUInt64(sumIf(value, name = 'modelbus_telemetry_dropped')) AS dropped,
    toUInt64(sumIf(value, name = 'modelbus_telemetry_failed'))  AS failed
FROM $database.server_metrics FINAL
WHERE startsWith(server, 'telemetry:')
GROUP BY minute, process, model_name;
