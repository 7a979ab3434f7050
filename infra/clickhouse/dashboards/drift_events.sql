-- Drift detected since {since}, newest first.
SELECT
    event_time,
    model_name,
    model_version,
    feature,
    test,
    psi,
    statistic,
    p_value,
    sample_size,
    window_start,
    window_end,
    action,
    event_id
FROM drift_events FINAL
WHERE ({model:String} = '' OR model_name = {model:String})
  AND event_time >= {since:DateTime64(6)}
ORDER BY event_time DESC
LIMIT {limit:UInt32}
