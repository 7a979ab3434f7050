"""Outcome sink: OutcomeObserved → ClickHouse, each outcome joined to the row it is the truth of.

Each report is judged as it is decoded (through the shared ``ConsumerRunner``, so
the one outcome policy applies): a report naming neither or both of prediction id
and key, a malformed id or key, a label for a regressor, a value for a classifier
or a class the model does not have → PoisonEvent → the DLQ with that reason; the
consumer carries on. Good reports are buffered and written in batches before
every commit (``before_commit``): first ``outcomes`` (every report), then, after
one lookup of their rows in ``inference_rows`` per model, ``labelled_rows`` (the
join) and ``outcome_orphans`` (reports whose prediction is unknown, expired or not
stored yet). All three are ReplacingMergeTrees on (model, ref), so a redelivered
batch changes nothing and the latest observation of a prediction wins. Every
``rematch_every_s`` the unresolved orphans are looked up again: a report that
arrived before its telemetry is joined as soon as the row is stored.

Run: ``python -m consumers.outcome_sink``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from consumers.outcome_rows import (
    UNKNOWN_MODEL,
    UNKNOWN_PREDICTION,
    ModelInfo,
    check_fits,
    labelled_row,
    orphan_row,
    outcome_row,
    ref_of,
    split_refs,
)
from infra.clickhouse.errors import ClickHouseError, is_transient
from infra.clickhouse.rows import json_each_row
from infra.kafka import ConsumerRunner, Envelope
from infra.kafka import topics as T

log = logging.getLogger("modelbus.consumers.outcome_sink")

GROUP = "outcome-sink"   # consumer group name below kafka.topic_prefix (settings.group)
MODELS_SQL = "SELECT model_version, task, labels FROM models FINAL WHERE model_name = {m:String}"
LOOKUP_SQL = """
SELECT model_version, prediction_id, row_key, event_time, prediction, prediction_value, confidence, scores,
       categorical_names, categorical_values
FROM inference_rows FINAL
WHERE model_name = {m:String} AND status = 'ok'
  AND (prediction_id IN {ids:Array(String)} OR assumeNotNull(row_key) IN {keys:Array(String)})
