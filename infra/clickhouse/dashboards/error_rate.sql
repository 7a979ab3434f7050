-- Failed requests and their share per minute for each model version.
SELECT
    minute,
    model_name,
    model_version,
    sum(requests)                              AS requests,
    sum(errors)                                AS errors,
    if(requests = 0, 0, errors / requests)     AS error_rate
FROM telemetry_minute
WHERE ({model:String} = '' OR model_name = {model:String})
  AND minute >= toStartOfMinute({since:DateTime64(6)})
GROUP BY minute, model_name, model_version
ORDER BY minute, model_name, model_version
