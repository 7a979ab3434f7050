"""At-least-once consumer runner shared by every ModelBus consumer.

The loop hands each polled batch to one worker thread and keeps polling (with
the partitions paused) while the worker runs, so a handler that trains for an
hour never exceeds ``max.poll.interval.ms`` and never triggers a rebalance.
Offsets are committed only after the handler returned *and* every event it
queued on the runner's producer (outputs, dead letters) was acknowledged.

Outcome of a handler, per event (the one policy every runtime shares, ``infra/kafka/outcome.py``):

* returns            → done
* ``SkipEvent``      → done (nothing to do)
* ``PoisonEvent`` / undecodable bytes / an event type the topic does not carry
  (``infra/kafka/edge.py``) / a record over ``kafka.max_message_bytes`` (``oversized``, never handed
  to the handler) → ``<topic>.dlq`` with error headers, the value cut to fit (``size.py``), done
* ``FatalError``     → stop without committing that event; ``run`` raises it
* a transient error (``is_transient``: a dependency is down) → retried with capped backoff until it passes
* anything else      → retried with backoff; after ``max_attempts`` → DLQ

Each attempt reaches the handler as ``Envelope.attempt`` (and ``last_attempt``); ``on_error`` is
the stage's error callback (see ``outcome.py``). A handler that batches its outputs (a sink writing
many events per insert) passes ``before_commit(final)``: it runs before every commit; when it raises, or
returns False to keep batching, the commit waits for the next try, so no offset is committed ahead of its
outputs. ``final`` (shutdown, partitions revoked) asks it to write everything now.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from infra.errors import DeliveryError, EventTooLarge, FatalError
from infra.kafka.config import consumer_config
from infra.kafka.dlq import send_to_dlq
from infra.kafka.edge import Edge, refusal_reason
from infra.kafka.envelope import Envelope, headers_dict, position
from infra.kafka.idempotency import ProcessedLog
from infra.kafka.outcome import DEAD_LETTER, SKIP, ErrorCallback, Outcome, RetryPolicy, handle
from infra.kafka.producer import EventProducer, make_codec
from infra.kafka.size import oversized
from infra.settings import Settings
from infra.signals import on_stop_signals
from schemas.codec import AvroCodec, SerializationError

log = logging.getLogger("modelbus.kafka.consumer")

Handler = Callable[[Envelope], None]


@dataclass
class RunnerStats:
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0
    rebalances: int = 0
    duplicates: int = 0   # events skipped because the ProcessedLog had their id
    legacy_framing: int = 0   # events whose fingerprint came in the pre-spec byte order (still handled)


class ConsumerRunner:
    def __init__(self, settings: Settings, *, group_id: str, topics: Iterable[str], handler: Handler, name: str,
                 producer: EventProducer | None = None, codec: AvroCodec | None = None, max_batch: int = 500,
                 max_attempts: int = 5, backoff_s: float = 0.5, expected_types: Iterable[str] | None = None,
                 consumer_overrides: dict[str, Any] | None = None, processed: ProcessedLog | None = None,
                 on_error: ErrorCallback | None = None, stop_event: threading.Event | None = None,
                 before_commit: Callable[[bool], bool | None] | None = None):
        self.settings = settings
        self.name = name
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.codec = codec or make_codec(settings)
        self.producer = producer or EventProducer(settings, name=f"{name}.dlq", codec=self.codec)
        self.max_batch = max_batch
        self.policy = RetryPolicy(max_attempts=max_attempts, backoff_s=backoff_s)
        self.on_error = on_error
        self.before_commit = before_commit   # makes a batching handler's buffered outputs durable
        self.edge = Edge(settings, self.codec, expected_types, max_attempts=max_attempts)
        self.stats = RunnerStats()
        conf = consumer_config(settings.kafka, group_id, **(consumer_overrides or {}))
        self._consumer = Consumer(conf)
        # Pausing drops librdkafka's prefetched messages, so only pause when a batch runs long enough to
        # endanger the group membership: a third of max.poll.interval.ms leaves ample margin.
        self._pause_after_s = int(conf["max.poll.interval.ms"]) / 1000 / 3
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-worker")
        self._stop = stop_event or threading.Event()   # a handler given the same event sees the stop
        self._progress: dict[tuple[str, int], int] = {}   # next offset to commit, per partition
        self._progress_lock = threading.Lock()
        self._assigned: set[tuple[str, int]] = set()
        self._fatal: BaseException | None = None
        self.processed = processed
        self._done_ids: set[str] = set()   # handled since the last commit; marked in ``processed`` before it

    # -- lifecycle --------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current event, commit and exit."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None,
            ready: threading.Event | None = None) -> RunnerStats:
        """Consume until ``stop()``/SIGTERM, ``max_events`` handled, or ``idle_timeout`` seconds without events."""
        restore = self._install_signal_handlers()
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("%s: consuming %s as group %s", self.name, ",".join(self.topics), self.group_id)
        last_event = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(self.max_batch, 0.2)
                if ready is not None and self._assigned:
                    ready.set()
                batch = [m for m in msgs if self._usable(m)]
                if not batch:
                    if self.before_commit is not None:
                        self._commit_progress()   # a batching handler's outputs are written when it is ready
                    if idle_timeout is not None and time.monotonic() - last_event > idle_timeout:
                        break
                    continue
                last_event = time.monotonic()
                self._run_batch(batch)
                if self._fatal is not None:
                    raise self._fatal
                if max_events is not None and self.handled >= max_events:
                    break
        finally:
            self._shutdown()
            restore()
        return self.stats

    @property
    def handled(self) -> int:
        s = self.stats
        return s.processed + s.skipped + s.dead_lettered

    def _install_signal_handlers(self) -> Callable[[], None]:
        def on_signal(signum: int) -> None:
            log.info("%s: signal %s: finishing the current event, then exiting", self.name, signum)
            self._stop.set()

        return on_stop_signals(on_signal)

    def _shutdown(self) -> None:
        try:
            self._commit_progress(final=True)
        finally:
            self._pool.shutdown(wait=True)
            try:
                self.producer.flush(10)
            except DeliveryError as exc:
                log.error("%s: %s", self.name, exc)
            self._consumer.close()   # leaves the group so partitions move at once
            log.info("%s: stopped (%s, producer renewals %d)", self.name, self.stats,
                     getattr(self.producer, "renewals", 0))

    # -- rebalance callbacks (run in the polling thread) ------------------
    def _on_assign(self, consumer, partitions) -> None:
        self.stats.rebalances += 1
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("%s: assigned %s", self.name, _fmt(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        # Commit what is finished on the partitions we lose, so the next owner does not redo it.
        self._commit_progress({(p.topic, p.partition) for p in partitions}, final=True)
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        log.info("%s: revoked %s", self.name, _fmt(partitions))

    def _on_lost(self, consumer, partitions) -> None:
        with self._progress_lock:
            for p in partitions:
                self._progress.pop((p.topic, p.partition), None)
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        log.warning("%s: lost %s (uncommitted work will be redelivered)", self.name, _fmt(partitions))

    # -- the batch ----------------------------------------------------------
    def _usable(self, msg) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            return False
        if err.fatal():
            self._fatal = FatalError(f"{self.name}: fatal Kafka error: {err.str()}")
            self._stop.set()
        else:
            log.warning("%s: consumer error: %s", self.name, err.str())
        return False

    def _run_batch(self, batch: list) -> None:
        future = self._pool.submit(self._work, batch)
        paused: list[TopicPartition] = []
        last_commit = time.monotonic()
        while True:
            try:
                future.result(timeout=self._pause_after_s if not paused else 0.2)
                break
            except FutureTimeout:
                pass
            if not paused:
                paused = self._consumer.assignment()
                self._consumer.pause(paused)
            # Keep the group membership alive; nothing is fetched from paused partitions.
            stray = self._consumer.poll(0.1)
            if stray is not None and stray.error() is None:   # from a partition assigned meanwhile
                tp = TopicPartition(*position(stray))
                self._consumer.pause([tp])
                self._consumer.seek(tp)
                paused.append(tp)
            if time.monotonic() - last_commit > 5.0:   # long batches commit finished events as they go
                self._commit_progress()
                last_commit = time.monotonic()
        if paused:
            current = {(p.topic, p.partition) for p in self._consumer.assignment()}
            self._consumer.resume([p for p in paused if (p.topic, p.partition) in current])
        self._commit_progress()

    def _work(self, batch: list) -> None:
        for msg in batch:
            if self._stop.is_set() and self._fatal is None and msg is not batch[0]:
                self._rewind(msg)
                return
            try:
                self._handle(msg)
            except FatalError as exc:
                self._fatal = exc
                self._stop.set()
                self._rewind(msg)
                return
            with self._progress_lock:
                self._progress[(msg.topic(), msg.partition())] = msg.offset() + 1

    def _rewind(self, msg) -> None:
        """Unhandled messages of this batch are fetched again after the next start (nothing is lost)."""
        try:
            self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        except KafkaException:
            pass  # partition no longer ours or consumer closing: the committed offset is the restart point

    def _handle(self, msg) -> None:
        raw_headers = headers_dict(msg.headers())
        too_big = oversized(msg.value(), msg.key(), raw_headers, self.settings.kafka.max_message_bytes)
        if too_big is not None:
            self._dead_letter(msg, "oversized", EventTooLarge(too_big), raw_headers)
            return
        try:
            env = self.edge.envelope(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                     key=msg.key(), value=msg.value(), timestamp_ms=msg.timestamp()[1],
                                     headers=raw_headers)
        except SerializationError as exc:
            self._dead_letter(msg, refusal_reason(exc), exc, raw_headers)
            return
        self.stats.legacy_framing += env.legacy_framing
        if self.processed is not None and (env.event_id in self._done_ids or self.processed.seen(env.event_id)):
            log.debug("%s: %s already processed (event %s)", self.name, env.coordinates, env.event_id)
            self.stats.duplicates += 1
            return
        outcome = handle(self.handler, env, self.policy, wait=self._stop.wait, stage=self.name,
                         on_error=self.on_error, on_retry=self._count_retry)
        if outcome.action == DEAD_LETTER:
            assert outcome.error is not None
            self._dead_letter(msg, outcome.reason, outcome.error, raw_headers)
            return
        if outcome.action == SKIP:
            self.stats.skipped += 1
        else:
            self.stats.processed += 1
        self._done(env.event_id)

    def _count_retry(self, _outcome: Outcome) -> None:
        self.stats.retries += 1

    def _done(self, event_id: str) -> None:
        if self.processed is not None:
            with self._progress_lock:
                self._done_ids.add(event_id)

    def _dead_letter(self, msg, reason: str, exc: BaseException, headers: dict[str, bytes]) -> None:
        send_to_dlq(self.producer, topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                    key=msg.key(), value=msg.value(), reason=reason, error=exc, group=self.group_id,
                    original_headers=headers)
        self.stats.dead_lettered += 1

    # -- commits ------------------------------------------------------------
    def _commit_progress(self, only: set[tuple[str, int]] | None = None, final: bool = False) -> None:
        with self._progress_lock:
            pending = {tp: off for tp, off in self._progress.items() if only is None or tp in only}
        if not pending:
            return
        if self.before_commit is not None:
            try:
                # The handler's buffered outputs (e.g. rows for ClickHouse) first. False: it keeps batching, so
                # the commit waits (never on a final commit: shutdown or revoked partitions).
                if self.before_commit(final) is False:
                    return
            except Exception as exc:   # noqa: BLE001 - not durable yet: keep the offsets for the next try
                log.warning("%s: outputs not yet durable, commit of %s postponed: %s", self.name,
                            _fmt([TopicPartition(t, p, o) for (t, p), o in pending.items()]), exc)
                return
        try:
            self.producer.flush(30)   # outputs and dead letters first: commit only what is durable
        except DeliveryError as exc:
            # Not acknowledged: keep the offsets uncommitted so the events are redone after a restart.
            self._fatal = FatalError(f"{self.name}: outputs not durable, not committing: {exc}")
            self._stop.set()
            return
        if self.processed is not None:   # outputs are durable now; mark before committing (see ProcessedLog)
            with self._progress_lock:
                done = set(self._done_ids)
            for event_id in done:
                self.processed.mark(event_id, group=self.group_id)
            with self._progress_lock:
                self._done_ids -= done      # only now: a duplicate arriving meanwhile still finds the id
        offsets = [TopicPartition(t, p, off) for (t, p), off in pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
            with self._progress_lock:
                for tp, off in pending.items():
                    if self._progress.get(tp) == off:
                        del self._progress[tp]
        except KafkaException as exc:
            # Typically the partition moved to another member; that member redelivers, handlers are idempotent.
            log.warning("%s: commit of %s failed: %s", self.name, _fmt(offsets), exc)


def _fmt(parts) -> str:
    return ",".join(f"{p.topic}[{p.partition}]" + (f"@{p.offset}" if p.offset not in (OFFSET_INVALID, -1001) else "")
                    for p in parts) or "-"
