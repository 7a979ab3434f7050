"""The outcome join as ClickHouse statements: the engine matches outcomes to served rows, not Python.

``LABEL_SQL`` joins a set of outcomes (``{source}``: the batch just stored in ``outcomes``, named by its
``batch_id`` so no list of ids travels in the request, or the unresolved orphans) to their served rows in
``inference_rows`` by ref (``id:<prediction_id>`` or ``key:<row_key>``; for a key reused by several rows,
its latest row) and to the labels of the model version that served each row, and writes
``labelled_rows``. Each kind of ref is looked up on its own column (``prediction_id IN ...``,
``row_key IN ...``), so no ref text is built for the served rows the set does not name. ``ORPHAN_SQL``
records the batch's outcomes that found no row, with the reason; ``RESOLVE_SQL`` marks the orphans that
have a labelled row now. ``{source}`` is one of the two constant subqueries below, never text from an event.
"""

from __future__ import annotations

BATCH = """(SELECT event_id, model_name, ref, label, value, observed_at FROM outcomes
            WHERE batch_id = {batch:String})"""
ORPHANS = """(SELECT outcome_event_id AS event_id, model_name, ref, label, value, observed_at
              FROM outcome_orphans FINAL WHERE NOT resolved ORDER BY observed_at DESC LIMIT {limit:UInt32})"""

# What LABEL_SQL reads of a served row (the same list on both sides of its UNION ALL).
_ROW_COLUMNS = ("model_name, model_version, prediction_id, row_key, event_time, prediction, prediction_value, "
                "confidence, scores, categorical_names, categorical_values")

LABEL_SQL = """
INSERT INTO labelled_rows (model_name, model_version, ref, prediction_id, row_key, served_at, observed_at,
    label_delay_s, task, prediction, predicted_index, prediction_value, confidence, scores, label, label_index,
    value, categorical_names, categorical_values, outcome_event_id)
SELECT o.model_name, r.model_version, o.ref, r.prediction_id, r.row_key, r.event_time, o.observed_at,
       dateDiff('microsecond', r.event_time, o.observed_at) / 1e6, m.task, r.prediction,
       if(m.task != 'regression', toInt32(r.prediction_value), -1), r.prediction_value, r.confidence, r.scores,
       o.label, if(m.task != 'regression', toInt32(indexOf(m.labels, assumeNotNull(o.label))) - 1, -1), o.value,
       r.categorical_names, r.categorical_values, o.event_id
FROM {source} AS o
INNER JOIN
(
    SELECT * FROM
    (
        SELECT _ROW_COLUMNS, concat('id:', prediction_id) AS ref
        FROM inference_rows
        WHERE prediction_id IN (SELECT substring(ref, 4) FROM {source} WHERE startsWith(ref, 'id:'))
        UNION ALL
        SELECT _ROW_COLUMNS, concat('key:', assumeNotNull(row_key)) AS ref
        FROM inference_rows
        WHERE row_key IN (SELECT substring(ref, 5) FROM {source} WHERE startsWith(ref, 'key:'))
    )
    ORDER BY event_time DESC
    LIMIT 1 BY model_name, ref
) AS r ON r.model_name = o.model_name AND r.ref = o.ref
INNER JOIN (SELECT model_name, model_version, task, labels FROM models FINAL) AS m
    ON m.model_name = r.model_name AND m.model_version = r.model_version
""".replace("_ROW_COLUMNS", _ROW_COLUMNS)

ORPHAN_SQL = """
INSERT INTO outcome_orphans (model_name, ref, prediction_id, row_key, label, value, observed_at, source, reason,
    resolved, outcome_event_id, updated_at)
SELECT model_name, ref, prediction_id, row_key, label, value, observed_at, source,
       if(model_name IN (SELECT model_name FROM models), 'unknown prediction', 'unknown model'), false, event_id,
       now64(6)
FROM outcomes
WHERE batch_id = {batch:String}
  AND (model_name, ref) NOT IN (SELECT model_name, ref FROM labelled_rows WHERE outcome_event_id IN
                                (SELECT event_id FROM outcomes WHERE batch_id = {batch:String}))
"""

RESOLVE_SQL = """
INSERT INTO outcome_orphans (model_name, ref, prediction_id, row_key, label, value, observed_at, source, reason,
    resolved, outcome_event_id, updated_at)
SELECT model_name, ref, prediction_id, row_key, label, value, observed_at, source, reason, true, outcome_event_id,
       now64(6)
FROM outcome_orphans FINAL
WHERE NOT resolved AND (model_name, ref) IN (SELECT model_name, ref FROM labelled_rows)
"""
COUNT_SQL = "SELECT count() AS n FROM outcome_orphans FINAL WHERE NOT resolved"
