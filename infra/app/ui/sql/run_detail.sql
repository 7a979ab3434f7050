-- The runs in {ids}, side by side: latest update of each, with the model it registered (if any) for its
-- baselines and slices.
SELECT
    r.run_id                    AS run_id,
    r.status                    AS status,
    r.model_name                AS model_name,
    r.dataset_name              AS dataset_name,
    r.dataset_version           AS dataset_version,
    r.params_json               AS params_json,
    r.seed                      AS seed,
    r.code_version              AS code_version,
    r.metrics                   AS metrics,
    r.duration_s                AS duration_s,
    r.failure_reason            AS failure_reason,
    m.model_version             AS model_version,
    m.primary_metric            AS primary_metric,
    m.metrics                   AS model_metrics,
    m.baseline_metrics          AS baseline_metrics,
    m.slice_metrics.column      AS slice_columns,
    m.slice_metrics.value       AS slice_values,
    m.slice_metrics.count       AS slice_counts,
    m.slice_metrics.metrics     AS slice_metrics
FROM
(
    SELECT * FROM training_runs FINAL WHERE has({ids:Array(String)}, run_id)
    ORDER BY event_time DESC LIMIT 1 BY run_id
) AS r
LEFT JOIN
(
    SELECT * FROM models FINAL WHERE has({ids:Array(String)}, run_id)
    ORDER BY event_time LIMIT 1 BY run_id
) AS m ON m.run_id = r.run_id
ORDER BY indexOf({ids:Array(String)}, run_id)
SETTINGS join_use_nulls = 1
