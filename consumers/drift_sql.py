"""The drift statistics, computed inside ClickHouse next to the telemetry.

Live traffic never leaves the engine: each query bins one window of
``inference_rows`` (every served row) with the reference bins registered with the model
(``column_stats`` rows of owner_kind 'model', written from
``ModelRegistered.reference_stats``) and returns one row per (model, version,
feature) with the bin counts, PSI and the test statistic. Only the p-values are
finished in Python (scipy), from the statistic and sample sizes the SQL returns.

Numeric features (and the '__prediction__' of regression models):

* bins are the reference's quantile edges with the first and last bin open
  ended, so live values outside the training range land in the edge bins
  (``arrayFirstIndex(e -> e > v, edges)`` is ``width_bucket`` on those edges);
* PSI = sum((live% - ref%) * ln(live% / ref%)) over the bins, each share
  floored at ``eps`` so an empty bin stays finite;
* KS is computed from the binned CDFs: D = max |F_ref(e) - F_live(e)| over the
  reference edges. The reference is only known as a histogram, so this is the
  grouped-data KS statistic (never larger than the continuous one, so the
  p-value from the two-sample Kolmogorov distribution is conservative). We do
  not use ClickHouse's ``kolmogorovSmirnovTest`` against a sample regenerated
  from the histogram: points spread uniformly inside each bin would make any
  within-bin shape difference look like drift once samples are large.

Categorical features (and the '__prediction__' of classifiers):

* buckets are the reference's top categories plus 'other' (reference count
  minus the listed ones; live values not listed);
* PSI as above over the buckets;
* chi-squared test of homogeneity of the 2 x buckets table (reference counts,
  live counts), buckets empty on both sides dropped: the reference is a sample
  too, and a live category absent from the reference stays finite.

Each live row is one request (its numeric value is the request's mean, its
categorical value the first row's), so sample sizes count requests.
"""

from __future__ import annotations

OTHER = "__other__"
PREDICTION = "__prediction__"

# Served rows of the window (every row of a batch, InferenceTelemetry v3); FINAL collapses redelivered copies.
_WINDOW = """
        FROM inference_rows FINAL
        WHERE event_time >= {window_start:DateTime64(6)} AND event_time < {window_end:DateTime64(6)}
          AND status = 'ok'"""

# Newest reference per (model, version, column) of the given kind.
_REFERENCE = """
    SELECT owner_name AS model_name, toInt32OrZero(owner_version) AS model_version, column AS feature,
           event_id AS ref_event_id, count AS ref_count, bin_edges, bin_counts, categories, category_counts
    FROM column_stats FINAL
    WHERE owner_kind = 'model' AND kind = '{kind}' AND toInt32OrNull(owner_version) IS NOT NULL
    ORDER BY event_time DESC
    LIMIT 1 BY owner_name, owner_version, column"""

# PSI over the bins/buckets, each share floored at {eps} (p_ref, p_live: the two distributions as shares).
_PSI = """arraySum(arrayMap((a, b) -> (greatest(b, {eps:Float64}) - greatest(a, {eps:Float64}))
                                * log(greatest(b, {eps:Float64}) / greatest(a, {eps:Float64})), p_ref, p_live))"""

NUMERIC_SQL = f"""
WITH
    reference AS ({_REFERENCE.format(kind="numeric")}),
    live_rows AS (
        SELECT model_name, model_version, name AS feature, value
        FROM (
            SELECT model_name, model_version,
                   arrayPushBack(CAST(numeric_names, 'Array(String)'), '{PREDICTION}') AS names,
                   arrayPushBack(numeric_values, prediction_value) AS vals{_WINDOW}
              AND length(numeric_names) = length(numeric_values)
        )
        ARRAY JOIN names AS name, vals AS value
        WHERE isFinite(value)
    ),
    binned AS (
        SELECT l.model_name AS model_name, l.model_version AS model_version, l.feature AS feature,
               r.ref_event_id AS ref_event_id, r.bin_edges AS edges, r.bin_counts AS ref_counts,
               arrayFirstIndex(e -> e > l.value, r.bin_edges) AS above,
               least(length(r.bin_counts), greatest(1, if(above = 0, length(r.bin_edges), above) - 1)) AS bin
        FROM live_rows AS l
        INNER JOIN (
            SELECT * FROM reference
            WHERE length(bin_counts) > 0 AND length(bin_edges) = length(bin_counts) + 1 AND arraySum(bin_counts) > 0
        ) AS r ON r.model_name = l.model_name AND r.model_version = l.model_version AND r.feature = l.feature
    ),
    counted AS (
        SELECT model_name, model_version, feature, any(ref_event_id) AS ref_event_id, any(edges) AS bin_edges,
               arrayMap(c -> toFloat64(c), any(ref_counts)) AS rc,
               arrayMap(c -> toFloat64(c), sumForEach(arrayMap(i -> toUInt64(i = bin),
                                                                 range(1, length(ref_counts) + 1)))) AS lc,
               count() AS n
        FROM binned
        GROUP BY model_name, model_version, feature
    )
SELECT
    model_name, model_version, feature, 'numeric' AS kind, 'ks' AS test, ref_event_id, n,
    arraySum(rc) AS ref_n,
    arrayMap(x -> toString(x), bin_edges) AS buckets,
    rc AS ref_counts,
    lc AS live_counts,
    arrayMap(c -> c / ref_n, rc) AS p_ref,
    arrayMap(c -> c / n, lc) AS p_live,
    {_PSI} AS psi,
    arrayMax(arrayMap((a, b) -> abs(a - b), arrayCumSum(p_ref), arrayCumSum(p_live))) AS statistic,
    toUInt32(0) AS dof
FROM counted
ORDER BY model_name, model_version, feature
"""

