-- Inference telemetry: raw rows, the Avro landing table, per-model per-minute aggregates.
--
-- Why nothing is ever counted twice:
-- * Raw rows: inference_telemetry is a ReplacingMergeTree whose sorting key ends in event_id and
--   holds only values fixed by the event itself, so every copy of one event has the same key and
--   collapses on merge. Until a merge happens copies may coexist, so raw queries read it with
--   FINAL (or count uniqExact(event_id)); the dashboard queries do.
-- * Aggregates: materialized views see each inserted block once, so they must only ever receive
--   an event once. The telemetry sink guarantees that: it stores kafka_topic/partition/offset with
--   every row, inserts each batch as ONE block (one insert, one part: all or nothing), and on
--   every partition assignment resumes at max(kafka_offset) + 1 read back from this table, so a
--   crash between insert and Kafka commit never replays stored messages. Kafka's idempotent
--   producer keeps the broker from storing a retried send twice.
-- * Aggregate reads: AggregatingMergeTree keeps partial rows per key until merged, so readers
--   always GROUP BY and use sum()/-Merge combinators, never read single rows as totals.

CREATE TABLE IF NOT EXISTS $database.inference_telemetry
(
    event_id            String,
    event_time          DateTime64(6, 'UTC'),
    producer            LowCardinality(String),
    correlation_id      String,
    parent_event_ids    Array(String),
    request_id          String,
    model_name          LowCardinality(String),
    model_version       Int32,
    received_at         DateTime64(6, 'UTC'),
    completed_at        DateTime64(6, 'UTC'),
    latency_us          Int64,
    stage_latency_us    Map(LowCardinality(String), Int64),
    batch_size          Int32,
    numeric_names       Array(LowCardinality(String)),
    numeric_means       Array(Float64),
    categorical_names   Array(LowCardinality(String)),
    categorical_values  Array(String),
    prediction          LowCardinality(String),
    prediction_value    Float64,
    confidence          Float64,
    status              LowCardinality(String),
    error               Nullable(String),
    kafka_topic         LowCardinality(String) DEFAULT '',
    kafka_partition     Int32 DEFAULT -1,
    kafka_offset        Int64 DEFAULT -1,
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model_name, model_version, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL $telemetry_ttl_days DAY;

-- Where the sink inserts Avro object containers untouched: field names are the Avro schema's
-- (nested header fields as `header.x`), plus the three kafka_* fields the sink appends to each
-- record. Null engine: nothing is stored here, the view below moves rows into inference_telemetry.
CREATE TABLE IF NOT EXISTS $database.inference_telemetry_ingest
(
    `header.event_id`         String,
    `header.event_time`       DateTime64(6, 'UTC'),
    `header.producer`         String,
    `header.correlation_id`   String,
    `header.parent_event_ids` Array(String),
    request_id          String,
    model_name          String,
    model_version       Int32,
    received_at         DateTime64(6, 'UTC'),
    completed_at        DateTime64(6, 'UTC'),
    latency_us          Int64,
    stage_latency_us    Map(String, Int64),
    batch_size          Int32,
    numeric_names       Array(String),
    numeric_means       Array(Float64),
    categorical_names   Array(String),
    categorical_values  Array(String),
    prediction          String,
    prediction_value    Float64,
    confidence          Float64,
    status              String,
    error               Nullable(String),
    kafka_topic         String,
    kafka_partition     Int32,
    kafka_offset        Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS $database.inference_telemetry_ingest_mv
TO $database.inference_telemetry AS
SELECT
    `header.event_id`         AS event_id,
    `header.event_time`       AS event_time,
    `header.producer`         AS producer,
    `header.correlation_id`   AS correlation_id,
    `header.parent_event_ids` AS parent_event_ids,
    request_id, model_name, model_version, received_at, completed_at, latency_us, stage_latency_us,
    batch_size, numeric_names, numeric_means, categorical_names, categorical_values,
    prediction, prediction_value, confidence, status, error,
    kafka_topic, kafka_partition, kafka_offset
FROM $database.inference_telemetry_ingest;

CREATE TABLE IF NOT EXISTS $database.telemetry_minute
(
    model_name      LowCardinality(String),
    model_version   Int32,
    minute          DateTime64(0, 'UTC'),
    requests        SimpleAggregateFunction(sum, UInt64),
    errors          SimpleAggregateFunction(sum, UInt64),
    rows            SimpleAggregateFunction(sum, UInt64),
    latency_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Int64),
    latency_max_us  SimpleAggregateFunction(max, Int64),
    confidence_avg  AggregateFunction(avg, Float64),
    predictions     SimpleAggregateFunction(sumMap, Map(String, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_name, model_version, minute)
TTL toDateTime(minute) + INTERVAL $telemetry_ttl_days DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $database.telemetry_minute_mv
TO $database.telemetry_minute AS
SELECT
    model_name,
    model_version,
    toDateTime64(toStartOfMinute(event_time), 0, 'UTC') AS minute,
    count()                                      AS requests,
    countIf(status != 'ok')                      AS errors,
    sum(toUInt64(batch_size))                    AS rows,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_us) AS latency_q,
    max(latency_us)                              AS latency_max_us,
    avgState(confidence)                         AS confidence_avg,
    sumMap(map(toString(prediction), toUInt64(1))) AS predictions
FROM $database.inference_telemetry
GROUP BY model_name, model_version, minute;
