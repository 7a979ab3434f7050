-- The gate's decisions on one model version, in order: deployments (promote, rollback, reconcile) and rejections.
SELECT event_time, event_id, 'deployed' AS decision, action AS detail, checks.name AS check_names,
       checks.passed AS check_passed, metric_value, champion_metric
FROM deployments FINAL
WHERE model_name = {model:String} AND model_version = {version:Int32}
UNION ALL
SELECT event_time, event_id, 'rejected' AS decision, concat(stage, ': ', reason) AS detail, checks.name,
       checks.passed, metric_value, champion_metric
FROM deployment_rejections FINAL
WHERE model_name = {model:String} AND model_version = {version:Int32}
ORDER BY event_time
