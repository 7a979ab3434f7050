-- Live quality per model version and hour since {since}: the estimate from confidences beside what the
-- outcomes say ('' model = every model).
SELECT window_start, model_name, model_version, rows, labelled, estimated_accuracy, realised_accuracy,
       estimated_roc_auc, realised_roc_auc
FROM v_quality_estimate_vs_realised
WHERE ({model:String} = '' OR model_name = {model:String})
  AND window_start >= toStartOfHour({since:DateTime64(6)})
ORDER BY window_start, model_name, model_version
