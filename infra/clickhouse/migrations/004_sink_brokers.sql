-- Which Kafka cluster the telemetry sink's stored offsets belong to.
--
-- The sink resumes each partition from the kafka_offset it stored last in inference_telemetry. Those
-- offsets only mean something on the cluster that assigned them: the embedded broker keeps its topics in
-- memory and starts with a new cluster id every time, so after a restart the stored offsets point past the
-- end of the new, empty partitions (and tansu never answers OFFSET_OUT_OF_RANGE, so auto.offset.reset does
-- not step in). One row per switch of cluster: rows inserted before the current cluster's `since` are not
-- used to resume. The first cluster ever seen adopts every row already stored (since = epoch).
CREATE TABLE IF NOT EXISTS $database.telemetry_sink_brokers
(
    topic       String,
    cluster_id  String,
    since       DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, since);
