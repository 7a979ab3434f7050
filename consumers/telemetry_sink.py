"""Telemetry sink: InferenceTelemetry from Kafka into ClickHouse without decoding events in Python.

Telemetry is the one stream whose volume follows traffic, so per-event Python
work is kept to a framing check: each message's 10-byte single-object header
(or Confluent header) must name a known InferenceTelemetry writer schema;
unknown framing (``undecodable``) and other event types (``unexpected_type``,
the decode edge's rule) go to the DLQ. The Avro bodies are concatenated as
they are, each followed by three appended fields (kafka_topic, kafka_partition,
kafka_offset), wrapped in one Avro object container per writer schema and
handed to ClickHouse, which parses Avro natively (``inference_telemetry_ingest``
→ materialized view → ``inference_telemetry``).

Exactly-once into ClickHouse without transactions:

* every row stores its Kafka coordinates and a batch is one insert (one block);
* on partition assignment the sink seeks each partition to the offset of the
  row it inserted last + 1, so a crash between insert and Kafka commit replays
  nothing, and dead-lettered records are recorded as skipped so a restart
  neither re-dead-letters them nor stalls behind them (``sink_skips.py``);
  only rows stored from the current Kafka cluster count (the
  in-memory embedded broker comes back from a restart as a new cluster with
  empty topics, where old offsets would point past the end);
* Kafka commits happen after the insert and only speed up restarts.

If ClickHouse rejects a block, each message is decoded with fastavro: those
that fail go to the DLQ with the reason, the rest are inserted again; rows
ClickHouse still refuses are isolated one by one and dead-lettered with
ClickHouse's message. A ClickHouse that is down or busy is retried with backoff
(within ``retry_budget_s``, kept below max.poll.interval.ms), then the sink stops
without committing.

Run: ``python -m consumers.telemetry_sink``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from consumers.avro_container import ContainerWriter, avro_string, extend_schema, zigzag
from consumers.sink_skips import Skip, last_handled, record_skips
from infra.clickhouse.errors import ClickHouseError, is_transient
from infra.errors import FatalError
from infra.faults import maybe_fault
from infra.kafka.config import admin_config, consumer_config
from infra.kafka.dlq import send_to_dlq
from infra.kafka.edge import Edge, refusal_reason
from infra.kafka.envelope import headers_dict
from infra.kafka.outcome import RETRY, RetryPolicy
from infra.kafka.producer import EventProducer, make_codec
from infra.kafka.topics import INFERENCE_TELEMETRY
from infra.logs import configure_logging
from infra.signals import on_stop_signals
from schemas.catalog import EventSchema
from schemas.codec import HEADER_LEN, SINGLE_OBJECT_MAGIC, SerializationError

log = logging.getLogger("modelbus.consumers.telemetry_sink")
# A block ClickHouse refuses is never retried as is (max_attempts=1: the fallback isolates its bad rows); a
# ClickHouse that is down or busy is retried with this backoff until the sink's retry budget is spent.
SINK_POLICY = RetryPolicy(max_attempts=1, backoff_s=0.2, max_backoff_s=5.0)

EVENT = "InferenceTelemetry"
GROUP = "telemetry-sink"   # consumer group name below kafka.topic_prefix (settings.group)
INGEST_TABLE = "inference_telemetry_ingest"
RAW_TABLE = "inference_telemetry"
BROKERS_TABLE = "telemetry_sink_brokers"
SINK_FIELDS = ({"name": "kafka_topic", "type": "string"}, {"name": "kafka_partition", "type": "int"},
               {"name": "kafka_offset", "type": "long"})
# Older writers lack newer fields: ClickHouse fills the column defaults, as Avro resolution would.
INSERT_SETTINGS = {"input_format_avro_allow_missing_fields": 1}
FAULT_AFTER_INSERT = "telemetry_sink.after_insert"


@dataclass
class SinkStats:
    consumed: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    inserts: int = 0
    fallbacks: int = 0
    commits: int = 0
    rebalances: int = 0
    legacy_framing: int = 0   # fingerprints in the pre-spec byte order (stored all the same)
    resumed_from: dict = field(default_factory=dict)


class TelemetrySink:
    def __init__(self, settings, store, *, group_id: str | None = None, producer=None, codec=None,
                 max_batch: int = 20_000, max_wait_s: float = 0.2, retry_budget_s: float = 60.0,
                 consumer_overrides: dict | None = None):
        self.settings = settings
        self.store = store
        self.group_id = group_id = group_id or settings.group(GROUP)
        self.topic = settings.topic(INFERENCE_TELEMETRY)
        self.codec = codec or make_codec(settings)
        self.producer = producer or EventProducer(settings, name="consumers.telemetry_sink.dlq", codec=self.codec)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.retry_budget_s = retry_budget_s
        self.stats = SinkStats()
        self.edge = Edge(settings, self.codec, {EVENT})
        self._known = {fp: s for fp, s in self.codec.catalog.by_fingerprint.items() if s.name == EVENT}
        self._writers: dict[bytes, ContainerWriter] = {}
        self._prefix: dict[int, bytes] = {}
        self._pending: list = []
        self._inflight: tuple[Future, list] | None = None
        self._landed: dict[int, int] = {}   # partition → next offset after everything stored
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry-insert")
        self._first_at = 0.0
        self._assigned: set[int] = set()
        self._stop = threading.Event()
        # Short fetch waits: a batch is cut every max_wait_s anyway, and some brokers (tansu) hold a fetch
        # for the full fetch.wait.max.ms (default 500 ms) even when data is there, which would be pure lag.
        conf = {"fetch.wait.max.ms": 50, **(consumer_overrides or {})}
        self._consumer = Consumer(consumer_config(settings.kafka, group_id, **conf))
        self._admin: AdminClient | None = None

    def stop(self) -> None:
        self._stop.set()

    # -- loop ---------------------------------------------------------------
    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None,
            ready: threading.Event | None = None) -> SinkStats:
        """Consume until stop()/SIGTERM, ``max_events`` stored or dead-lettered, or ``idle_timeout`` seconds
        without messages while partitions are assigned."""
        restore = on_stop_signals(lambda _signum: self.stop())
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("telemetry sink: %s → ClickHouse %s.%s as group %s", self.topic, self.store.database, RAW_TABLE,
                 self.group_id)
        last = time.monotonic()
        failed = False
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait = self.max_wait_s if not self._pending else max(0.0, self._first_at + self.max_wait_s - now)
                msgs = self._consumer.consume(self.max_batch - len(self._pending), wait)
                if ready is not None and self._assigned:
                    ready.set()
                self._take(msgs)
                now = time.monotonic()
                if not self._assigned:      # idle time counts only while partitions are ours
                    last = now
                if self._pending and (len(self._pending) >= self.max_batch or now - self._first_at >= self.max_wait_s):
                    self._flush()
                    last = now
                elif not self._pending and idle_timeout is not None and now - last > idle_timeout:
                    break
                in_flight = len(self._inflight[1]) if self._inflight else 0
                if max_events is not None and self.stats.consumed + in_flight >= max_events:
                    break
        except BaseException:
            failed = True
            raise
        finally:
            try:
                if not failed:
                    self._flush(sync_commit=True)
            finally:
                self._pool.shutdown(wait=True)
                self._consumer.close()
                self.producer.flush(10)
                restore()
                log.info("telemetry sink stopped: %s", self.stats)
        return self.stats

    def _take(self, msgs: list) -> None:
        for m in msgs:
            err = m.error()
            if err is None:
                if not self._pending:
                    self._first_at = time.monotonic()
                self._pending.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise FatalError(f"telemetry sink: fatal Kafka error: {err.str()}")
                log.warning("telemetry sink: consumer error: %s", err.str())

    # -- rebalances: positions come from what ClickHouse already stores ------------
    def _stored_offsets(self) -> dict[int, int]:
        """Offset of the record stored or dead-lettered last, per partition, among those handled from the
        cluster we are connected to (sink_skips.py)."""
        since = self._cluster_since()
        return self._retrying(lambda: last_handled(self.store, RAW_TABLE, self.topic, since))

    def _cluster_since(self):
        """When the sink started storing rows from the current Kafka cluster (None: the broker names none)."""
        try:
            # Asked through an admin client of its own: a call on the consumer from inside its rebalance callback
            # corrupts confluent-kafka's per-call state (the next log line aborts the process).
            if self._admin is None:
                self._admin = AdminClient(admin_config(self.settings.kafka))
            cluster = self._admin.list_topics(self.topic, timeout=10).cluster_id
        except KafkaException as exc:
            log.warning("telemetry sink: cannot read the cluster id (%s); resuming from every stored row", exc)
            return None
        if not cluster:
            return None
        query = (f"SELECT cluster_id, since FROM {BROKERS_TABLE} WHERE topic = {{t:String}} "
                 f"ORDER BY since DESC LIMIT 100")
        rows = self._retrying(lambda: self.store.query_rows(query, {"t": self.topic}))
        current = list(itertools.takewhile(lambda r: r["cluster_id"] == cluster, rows))
        if current:
            return min(r["since"] for r in current)
        start = "now64(6)" if rows else "toDateTime64(0, 6, 'UTC')"   # the first cluster adopts existing rows
        self._retrying(lambda: self.store.command(
            f"INSERT INTO {BROKERS_TABLE} (topic, cluster_id, since) SELECT {{t:String}}, {{c:String}}, {start}",
            {"t": self.topic, "c": cluster}))
        if rows:
            log.warning("telemetry sink: Kafka cluster changed (%s → %s): offsets stored before are not resumed "
                        "from (a restarted embedded broker starts empty)", rows[0]["cluster_id"], cluster)
        rows = self._retrying(lambda: self.store.query_rows(query, {"t": self.topic}))
        return min((r["since"] for r in itertools.takewhile(lambda r: r["cluster_id"] == cluster, rows)), default=None)

    def _on_assign(self, consumer, partitions) -> None:
        # An offset past the log end (topic recreated) makes Apache Kafka reset to auto.offset.reset=earliest,
        # and the rows stored from then on win the next lookup. tansu answers no such error, so offsets stored
        # from an earlier broker (a restarted embedded one is a new, empty cluster) are not looked up at all.
        self.stats.rebalances += 1
        stored = self._stored_offsets()
        for tp in partitions:
            off = stored.get(tp.partition)
            tp.offset = off + 1 if off is not None else OFFSET_STORED
            if off is not None:
                self._landed[tp.partition] = off + 1
            else:
                self._landed.pop(tp.partition, None)
            self.stats.resumed_from[tp.partition] = tp.offset
        consumer.assign(partitions)
        self._assigned |= {tp.partition for tp in partitions}
        log.info("telemetry sink: assigned %s", ", ".join(f"{tp.partition}@{tp.offset}" for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        self._flush(sync_commit=True)     # finish what we hold before someone else owns it
        self._assigned -= {tp.partition for tp in partitions}

    def _on_lost(self, consumer, partitions) -> None:
        # An insert already in flight still lands; its rows are correct, only the commit is skipped.
        lost = {tp.partition for tp in partitions}
        self._pending = [m for m in self._pending if m.partition() not in lost]
        self._assigned -= lost
        log.warning("telemetry sink: lost partitions %s; their uninserted messages will be redelivered", lost)

    # -- the batch --------------------------------------------------------------
    def _frame(self, value: bytes | None) -> tuple[EventSchema, int]:
        """Writer schema and header length of one message; SerializationError (see ``refusal_reason``) otherwise."""
        if value is not None and value[:2] == SINGLE_OBJECT_MAGIC and len(value) > HEADER_LEN:
            schema = self._known.get(value[2:HEADER_LEN])   # the hot path: one dict lookup
            if schema is not None:
                return schema, HEADER_LEN
        schema, legacy = self.edge.framing(self.topic, value)
        assert value is not None   # framing refused a tombstone
        hlen = HEADER_LEN if value[:2] == SINGLE_OBJECT_MAGIC else 5
        if len(value) <= hlen:
            raise SerializationError(f"{EVENT}: no body after the framing header")
        self.stats.legacy_framing += legacy
        return schema, hlen

    def _flush(self, sync_commit: bool = False) -> None:
        """Hand the pending batch to the insert thread (one insert in flight, so ClickHouse works while
        the next batch is polled); commit the previous batch once its insert has landed."""
        batch, self._pending = self._pending, []
        skips: list[Skip] = []
        runs = self._runs(batch, skips) if batch else []
        self._land(sync_commit and not batch)
        if batch:
            self._inflight = (self._pool.submit(self._store, runs, skips), batch)
            if sync_commit:
                self._land(True)

    def _land(self, sync_commit: bool) -> None:
        """Wait for the insert in flight (its errors surface here), then commit its offsets."""
        if self._inflight is None:
            if sync_commit and self._landed:
                self._commit([], True)
            return
        future, batch = self._inflight
        self._inflight = None
        future.result()
        self.stats.consumed += len(batch)
        self._commit(batch, sync_commit)

    def _runs(self, batch: list, skips: list[Skip]) -> list[tuple[EventSchema, int, list]]:
        """Split a batch into runs of consecutive messages of one writer schema; unknown framing → DLQ."""
        runs: list[tuple[EventSchema, int, list]] = []
        for m in batch:
            try:
                schema, hlen = self._frame(m.value())
            except SerializationError as exc:
                skips.append(self._dead(m, refusal_reason(exc), exc))
                continue
            if runs and runs[-1][0] is schema:
                runs[-1][2].append(m)
            else:
                runs.append((schema, hlen, [m]))
        return runs

    def _store(self, runs: list[tuple[EventSchema, int, list]], skips: list[Skip]) -> None:
        """Insert thread: runs in order, so per partition the stored offsets are always a prefix."""
        self.producer.flush(30)   # dead letters are durable before later offsets are stored
        for schema, hlen, msgs in runs:
            try:
                self._insert_retrying(schema, hlen, msgs)
            except ClickHouseError as exc:
                if is_transient(exc):
                    raise FatalError(f"telemetry sink: ClickHouse unavailable for {self.retry_budget_s:.0f}s, "
                                     f"stopping without committing: {exc}") from exc
                self._fallback(schema, hlen, msgs, exc)
        self._skipped(skips)      # after the inserts: a skip recorded first could, after a crash, hide them
        maybe_fault(FAULT_AFTER_INSERT)

    def _body(self, hlen: int, msgs: list) -> bytes:
        parts: list[bytes | memoryview] = []
        prefix = self._prefix
        for m in msgs:
            p = m.partition()
            pre = prefix.get(p)
            if pre is None:
                pre = prefix[p] = avro_string(self.topic) + zigzag(p)
            parts += (memoryview(m.value())[hlen:], pre, zigzag(m.offset()))
        return b"".join(parts)

    def _insert(self, schema: EventSchema, hlen: int, msgs: list) -> None:
        writer = self._writers.get(schema.fingerprint)
        if writer is None:
            writer = self._writers[schema.fingerprint] = ContainerWriter(extend_schema(schema.expanded, SINK_FIELDS))
        self.store.insert_raw(INGEST_TABLE, writer.container(len(msgs), self._body(hlen, msgs)), "Avro",
                              settings=INSERT_SETTINGS)
        self.stats.inserts += 1
        self.stats.inserted += len(msgs)

    def _insert_retrying(self, schema: EventSchema, hlen: int, msgs: list) -> None:
        return self._retrying(lambda: self._insert(schema, hlen, msgs))

    def _retrying(self, call):
        """Run ``call`` under the shared outcome policy (``infra/kafka/outcome.py``): a transient ClickHouse failure
        is retried with its backoff, anything else is raised at once (the fallback finds the bad rows). The sink's
        own rule on top: the retries end with ``retry_budget_s`` (below max.poll.interval.ms), then it stops
        without committing and resumes from ClickHouse."""
        deadline = time.monotonic() + self.retry_budget_s
        for attempt in itertools.count(1):
            try:
                return call()
            except ClickHouseError as exc:
                outcome = SINK_POLICY.decide(exc, attempt)
                if outcome.action != RETRY or time.monotonic() + outcome.delay_s > deadline:
                    raise
                log.warning("telemetry sink: ClickHouse not ready (%s); retrying in %.1fs", exc, outcome.delay_s)
                time.sleep(outcome.delay_s)

    def _fallback(self, schema: EventSchema, hlen: int, msgs: list, error: ClickHouseError) -> None:
        """ClickHouse refused a block: find the bad messages, dead-letter them, store the rest."""
        self.stats.fallbacks += 1
        log.warning("telemetry sink: ClickHouse rejected a block of %d: %s; checking each message", len(msgs), error)
        good, skips = [], []
        for m in msgs:
            try:
                self.codec.decode(m.value(), expected=EVENT)
                good.append(m)
            except SerializationError as exc:
                skips.append(self._dead(m, "undecodable", exc))
        self._skipped(skips)
        if not good:
            return
        try:
            return self._insert_retrying(schema, hlen, good)
        except ClickHouseError as exc:
            if is_transient(exc):
                raise FatalError(f"telemetry sink: ClickHouse unavailable: {exc}") from exc
        for m in good:   # valid Avro that ClickHouse still refuses: isolate, in offset order
            try:
                self._insert_retrying(schema, hlen, [m])
            except ClickHouseError as exc:
                if is_transient(exc):
                    raise FatalError(f"telemetry sink: ClickHouse unavailable: {exc}") from exc
                self._skipped([self._dead(m, "rejected", exc)])

    def _dead(self, m, reason: str, exc: BaseException) -> Skip:
        send_to_dlq(self.producer, topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
                    value=m.value(), reason=reason, error=exc, group=self.group_id,
                    original_headers=headers_dict(m.headers()))
        self.stats.dead_lettered += 1
        return m.partition(), m.offset(), reason

    def _skipped(self, skips: list[Skip]) -> None:
        """Wait for the dead letters, then record their coordinates as handled."""
        self.producer.flush(30)
        self._retrying(lambda: record_skips(self.store, self.topic, skips))

    def _commit(self, batch: list, sync: bool) -> None:
        """Commit everything stored so far (async per batch, sync on revoke/shutdown), including partitions
        resumed from ClickHouse that had nothing new, so the group's lag reads true."""
        nxt: dict[int, int] = {}
        for m in batch:
            if m.offset() + 1 > nxt.get(m.partition(), -1):
                nxt[m.partition()] = m.offset() + 1
        self._landed.update(nxt)
        offsets = [TopicPartition(self.topic, p, o) for p, o in self._landed.items() if p in self._assigned]
        if not offsets:
            return
        try:
            # the stub's overloads take asynchronous only as a literal True or False
            self._consumer.commit(offsets=offsets, asynchronous=not sync)  # type: ignore[call-overload]
            self.stats.commits += 1
        except Exception as exc:  # noqa: BLE001 - commits only speed up restarts; ClickHouse holds the truth
            log.warning("telemetry sink: commit failed (restart resumes from ClickHouse): %s", exc)


def main(argv: list[str] | None = None) -> None:
    from infra.clickhouse import connect
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(description="InferenceTelemetry → ClickHouse sink")
    parser.add_argument("--group", default=None, help=f"Kafka consumer group (default: <topic_prefix>.{GROUP})")
    parser.add_argument("--max-batch", type=int, default=20_000, help="messages per ClickHouse insert")
    parser.add_argument("--max-wait-s", type=float, default=0.2, help="longest wait before a partial batch")
    parser.add_argument("--idle-timeout", type=float, default=None, help="exit after this many idle seconds")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    store = connect(settings)
    try:
        stats = TelemetrySink(settings, store, group_id=args.group, max_batch=args.max_batch,
                              max_wait_s=args.max_wait_s).run(idle_timeout=args.idle_timeout)
        print(asdict(stats), flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    main()
