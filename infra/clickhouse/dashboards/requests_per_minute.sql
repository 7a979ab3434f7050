-- Requests (and rows) per minute for each model version since {since}; {model} '' means every model.
SELECT
    minute,
    model_name,
    model_version,
    sum(requests) AS requests,
    sum(rows)     AS rows
FROM telemetry_minute
WHERE ({model:String} = '' OR model_name = {model:String})
  AND minute >= toStartOfMinute({since:DateTime64(6)})
GROUP BY minute, model_name, model_version
ORDER BY minute, model_name, model_version
