-- Server-side latency percentiles (microseconds) per minute for each model version.
SELECT
    minute,
    model_name,
    model_version,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_q) AS q,
    q[1]                                       AS p50_us,
    q[2]                                       AS p95_us,
    q[3]                                       AS p99_us,
    max(latency_max_us)                        AS max_us
FROM telemetry_minute
WHERE ({model:String} = '' OR model_name = {model:String})
  AND minute >= toStartOfMinute({since:DateTime64(6)})
GROUP BY minute, model_name, model_version
ORDER BY minute, model_name, model_version
