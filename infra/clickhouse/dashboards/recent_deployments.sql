-- Deployments since {since}, newest first, with the gate's numbers.
SELECT
    event_time,
    model_name,
    model_version,
    previous_version,
    action,
    primary_metric,
    metric_value,
    champion_metric,
    run_id,
    dataset_version,
    event_id
FROM deployments FINAL
WHERE ({model:String} = '' OR model_name = {model:String})
  AND event_time >= {since:DateTime64(6)}
ORDER BY event_time DESC
LIMIT {limit:UInt32}