CATEGORICAL_SQL = f"""
WITH
    reference AS ({_REFERENCE.format(kind="categorical")}),
    live_rows AS (
        SELECT model_name, model_version, name AS feature, value
        FROM (
            SELECT model_name, model_version,
                   arrayPushBack(CAST(categorical_names, 'Array(String)'), '{PREDICTION}') AS names,
                   arrayPushBack(categorical_values, toString(prediction)) AS vals{_WINDOW}
              AND length(categorical_names) = length(categorical_values)
        )
        ARRAY JOIN names AS name, vals AS value
    ),
    bucketed AS (
        SELECT l.model_name AS model_name, l.model_version AS model_version, l.feature AS feature,
               r.ref_event_id AS ref_event_id, r.categories AS categories,
               arrayPushBack(r.category_counts, greatest(toInt64(0), r.ref_count - arraySum(r.category_counts)))
                   AS ref_counts,
               indexOf(r.categories, l.value) AS found,
               if(found = 0, length(r.categories) + 1, found) AS bucket
        FROM live_rows AS l
        INNER JOIN (
            SELECT * FROM reference
            WHERE length(categories) > 0 AND length(categories) = length(category_counts) AND ref_count > 0
        ) AS r ON r.model_name = l.model_name AND r.model_version = l.model_version AND r.feature = l.feature
    ),
    counted AS (
        SELECT model_name, model_version, feature, any(ref_event_id) AS ref_event_id,
               arrayPushBack(any(categories), '{OTHER}') AS buckets,
               arrayMap(c -> toFloat64(c), any(ref_counts)) AS rc,
               arrayMap(c -> toFloat64(c), sumForEach(arrayMap(i -> toUInt64(i = bucket),
                                                                 range(1, length(ref_counts) + 1)))) AS lc,
               count() AS n
        FROM bucketed
        GROUP BY model_name, model_version, feature
    )
SELECT
    model_name, model_version, feature, 'categorical' AS kind, 'chi2' AS test, ref_event_id, n,
    arraySum(rc) AS ref_n,
    buckets,
    rc AS ref_counts,
    lc AS live_counts,
    arrayMap(c -> c / ref_n, rc) AS p_ref,
    arrayMap(c -> c / n, lc) AS p_live,
    {_PSI} AS psi,
    -- chi-squared of homogeneity: expected = bucket total x side total / grand total
    arraySum(arrayMap((r, l) -> if(r + l = 0, 0,
                 pow(r - (r + l) * ref_n / (ref_n + n), 2) / ((r + l) * ref_n / (ref_n + n))
               + pow(l - (r + l) * n / (ref_n + n), 2) / ((r + l) * n / (ref_n + n))), rc, lc)) AS statistic,
    toUInt32(greatest(0, arrayCount((r, l) -> r + l > 0, rc, lc) - 1)) AS dof
FROM counted
ORDER BY model_name, model_version, feature
"""

# The lineage of each model version: its registration and its newest deployment (if any).
LINEAGE_SQL = """
SELECT m.model_name AS model_name, m.model_version AS model_version, m.event_id AS registered_event_id,
       m.correlation_id AS correlation_id, m.dataset_name AS dataset_name, m.run_id AS run_id,
       d.event_id AS deployed_event_id, d.correlation_id AS deployed_correlation_id
FROM (
    SELECT * FROM models FINAL
    WHERE model_name IN {models:Array(String)}
    ORDER BY event_time DESC LIMIT 1 BY model_name, model_version
) AS m
LEFT JOIN (
    SELECT model_name, model_version, argMax(event_id, event_time) AS event_id,
           argMax(correlation_id, event_time) AS correlation_id
    FROM deployments FINAL
    WHERE model_name IN {models:Array(String)}
    GROUP BY model_name, model_version
) AS d ON d.model_name = m.model_name AND d.model_version = m.model_version
SETTINGS join_use_nulls = 1
"""

# Alerts already raised in the current window (by any monitor instance, as stored by the metadata sink).
RECENT_ALERTS_SQL = """
SELECT model_name, feature, max(event_time) AS last_alert
FROM drift_events FINAL
WHERE event_time >= {since:DateTime64(6)}
GROUP BY model_name, feature
"""

RECENT_RETRAINS_SQL = """
SELECT model_name, max(event_time) AS last_request
FROM training_requests FINAL
WHERE reason IN ('drift', 'performance') AND event_time >= {since:DateTime64(6)} AND model_name IS NOT NULL
GROUP BY model_name
"""

# Newest version of a dataset, and the spec of the request that trained the model (to retrain alike).
NEWEST_DATASET_SQL = """
SELECT version, event_id
FROM datasets FINAL
WHERE name = {dataset:String}
ORDER BY event_time DESC
LIMIT 1
"""

TRAINING_SPEC_SQL = """
SELECT q.spec_json AS spec_json
FROM (SELECT request_id FROM training_runs FINAL WHERE run_id = {run_id:String} AND request_id IS NOT NULL
      ORDER BY event_time DESC LIMIT 1) AS r
INNER JOIN (SELECT request_id, spec_json FROM training_requests FINAL) AS q ON q.request_id = r.request_id
LIMIT 1
"""
