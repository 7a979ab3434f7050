-- Rejected candidates since {since}, newest first, with the failed checks.
SELECT
    event_time,
    model_name,
    model_version,
    stage,
    reason,
    champion_version,
    primary_metric,
    metric_value,
    champion_metric,
    arrayFilter((n, p) -> NOT p, checks.name, checks.passed) AS failed_checks,
    event_id
FROM deployment_rejections FINAL
WHERE ({model:String} = '' OR model_name = {model:String})
  AND event_time >= {since:DateTime64(6)}
ORDER BY event_time DESC
LIMIT {limit:UInt32}
