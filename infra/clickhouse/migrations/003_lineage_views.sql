-- Lineage in SQL: from a serving model back to the data it learned from, and forward again.
--
-- A (dataset name, version) may be pushed more than once (same content, new DatasetCreated
-- event); the upstream event of a model is the one its ModelRegistered names as a parent, else
-- the one in the same causal chain (correlation_id), else the first.

CREATE VIEW IF NOT EXISTS $database.v_model_lineage AS
SELECT * EXCEPT (upstream_rank)
FROM
(
    SELECT
        d.model_name                AS model_name,
        d.model_version             AS model_version,
        d.event_id                  AS deployment_event_id,
        d.event_time                AS deployed_at,
        d.action                    AS deploy_action,
        m.event_id                  AS model_event_id,
        m.event_time                AS registered_at,
        m.artifact_uri              AS artifact_uri,
        m.checksum                  AS checksum,
        m.primary_metric            AS primary_metric,
        m.metrics                   AS model_metrics,
        m.run_id                    AS run_id,
        r.run_status                AS run_status,
        r.run_attempts              AS run_attempts,
        if(r.params_json != '', r.params_json, m.params_json) AS params_json,
        if(r.code_version != '', r.code_version, m.code_version) AS code_version,
        r.environment               AS environment,
        r.run_metrics               AS run_metrics,
        m.dataset_name              AS dataset_name,
        m.dataset_version           AS dataset_version,
        ds.event_id                 AS dataset_event_id,
        ds.event_time               AS dataset_created_at,
        ds.uri                      AS dataset_uri,
        ds.checksum                 AS dataset_checksum,
        ds.row_count                AS dataset_rows,
        m.correlation_id            AS correlation_id,
        (has(m.parent_event_ids, ds.event_id), ds.correlation_id = m.correlation_id) AS upstream_rank
    FROM (SELECT * FROM $database.deployments FINAL) AS d
    LEFT JOIN
    (
        SELECT * FROM $database.models FINAL ORDER BY event_time LIMIT 1 BY model_name, model_version
    ) AS m ON m.model_name = d.model_name AND m.model_version = d.model_version
    LEFT JOIN
    (
        SELECT
            run_id,
            argMax(status, event_time)       AS run_status,
            max(attempt)                     AS run_attempts,
            argMax(params_json, event_time)  AS params_json,
            argMax(code_version, event_time) AS code_version,
            argMax(environment, event_time)  AS environment,
            argMax(metrics, event_time)      AS run_metrics
        FROM $database.training_runs FINAL
        GROUP BY run_id
    ) AS r ON r.run_id = m.run_id
    LEFT JOIN (SELECT * FROM $database.datasets FINAL) AS ds
        ON ds.name = m.dataset_name AND ds.version = m.dataset_version
    ORDER BY upstream_rank DESC, dataset_created_at ASC
    LIMIT 1 BY deployment_event_id
);

CREATE VIEW IF NOT EXISTS $database.v_dataset_models AS
SELECT
    ds.name                     AS dataset_name,
    ds.version                  AS dataset_version,
    ds.event_id                 AS dataset_event_id,
    ds.event_time               AS dataset_created_at,
    m.model_name                AS model_name,
    m.model_version             AS model_version,
    m.run_id                    AS run_id,
    m.event_id                  AS model_event_id,
    m.event_time                AS registered_at,
    m.primary_metric            AS primary_metric,
    m.metrics[m.primary_metric] AS primary_metric_value,
    dep.deployments > 0         AS deployed,
    dep.deployments             AS deployments,
    dep.last_deployed_at        AS last_deployed_at
FROM (SELECT * FROM $database.datasets FINAL ORDER BY event_time LIMIT 1 BY name, version) AS ds
INNER JOIN
(
    SELECT * FROM $database.models FINAL ORDER BY event_time LIMIT 1 BY model_name, model_version
) AS m ON m.dataset_name = ds.name AND m.dataset_version = ds.version
LEFT JOIN
(
    SELECT model_name, model_version, count() AS deployments, max(event_time) AS last_deployed_at
    FROM $database.deployments FINAL
    GROUP BY model_name, model_version
) AS dep ON dep.model_name = m.model_name AND dep.model_version = m.model_version;
