-- Outcomes (OutcomeObserved): the true label or value of a served row, joined to that row exactly once.
--
-- * outcomes: every valid report, one row per (model, ref) where ref is 'id:<prediction_id>' or
--   'key:<row_key>'. ReplacingMergeTree(observed_at): of several reports for one prediction the latest
--   observation wins (equal times: the later insert); a redelivered or repeated report collapses into it.
-- * labelled_rows: the join, written by the outcome sink as it stores each report: the served row's
--   prediction, scores, confidence and inputs beside the outcome. Keyed like outcomes, so it holds one row
--   per labelled prediction, its latest outcome. A late outcome lands in the window its prediction was
--   served in, so that window's metric changes.
-- * outcome_orphans: reports whose prediction is unknown (never served, expired past the telemetry TTL,
--   or not stored yet); the sink re-checks the unresolved ones and moves those it finds into
--   labelled_rows (resolved = true). Nothing is dropped silently: they are counted per reason.
ALTER TABLE $database.inference_rows
    ADD INDEX IF NOT EXISTS prediction_id_bf prediction_id TYPE bloom_filter(0.01) GRANULARITY 1,
    ADD INDEX IF NOT EXISTS row_key_bf row_key TYPE bloom_filter(0.01) GRANULARITY 1;

CREATE TABLE IF NOT EXISTS $database.outcomes
(
    event_id        String,
    event_time      DateTime64(6, 'UTC'),
    producer        LowCardinality(String),
    model_name      LowCardinality(String),
    ref             String,
    prediction_id   Nullable(String),
    row_key         Nullable(String),
    label           Nullable(String),
    value           Nullable(Float64),
    observed_at     DateTime64(6, 'UTC'),
    source          String,
    batch_id        String DEFAULT '',        -- the outcome sink's write batch, which its join then reads
    inserted_at     DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(observed_at)
ORDER BY (model_name, ref)
TTL toDateTime(observed_at) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.labelled_rows
(
    model_name          LowCardinality(String),
    model_version       Int32,
    ref                 String,
    prediction_id       String,
    row_key             Nullable(String),
    served_at           DateTime64(6, 'UTC'),
    observed_at         DateTime64(6, 'UTC'),
    label_delay_s       Float64,
    task                LowCardinality(String),
    prediction          String,
    predicted_index     Int32,               -- class index predicted (classification), -1 otherwise
    prediction_value    Float64,
    confidence          Float64,
    scores              Array(Float64),
    label               Nullable(String),
    label_index         Int32,               -- index of the true class in the model's labels, -1 otherwise
    value               Nullable(Float64),
    categorical_names   Array(LowCardinality(String)),
    categorical_values  Array(String),
    outcome_event_id    String,
    inserted_at         DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(observed_at)
ORDER BY (model_name, ref)
TTL toDateTime(served_at) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.outcome_orphans
(
    model_name          LowCardinality(String),
    ref                 String,
    prediction_id       Nullable(String),
    row_key             Nullable(String),
    label               Nullable(String),
    value               Nullable(Float64),
    observed_at         DateTime64(6, 'UTC'),
    source              String,
    reason              LowCardinality(String),   -- 'unknown prediction' | 'unknown model'
    resolved            Bool,
    outcome_event_id    String,
    updated_at          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (model_name, ref)
TTL toDateTime(observed_at) + INTERVAL $metadata_ttl_days DAY;

-- Live quality per model version and hour the predictions were served in. Classification: accuracy,
-- macro-F1 (over the classes present), ROC-AUC (one-vs-rest, macro over classes with both outcomes;
-- the usual AUC for two classes), log-loss (probabilities floored at 1e-15) and the expected calibration
-- error over 10 equal-width confidence bins. Regression: RMSE and MAE.
CREATE VIEW IF NOT EXISTS $database.v_live_quality AS
SELECT
    model_name, model_version, window_start, kind AS task, labelled,
    if(kind != 'regression', arrayAvg(arrayMap((p, l) -> toFloat64(p = l), pi, li)), NULL) AS accuracy,
    if(kind != 'regression', arrayAvg(arrayMap(k -> 2 * arrayCount((p, l) -> p = k AND l = k, pi, li)
            / (2 * arrayCount((p, l) -> p = k AND l = k, pi, li) + arrayCount((p, l) -> p = k AND l != k, pi, li)
               + arrayCount((p, l) -> p != k AND l = k, pi, li)),
        arrayFilter(k -> has(pi, k) OR has(li, k), range(n_classes)))), NULL) AS macro_f1,
    if(kind != 'regression' AND length(aucs) > 0, arrayAvg(aucs), NULL) AS roc_auc,
    if(kind != 'regression' AND length(ls) > 0, -arrayAvg(ls), NULL) AS log_loss,
    if(kind != 'regression', arraySum(arrayMap(b ->
        abs(arraySum(arrayMap((c, p, l) -> toFloat64(least(toUInt32(c * 10), 9) = b AND p = l), conf, pi, li))
            - arraySum(arrayMap(c -> if(least(toUInt32(c * 10), 9) = b, c, 0.), conf))), range(10))) / labelled,
       NULL) AS calibration_error,
    if(kind = 'regression', sqrt(arrayAvg(arrayMap((p, v) -> (p - v) * (p - v), pv, vals))), NULL) AS rmse,
    if(kind = 'regression', arrayAvg(arrayMap((p, v) -> abs(p - v), pv, vals)), NULL) AS mae
FROM
(
    SELECT
        model_name, model_version, toDateTime64(toStartOfHour(served_at), 0, 'UTC') AS window_start, any(task) AS kind,
        count() AS labelled,
        groupArray(predicted_index) AS pi,
        groupArray(label_index) AS li,
        groupArray(confidence) AS conf,
        groupArray(prediction_value) AS pv,
        groupArray(assumeNotNull(value)) AS vals,
        max(length(scores)) AS n_classes,
        groupArrayIf(scores, length(scores) > 0) AS sc,
        groupArrayIf(label_index, length(scores) > 0) AS sli,
        groupArrayIf(log(greatest(scores[label_index + 1], 1e-15)),
                     label_index >= 0 AND length(scores) > label_index) AS ls,
        arrayFilter(a -> isFinite(a), arrayMap(k -> if(has(sli, k) AND arrayExists(l -> l != k, sli),
            arrayAUC(arrayMap(s -> s[k + 1], sc), arrayMap(l -> l = k, sli)), nan), range(n_classes))) AS aucs
    FROM $database.labelled_rows FINAL
    GROUP BY model_name, model_version, window_start
);

-- The same per input slice (each categorical input's value), over all windows.
CREATE VIEW IF NOT EXISTS $database.v_live_quality_slices AS
SELECT
    model_name, model_version, slice_column, slice_value, any(task) AS kind, count() AS labelled,
    if(kind != 'regression', avg(predicted_index = label_index), NULL) AS accuracy,
    if(kind = 'regression', sqrt(avg(pow(prediction_value - assumeNotNull(value), 2))), NULL) AS rmse,
    if(kind = 'regression', avg(abs(prediction_value - assumeNotNull(value))), NULL) AS mae
FROM $database.labelled_rows FINAL
ARRAY JOIN categorical_names AS slice_column, categorical_values AS slice_value
GROUP BY model_name, model_version, slice_column, slice_value;

-- Label coverage: served rows per model version and hour, and how many of them have an outcome.
CREATE VIEW IF NOT EXISTS $database.v_label_coverage AS
SELECT s.model_name AS model_name, s.model_version AS model_version, s.window_start AS window_start,
       s.rows AS rows, coalesce(l.labelled, 0) AS labelled, coalesce(l.labelled, 0) / s.rows AS coverage
FROM
(
    SELECT model_name, model_version, toDateTime64(toStartOfHour(minute), 0, 'UTC') AS window_start, sum(rows) AS rows
    FROM $database.rows_minute
    GROUP BY model_name, model_version, window_start
) AS s
LEFT JOIN
(
    SELECT model_name, model_version, toDateTime64(toStartOfHour(served_at), 0, 'UTC') AS window_start, count() AS labelled
    FROM $database.labelled_rows FINAL
    GROUP BY model_name, model_version, window_start
) AS l ON l.model_name = s.model_name AND l.model_version = s.model_version AND l.window_start = s.window_start
SETTINGS join_use_nulls = 1;

-- How late outcomes arrive (seconds from serving to observation), per model version.
CREATE VIEW IF NOT EXISTS $database.v_label_delay AS
SELECT model_name, model_version, count() AS labelled, min(label_delay_s) AS min_s,
       quantile(0.5)(label_delay_s) AS p50_s, quantile(0.9)(label_delay_s) AS p90_s,
       quantile(0.99)(label_delay_s) AS p99_s, max(label_delay_s) AS max_s
FROM $database.labelled_rows FINAL
GROUP BY model_name, model_version;

-- Outcomes still without their prediction, per model and reason.
CREATE VIEW IF NOT EXISTS $database.v_outcome_orphans AS
SELECT model_name, reason, count() AS outcomes, min(observed_at) AS oldest, max(observed_at) AS newest
FROM $database.outcome_orphans FINAL
WHERE NOT resolved
GROUP BY model_name, reason;