ORDER BY event_time DESC
"""
ORPHANS_SQL = """
SELECT model_name, ref, prediction_id, row_key, label, value, observed_at, source, outcome_event_id
FROM outcome_orphans FINAL WHERE NOT resolved ORDER BY observed_at DESC LIMIT {limit:UInt32}
"""


class OutcomeSink:
    """The handler (judges and buffers each report) and ``flush`` (writes the buffer; the runner's before_commit)."""

    def __init__(self, store, *, max_buffer: int = 20_000, rematch_every_s: float = 30.0, model_ttl_s: float = 30.0,
                 rematch_limit: int = 10_000):
        self.store = store
        self.max_buffer = max_buffer
        self.rematch_every_s = rematch_every_s
        self.model_ttl_s = model_ttl_s
        self.rematch_limit = rematch_limit
        self.stats: Counter = Counter()
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._models: dict[str, tuple[float, ModelInfo | None]] = {}
        self._next_rematch = time.monotonic() + rematch_every_s

    # -- per report ---------------------------------------------------------------------------------
    def __call__(self, env: Envelope) -> None:
        outcome = env.value
        ref = ref_of(outcome)
        model = self.model(outcome["model_name"])
        if model is not None:
            check_fits(outcome, model)
        row = outcome_row(env.event_id, outcome["header"], outcome, ref)
        with self._lock:
            self._pending.append(row)
            full = len(self._pending) >= self.max_buffer
        if full:
            self.flush()

    def model(self, name: str) -> ModelInfo | None:
        """The model's task and labels per version (cached briefly); None when no version is registered."""
        cached = self._models.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.model_ttl_s:
            return cached[1]
        rows = self.store.query_rows(MODELS_SQL, {"m": name})
        info = ModelInfo(rows[0]["task"], {int(r["model_version"]): tuple(r["labels"]) for r in rows}) if rows \
            else None
        self._models[name] = (time.monotonic(), info)
        return info

    # -- batches ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every buffered report (raises, keeping them buffered, when ClickHouse fails)."""
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            if batch:
                self._write(batch)
        except Exception:
            with self._lock:
                self._pending[:0] = batch
            raise
        if time.monotonic() >= self._next_rematch:
            self._next_rematch = time.monotonic() + self.rematch_every_s
            self.rematch()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        self._insert("outcomes", batch)
        self.stats["outcomes"] += len(batch)
        labelled, orphans = self._join(batch)
        self._insert("labelled_rows", labelled)
        self._insert("outcome_orphans", orphans)

    def _join(self, outcomes: list[dict[str, Any]], *, resolving: bool = False):
        """(labelled rows, orphan rows) of outcomes: one lookup of their served rows per model."""
        labelled, orphans = [], []
        now_us = time.time_ns() // 1000
        by_model: dict[str, list[dict[str, Any]]] = {}
        for o in outcomes:
            by_model.setdefault(o["model_name"], []).append(o)
        for name, group in by_model.items():
            info = self.model(name)
            found = self._served(name, group) if info is not None else {}
            for o in group:
                served = found.get(o["ref"])
                if served is not None and info is not None:
                    labelled.append(labelled_row(o, served, info))
                    if resolving:
                        orphans.append(orphan_row(o, UNKNOWN_PREDICTION, resolved=True, now_us=now_us))
                elif not resolving:
                    reason = UNKNOWN_MODEL if info is None else UNKNOWN_PREDICTION
                    orphans.append(orphan_row(o, reason, resolved=False, now_us=now_us))
        self.stats["labelled"] += len(labelled)
        self.stats["resolved" if resolving else "orphaned"] += len(orphans)
        return labelled, orphans

    def _served(self, name: str, outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """ref → the served row (for a reused key, its latest row)."""
        ids, keys = split_refs(outcomes)
        out: dict[str, dict[str, Any]] = {}
        for row in self.store.query_rows(LOOKUP_SQL, {"m": name, "ids": ids, "keys": keys}):
            if row["prediction_id"] in ids:
                out.setdefault(f"id:{row['prediction_id']}", row)
            if row["row_key"] is not None and row["row_key"] in keys:
                out.setdefault(f"key:{row['row_key']}", row)
        return out

    def rematch(self) -> int:
        """Join the orphans whose rows are stored now; returns how many were resolved."""
        orphans = self.store.query_rows(ORPHANS_SQL, {"limit": self.rematch_limit})
        for o in orphans:
            o["event_id"] = o["outcome_event_id"]
            o["key"] = o["row_key"]
        self._models.clear()       # a model registered since is seen now
        labelled, resolved = self._join(orphans, resolving=True)
        self._insert("labelled_rows", labelled)
        self._insert("outcome_orphans", resolved)
        if resolved:
            log.info("outcome sink: %d orphaned outcome(s) joined to rows stored since", len(resolved))
        return len(resolved)

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.store.insert_raw(table, json_each_row(rows), "JSONEachRow",
                                  settings={"input_format_skip_unknown_fields": 0})


def _transient_or_poison(handler: OutcomeSink):
    """The handler with ClickHouse failures mapped for the runner: transient → retried, others raise as they are."""
    def handle(env: Envelope) -> None:
        try:
            handler(env)
        except ClickHouseError as exc:
            if is_transient(exc):
                raise
            raise RuntimeError(f"cannot judge outcome {env.event_id}: {exc}") from exc   # retried, then DLQ
    return handle


def build_runner(settings, store, *, group_id: str | None = None, sink: OutcomeSink | None = None,
                 **runner_kw) -> ConsumerRunner:
    sink = sink or OutcomeSink(store)
    return ConsumerRunner(settings, group_id=group_id or settings.group(GROUP),
                          topics=[settings.topic(T.OUTCOMES_OBSERVED)], handler=_transient_or_poison(sink),
                          name="outcome-sink", expected_types=("OutcomeObserved",), before_commit=sink.flush,
                          **runner_kw)


def main(argv: list[str] | None = None) -> None:
    from consumers.sink_main import sink_main

    sinks: list[OutcomeSink] = []

    def build(settings, store, group_id=None):
        sinks.append(OutcomeSink(store))
        return build_runner(settings, store, group_id=group_id, sink=sinks[0])

    sink_main(argv, description="outcomes → ClickHouse, joined to their served rows", group=GROUP, log=log,
              build=build, stats=lambda: dict(sinks[0].stats) if sinks else None)


if __name__ == "__main__":
    main()
