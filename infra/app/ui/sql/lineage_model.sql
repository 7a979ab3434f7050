-- One model version's upstream: the dataset version and the DatasetCreated event that made it, and the run.
SELECT
    m.model_name            AS model_name,
    m.model_version         AS model_version,
    m.event_id              AS model_event_id,
    m.event_time            AS registered_at,
    m.artifact_uri          AS artifact_uri,
    m.checksum              AS checksum,
    m.primary_metric        AS primary_metric,
    m.metrics[m.primary_metric] AS metric_value,
    m.code_version          AS code_version,
    m.run_id                AS run_id,
    m.dataset_name          AS dataset_name,
    m.dataset_version       AS dataset_version,
    m.correlation_id        AS correlation_id,
    ds.event_id             AS dataset_event_id,
    ds.event_time           AS dataset_created_at,
    ds.producer             AS dataset_producer,
    ds.uri                  AS dataset_uri,
    ds.row_count            AS dataset_rows,
    ds.checksum             AS dataset_checksum,
    run.status              AS run_status,
    run.duration_s          AS run_duration_s,
    run.seed                AS run_seed
FROM (SELECT * FROM models FINAL
      WHERE model_name = {model:String} AND model_version = {version:Int32}
      ORDER BY event_time LIMIT 1) AS m
LEFT JOIN (SELECT * FROM datasets FINAL ORDER BY event_time LIMIT 1 BY name, version) AS ds
    ON ds.name = m.dataset_name AND ds.version = m.dataset_version
LEFT JOIN (SELECT * FROM training_runs FINAL ORDER BY event_time DESC LIMIT 1 BY run_id) AS run
    ON run.run_id = m.run_id
SETTINGS join_use_nulls = 1
