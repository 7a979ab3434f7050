-- Training runs, newest first, filtered by {model}, {dataset} and {status} ('' = any); one row per run,
-- its latest update. Trials of a search carry their search id and number.
SELECT
    run_id,
    argMax(status, event_time)          AS status,
    any(model_name)                     AS model_name,
    any(dataset_name)                   AS dataset_name,
    any(dataset_version)                AS dataset_version,
    min(event_time)                     AS started_at,
    max(event_time)                     AS updated_at,
    max(attempt)                        AS attempts,
    argMax(duration_s, event_time)      AS duration_s,
    argMax(metrics, event_time)         AS metrics,
    argMax(failure_reason, event_time)  AS failure_reason,
    any(search_id)                      AS search_id,
    any(trial_number)                   AS trial_number
FROM
(
    SELECT * FROM training_runs FINAL
    WHERE ({model:String} = '' OR model_name = {model:String})
      AND ({dataset:String} = '' OR dataset_name = {dataset:String})
)
GROUP BY run_id
HAVING {status:String} = '' OR status = {status:String}
ORDER BY updated_at DESC
LIMIT {limit:UInt32}
