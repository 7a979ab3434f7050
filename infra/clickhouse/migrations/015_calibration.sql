-- Label-free quality estimates (CBPE, see trainer/calibration.py): each classifier's calibration maps
-- (ModelRegistered v3 `calibration`, fitted on its validation split) applied to its live rows. The maps are
-- piecewise linear (flat beyond the first and last knot), as trainer.calibration.apply computes them.
CREATE TABLE IF NOT EXISTS $database.model_calibration
(
    event_id        String,
    event_time      DateTime64(6, 'UTC'),
    model_name      String,
    model_version   Int32,
    confidence      Array(Float64),
    accuracy        Array(Float64),
    positive_score  Array(Float64),
    positive_rate   Array(Float64),
    n               Int64,
    inserted_at     DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, model_version, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

-- Per model version and hour served: rows, the expected accuracy (mean calibrated probability that the
-- predicted class is right) and, for two classes, the expected ROC-AUC (expected share of positive-negative
-- pairs the scores rank right, from the calibrated probability of class 1).
CREATE VIEW IF NOT EXISTS $database.v_estimated_quality AS
SELECT
    model_name, model_version, window_start, rows, estimated_accuracy,
    if(length(pp) > 0 AND pairs > 0,
       arraySum(arrayMap((q, below) -> q * below, pp,
                         arrayMap((c, q) -> c - (1 - q), arrayCumSum(arrayMap(q -> 1 - q, pp)), pp))) / pairs,
       NULL) AS estimated_roc_auc
FROM
(
    SELECT
        model_name, model_version, window_start, count() AS rows, avg(p_correct) AS estimated_accuracy,
        arrayMap(t -> t.2, arraySort(t -> t.1, groupArrayIf((s1, p1), p1 >= 0))) AS pp,
        arraySum(pp) * arraySum(arrayMap(q -> 1 - q, pp)) - arraySum(arrayMap(q -> q * (1 - q), pp)) AS pairs
    FROM
    (
        SELECT
            r.model_name AS model_name, r.model_version AS model_version,
            toDateTime64(toStartOfHour(r.event_time), 0, 'UTC') AS window_start,
            arrayMax(r.scores) AS top,
            arrayFirstIndex(e -> e >= top, c.confidence) AS i,
            multiIf(i = 1, c.accuracy[1], i = 0, c.accuracy[-1],
                    c.accuracy[i - 1] + (c.accuracy[i] - c.accuracy[i - 1]) * (top - c.confidence[i - 1])
                                        / (c.confidence[i] - c.confidence[i - 1])) AS p_correct,
            if(length(r.scores) = 2, r.scores[2], 0.) AS s1,
            arrayFirstIndex(e -> e >= s1, c.positive_score) AS j,
            if(length(r.scores) != 2 OR length(c.positive_score) = 0, -1.,
               multiIf(j = 1, c.positive_rate[1], j = 0, c.positive_rate[-1],
                       c.positive_rate[j - 1] + (c.positive_rate[j] - c.positive_rate[j - 1])
                                                * (s1 - c.positive_score[j - 1])
                                                / (c.positive_score[j] - c.positive_score[j - 1]))) AS p1
        FROM $database.inference_rows AS r FINAL
        INNER JOIN
        (
            SELECT * FROM $database.model_calibration FINAL ORDER BY event_time DESC LIMIT 1 BY model_name, model_version
        ) AS c ON c.model_name = r.model_name AND c.model_version = r.model_version
        WHERE NOT r.smoke AND length(r.scores) > 0 AND length(c.confidence) > 0
    )
    GROUP BY model_name, model_version, window_start
);

-- The estimate beside what the outcomes say, per window: how good the estimate was, once labels arrive.
CREATE VIEW IF NOT EXISTS $database.v_quality_estimate_vs_realised AS
SELECT e.model_name AS model_name, e.model_version AS model_version, e.window_start AS window_start,
       e.rows AS rows, coalesce(q.labelled, 0) AS labelled, e.estimated_accuracy AS estimated_accuracy,
       q.accuracy AS realised_accuracy, e.estimated_roc_auc AS estimated_roc_auc, q.roc_auc AS realised_roc_auc
FROM $database.v_estimated_quality AS e
LEFT JOIN $database.v_live_quality AS q
    ON q.model_name = e.model_name AND q.model_version = e.model_version AND q.window_start = e.window_start
SETTINGS join_use_nulls = 1;
