-- InferenceTelemetry v3's `rows`: every served row, so counts, the prediction distribution and drift are
-- over rows, not requests. The landing table takes the rows as Avro's flattened array-of-record columns
-- (`rows.index`, ...); a second view from it ARRAY JOINs them into inference_rows, in the same insert as the
-- request row, so the sink's exactly-once scheme (one block per batch, resume from the Kafka coordinates)
-- covers rows too, and a replayed copy collapses on (event_id, row_index). Requests stored before this
-- migration have no rows here (they kept only row 0, in inference_telemetry); drift and the row counts
-- start from the first v3 event.
ALTER TABLE $database.inference_telemetry_ingest
    ADD COLUMN IF NOT EXISTS `rows.index` Array(Int32),
    ADD COLUMN IF NOT EXISTS `rows.key` Array(Nullable(String)),
    ADD COLUMN IF NOT EXISTS `rows.prediction` Array(String),
    ADD COLUMN IF NOT EXISTS `rows.prediction_value` Array(Float64),
    ADD COLUMN IF NOT EXISTS `rows.confidence` Array(Float64),
    ADD COLUMN IF NOT EXISTS `rows.scores` Array(Array(Float64)),
    ADD COLUMN IF NOT EXISTS `rows.numeric` Array(Array(Float64)),
    ADD COLUMN IF NOT EXISTS `rows.categorical` Array(Array(String));

CREATE TABLE IF NOT EXISTS $database.inference_rows
(
    event_id            String,
    event_time          DateTime64(6, 'UTC'),
    request_id          String,
    row_index           Int32,
    prediction_id       String,                    -- '<request_id>:<row_index>', returned to the client
    row_key             Nullable(String),          -- the client's own key for the row, if it sent one
    model_name          LowCardinality(String),
    model_version       Int32,
    prediction          LowCardinality(String),
    prediction_value    Float64,
    confidence          Float64,
    scores              Array(Float64),            -- class probabilities in label order (classification)
    numeric_names       Array(LowCardinality(String)),
    numeric_values      Array(Float64),
    categorical_names   Array(LowCardinality(String)),
    categorical_values  Array(String),
    status              LowCardinality(String),
    smoke               Bool,
    kafka_topic         LowCardinality(String) DEFAULT '',
    kafka_partition     Int32 DEFAULT -1,
    kafka_offset        Int64 DEFAULT -1,
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model_name, model_version, event_time, event_id, row_index)
TTL toDateTime(event_time) + INTERVAL $telemetry_ttl_days DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $database.inference_rows_mv
TO $database.inference_rows AS
SELECT
    `header.event_id`           AS event_id,
    `header.event_time`         AS event_time,
    request_id,
    row_index,
    concat(request_id, ':', toString(row_index)) AS prediction_id,
    row_key,
    model_name,
    model_version,
    row_prediction              AS prediction,
    row_prediction_value        AS prediction_value,
    row_confidence              AS confidence,
    row_scores                  AS scores,
    numeric_names,
    row_numeric                 AS numeric_values,
    categorical_names,
    row_categorical             AS categorical_values,
    status,
    smoke,
    kafka_topic, kafka_partition, kafka_offset
FROM $database.inference_telemetry_ingest
ARRAY JOIN
    `rows.index`            AS row_index,
    `rows.key`              AS row_key,
    `rows.prediction`       AS row_prediction,
    `rows.prediction_value` AS row_prediction_value,
    `rows.confidence`       AS row_confidence,
    `rows.scores`           AS row_scores,
    `rows.numeric`          AS row_numeric,
    `rows.categorical`      AS row_categorical;

-- Rows per minute and their predictions, for the dashboards (the request-level telemetry_minute keeps
-- requests, errors and latency).
CREATE TABLE IF NOT EXISTS $database.rows_minute
(
    model_name      LowCardinality(String),
    model_version   Int32,
    minute          DateTime64(0, 'UTC'),
    rows            SimpleAggregateFunction(sum, UInt64),
    predictions     SimpleAggregateFunction(sumMap, Map(String, UInt64)),
    confidence_avg  AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_name, model_version, minute)
TTL toDateTime(minute) + INTERVAL $telemetry_ttl_days DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $database.rows_minute_mv
TO $database.rows_minute AS
SELECT
    model_name,
    model_version,
    toDateTime64(toStartOfMinute(event_time), 0, 'UTC') AS minute,
    count()                                          AS rows,
    sumMap(map(toString(prediction), toUInt64(1)))   AS predictions,
    avgState(confidence)                             AS confidence_avg
FROM $database.inference_rows
WHERE NOT smoke
GROUP BY model_name, model_version, minute;
