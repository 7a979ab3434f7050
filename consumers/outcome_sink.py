"""Outcome sink: OutcomeObserved → ClickHouse, each outcome joined to the row it is the truth of.

Each report is judged as it is decoded (through the shared ``ConsumerRunner``, so
the one outcome policy applies): a report naming neither or both of prediction id
and key, a malformed id or key, a label for a regressor, a value for a classifier
or a class the model does not have → PoisonEvent → the DLQ with that reason; the
consumer carries on. Good reports are buffered and written in batches before
the commit that covers them (``before_commit``): first ``outcomes`` (every report,
one Arrow block), then ClickHouse joins the batch to its rows in ``inference_rows``
(``consumers/outcome_join.py``) into ``labelled_rows``, and records the reports
whose prediction is unknown, expired or not stored yet in ``outcome_orphans``.
All three are ReplacingMergeTrees on (model, ref), so a redelivered batch changes
nothing and the latest observation of a prediction wins. Every ``rematch_every_s``
the unresolved orphans are joined again: a report that arrived before its
telemetry is joined as soon as the row is stored.

Run: ``python -m consumers.outcome_sink``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa

from consumers import outcome_join as J
from consumers.outcome_rows import (
    ModelInfo,
    check_fits,
    outcome_row,
    ref_of,
)
from infra.clickhouse.errors import ClickHouseError, is_transient
from infra.kafka import ConsumerRunner, Envelope
from infra.kafka import topics as T

log = logging.getLogger("modelbus.consumers.outcome_sink")

GROUP = "outcome-sink"   # consumer group name below kafka.topic_prefix (settings.group)
MODELS_SQL = "SELECT model_version, task, labels FROM models FINAL WHERE model_name = {m:String}"


class OutcomeSink:
    """The handler (judges and buffers each report) and ``flush`` (writes the buffer; the runner's before_commit)."""

    def __init__(self, store, *, max_buffer: int = 100_000, min_batch: int = 20_000, max_wait_s: float = 1.0,
                 rematch_every_s: float = 30.0, model_ttl_s: float = 30.0, rematch_limit: int = 10_000):
        self.store = store
        self.max_buffer = max_buffer
        self.min_batch = min_batch
        self.max_wait_s = max_wait_s
        self._first_pending = 0.0
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
            if not self._pending:
                self._first_pending = time.monotonic()
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
    def flush(self, final: bool = True) -> bool:
        """Write every buffered report (raises, keeping them buffered, when ClickHouse fails).

        As the runner's before_commit (``final`` False) it waits until ``min_batch`` reports or ``max_wait_s``
        have gathered, returning False meanwhile so the commit waits too: each write is one join in
        ClickHouse, and few large ones join far faster than many small ones.
        """
        with self._lock:
            waiting = time.monotonic() - self._first_pending if self._pending else 0.0
            if not final and len(self._pending) < self.min_batch and waiting < self.max_wait_s:
                return not self._pending
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
        return True

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Store the reports, then let ClickHouse join them to their rows and record the ones without."""
        batch_id = uuid.uuid4().hex
        self.store.insert_arrow("outcomes", _outcomes_table(batch, batch_id))
        self.store.command(J.LABEL_SQL.replace("{source}", J.BATCH), {"batch": batch_id})
        self.store.command(J.ORPHAN_SQL, {"batch": batch_id})
        self.stats["outcomes"] += len(batch)

    def rematch(self) -> int:
        """Join the orphans whose rows are stored now; returns how many were resolved."""
        before = self.store.query_rows(J.COUNT_SQL)[0]["n"]
        if not before:
            return 0
        self.store.command(J.LABEL_SQL.replace("{source}", J.ORPHANS), {"limit": self.rematch_limit})
        self.store.command(J.RESOLVE_SQL)
        resolved = before - self.store.query_rows(J.COUNT_SQL)[0]["n"]
        self.stats["resolved"] += resolved
        if resolved:
            log.info("outcome sink: %d orphaned outcome(s) joined to rows stored since", resolved)
        return resolved


_TS = pa.timestamp("us", tz="UTC")
OUTCOMES_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_time", _TS), ("producer", pa.string()), ("model_name", pa.string()),
    ("ref", pa.string()), ("prediction_id", pa.string()), ("row_key", pa.string()), ("label", pa.string()),
    ("value", pa.float64()), ("observed_at", _TS), ("source", pa.string()), ("batch_id", pa.string())])


_ROW_SCHEMA = OUTCOMES_SCHEMA.remove(OUTCOMES_SCHEMA.get_field_index("batch_id"))


def _outcomes_table(batch: list[dict[str, Any]], batch_id: str) -> pa.Table:
    """The batch as one Arrow block (columnar: parsed far faster by ClickHouse than JSON rows); Arrow's own
    converter reads the row dicts (in C++, about twice as fast as gathering each column in Python)."""
    table = pa.Table.from_pylist(batch, schema=_ROW_SCHEMA)
    return table.append_column(OUTCOMES_SCHEMA.field("batch_id"), pa.array([batch_id] * len(batch), pa.string()))


def _transient_or_poison(handler: OutcomeSink):
    """The handler with ClickHouse failures mapped for the runner: transient → retried with backoff until it
    passes; any other → retried, then dead-lettered (the runner's policy for an unexpected error)."""
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
