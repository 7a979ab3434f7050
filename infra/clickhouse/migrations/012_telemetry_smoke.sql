-- InferenceTelemetry v2's `smoke`: true for the deployer's smoke inference (the Triton request parameter
-- 'modelbus_smoke'), so SQL leaves those requests out of live-traffic counts without parsing request ids.
-- Rows written before v2 read as false, as old events do in Avro. The landing table gains the column and
-- its view passes it on (MODIFY QUERY replaces the view's SELECT in place: no insert is lost meanwhile).
ALTER TABLE $database.inference_telemetry ADD COLUMN IF NOT EXISTS smoke Bool DEFAULT false AFTER error;
ALTER TABLE $database.inference_telemetry_ingest ADD COLUMN IF NOT EXISTS smoke Bool DEFAULT false AFTER error;
ALTER TABLE $database.inference_telemetry_ingest_mv MODIFY QUERY
SELECT
    `header.event_id`         AS event_id,
    `header.event_time`       AS event_time,
    `header.producer`         AS producer,
    `header.correlation_id`   AS correlation_id,
    `header.parent_event_ids` AS parent_event_ids,
    request_id, model_name, model_version, received_at, completed_at, latency_us, stage_latency_us,
    batch_size, numeric_names, numeric_means, categorical_names, categorical_values,
    prediction, prediction_value, confidence, status, error, smoke,
    kafka_topic, kafka_partition, kafka_offset
FROM $database.inference_telemetry_ingest;
