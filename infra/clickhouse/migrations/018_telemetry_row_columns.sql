-- InferenceTelemetry v4 carries a request's rows as columns (`row_predictions`, ...: one array per field,
-- one value per row) instead of v3's array of row records, which cost the serving thread several times more
-- to encode. The landing table takes both shapes: a v3 event fills `rows.*` (its view, 013, ARRAY JOINs
-- them) and leaves the row_* columns empty; a v4 event the reverse, and this view ARRAY JOINs over its row
-- positions. So either writer lands each row once, in the same insert as its request row, under the same
-- exactly-once scheme. A row's scores are the k consecutive items of `row_probabilities` from (i - 1) * k, with
-- k = length(row_probabilities) / length(row_predictions); its inputs are the i-th item of each input's column.
-- The new columns are named apart from 013's ARRAY JOIN aliases (row_scores, row_numeric, ...): a column of
-- the landing table with an alias's name would take its place in that view.
ALTER TABLE $database.inference_telemetry_ingest
    ADD COLUMN IF NOT EXISTS row_keys Array(String),
    ADD COLUMN IF NOT EXISTS row_predictions Array(String),
    ADD COLUMN IF NOT EXISTS row_values Array(Float64),
    ADD COLUMN IF NOT EXISTS row_confidences Array(Float64),
    ADD COLUMN IF NOT EXISTS row_probabilities Array(Float64),
    ADD COLUMN IF NOT EXISTS row_numeric_values Array(Array(Float64)),
    ADD COLUMN IF NOT EXISTS row_categorical_values Array(Array(String));

CREATE MATERIALIZED VIEW IF NOT EXISTS $database.inference_rows_columns_mv
TO $database.inference_rows AS
-- greatest(..., 1): ClickHouse evaluates k for a request without rows too (a failed one), before ARRAY JOIN
WITH intDiv(length(row_probabilities), greatest(length(row_predictions), 1)) AS k
SELECT
    `header.event_id`           AS event_id,
    `header.event_time`         AS event_time,
    request_id,
    toInt32(i - 1)              AS row_index,
    concat(request_id, ':', toString(i - 1)) AS prediction_id,
    if(empty(row_keys), NULL, row_keys[i]) AS row_key,
    model_name,
    model_version,
    row_predictions[i]          AS prediction,
    row_values[i]               AS prediction_value,
    row_confidences[i]          AS confidence,
    arraySlice(row_probabilities, (i - 1) * k + 1, k) AS scores,
    numeric_names,
    arrayMap(c -> c[i], row_numeric_values)     AS numeric_values,
    categorical_names,
    arrayMap(c -> c[i], row_categorical_values) AS categorical_values,
    status,
    smoke,
    kafka_topic, kafka_partition, kafka_offset
FROM $database.inference_telemetry_ingest
ARRAY JOIN arrayEnumerate(row_predictions) AS i;
