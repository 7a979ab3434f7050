-- How often each prediction was served since {since} (rows, not requests), and its share, per model version.
SELECT
    model_name,
    model_version,
    prediction,
    count,
    count / sum(count) OVER (PARTITION BY model_name, model_version) AS share,
    avg_confidence
FROM
(
    SELECT
        model_name,
        model_version,
        sumMap(predictions)          AS dist,
        avgMerge(confidence_avg)     AS avg_confidence
    FROM rows_minute
    WHERE ({model:String} = '' OR model_name = {model:String})
      AND minute >= toStartOfMinute({since:DateTime64(6)})
    GROUP BY model_name, model_version
)
ARRAY JOIN mapKeys(dist) AS prediction, mapValues(dist) AS count
ORDER BY model_name, model_version, count DESC, prediction
