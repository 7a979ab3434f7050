-- Every registered version of {model} ('' = every model) with its gate decision and deployment state.
-- state: 'serving' (the version of the model's latest deployment event), 'rejected' (the gate refused it),
-- 'retired' (served before, replaced since) or 'awaiting gate' (registered, no decision yet).
SELECT
    m.model_name                     AS model_name,
    m.model_version                  AS model_version,
    multiIf(s.serving_version = m.model_version, 'serving',
            r.rejected_at IS NOT NULL, 'rejected',
            d.last_deployed_at IS NOT NULL, 'retired',
            'awaiting gate')         AS state,
    m.event_time                     AS registered_at,
    m.task                           AS task,
    m.primary_metric                 AS primary_metric,
    m.metrics[m.primary_metric]      AS metric_value,
    m.run_id                         AS run_id,
    m.dataset_name                   AS dataset_name,
    m.dataset_version                AS dataset_version,
    d.last_action                    AS last_action,
    d.last_deployed_at               AS last_deployed_at,
    r.rejected_at                    AS rejected_at,
    r.stage                          AS rejected_stage,
    r.reason                         AS rejection_reason,
    if(r.rejected_at IS NOT NULL, r.check_names, d.check_names)    AS check_names,
    if(r.rejected_at IS NOT NULL, r.check_passed, d.check_passed)  AS check_passed,
    if(r.rejected_at IS NOT NULL, r.check_detail, d.check_detail)  AS check_detail
FROM (SELECT * FROM models FINAL ORDER BY event_time LIMIT 1 BY model_name, model_version) AS m
LEFT JOIN
(
    SELECT model_name, model_version, argMax(action, event_time) AS last_action,
           max(event_time) AS last_deployed_at,
           argMax(checks.name, event_time) AS check_names, argMax(checks.passed, event_time) AS check_passed,
           argMax(checks.detail, event_time) AS check_detail
    FROM deployments FINAL
    GROUP BY model_name, model_version
) AS d ON d.model_name = m.model_name AND d.model_version = m.model_version
LEFT JOIN
(
    SELECT model_name, argMax(model_version, event_time) AS serving_version
    FROM deployments FINAL
    GROUP BY model_name
) AS s ON s.model_name = m.model_name
LEFT JOIN
(
    SELECT model_name, model_version, max(event_time) AS rejected_at, argMax(stage, event_time) AS stage,
           argMax(reason, event_time) AS reason,
           argMax(checks.name, event_time) AS check_names, argMax(checks.passed, event_time) AS check_passed,
           argMax(checks.detail, event_time) AS check_detail
    FROM deployment_rejections FINAL
    GROUP BY model_name, model_version
) AS r ON r.model_name = m.model_name AND r.model_version = m.model_version
WHERE ({model:String} = '' OR m.model_name = {model:String})
ORDER BY model_name, model_version DESC
LIMIT {limit:UInt32}
SETTINGS join_use_nulls = 1
