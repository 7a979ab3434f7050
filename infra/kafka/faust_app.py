"""faust-streaming apps for stateful workflow agents (deployer, search coordinator).

faust keeps agent state in tables backed by compacted changelog topics, so a
restarted agent recovers its state from Kafka and decides the same way. This
module builds such apps from ModelBus settings (same broker, same SASL/TLS
settings) and puts deserialization at the edge: agents subscribe to raw bytes,
``envelopes()`` decodes them with the ModelBus codec and dead-letters poison,
so agents only ever see ``Envelope`` objects — just like ConsumerRunner handlers.
Agents run their handlers through ``infra.kafka.outcome.handle_async`` and hand the
outcome to ``EdgeDecoder.settle``: the same policy as the runner, dead letters written
off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import faust

from infra.errors import EventTooLarge
from infra.kafka.cloudevents import event_headers
from infra.kafka.dlq import send_to_dlq
from infra.kafka.edge import Edge, refusal_reason
from infra.kafka.envelope import Envelope, headers_dict
from infra.kafka.outcome import DEAD_LETTER, Outcome
from infra.kafka.producer import EventProducer, make_codec
from infra.kafka.size import oversized
from infra.settings import Settings
from schemas.codec import SerializationError

log = logging.getLogger("modelbus.faust")


def broker_url(settings: Settings) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in settings.kafka.bootstrap_servers.split(",") if hp.strip()]


def broker_credentials(settings: Settings) -> Any:
    k = settings.kafka
    context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=k.ssl_ca_location)
        if k.ssl_certificate_location:
            context.load_cert_chain(k.ssl_certificate_location, k.ssl_key_location,
                                    k.ssl_key_password.get_secret_value() if k.ssl_key_password else None)
    if k.security_protocol.startswith("SASL"):
        mech = (k.sasl_mechanism or "PLAIN").upper()
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        if mech.startswith("SCRAM") or mech == "PLAIN":
            return faust.SASLCredentials(username=k.sasl_username or "", password=password, mechanism=mech,
                                         ssl_context=context)
        raise ValueError(f"SASL mechanism {mech} is not supported by faust agents")
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def make_app(settings: Settings, app_id: str, *, data_dir: str | None = None, **overrides: Any) -> faust.App:
    """A faust app on the ModelBus broker with in-memory tables recovered from their changelogs."""
    k = settings.kafka
    datadir = Path(data_dir or settings.data_dir / "faust" / app_id)
    datadir.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = dict(
        broker=broker_url(settings),
        broker_credentials=broker_credentials(settings),
        store="memory://",                         # state is rebuilt from the changelog on every start
        topic_partitions=1,
        topic_replication_factor=k.replication_factor,
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=k.heartbeat_interval_ms / 1000,
        broker_max_poll_interval=k.max_poll_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        producer_acks=-1,
        # On a graceful stop (SIGTERM, a rebalance) wait for the events in hand and commit their offsets;
        # without it a stop within the commit interval replays what was already applied to the tables.
        stream_wait_empty=True,
        # A restarted broker without its log (the embedded in-memory one) has changelogs shorter than the offsets
        # the running tables applied; faust's check would crash the worker (ConsistencyError). The tables keep
        # what they know, and the deployer rebuilds a missing champion from durable state (consumers/champion.py).
        recovery_consistency_check=False,
    )
    if k.faust_single_record_batches:
        conf["producer_max_batch_size"] = 1   # aiokafka always admits a batch's first record

    conf.update(overrides)
    return faust.App(f"{k.topic_prefix}.{app_id}", **conf)


def faust_worker(app: faust.App, settings: Settings, **options: Any) -> faust.Worker:
    """The worker that runs ``app``, with the recovery watchdog beside it (``infra.kafka.faust_recovery``)."""
    from infra.kafka.faust_recovery import RecoveryWatchdog

    return faust.Worker(app, RecoveryWatchdog(app, settings.kafka.faust_recovery_stall_s), **options)


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    """A topic read as bytes: decoding happens in ``envelopes`` so poison never crashes the agent."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=partitions)


class EdgeDecoder:
    """Decodes faust events into Envelopes; undecodable, unexpected or poison events go to ``<topic>.dlq``."""

    def __init__(self, settings: Settings, group: str, producer: EventProducer | None = None,
                 expected_types: set[str] | None = None):
        self.codec = make_codec(settings)
        self.group = group
        self.producer = producer or EventProducer(settings, name=f"{group}.dlq", codec=self.codec)
        self.edge = Edge(settings, self.codec, expected_types)
        self.dead_lettered = 0
        self.max_bytes = settings.kafka.max_message_bytes
        self.legacy_framing = 0

    def _decode(self, event: faust.EventT) -> tuple[Envelope | None, tuple[str, BaseException] | None]:
        """The envelope, or why the event is refused (DLQ reason, error)."""
        msg = event.message
        raw = event.value
        value: bytes | None = raw if isinstance(raw, (bytes, bytearray)) else msg.value
        too_big = oversized(value, msg.key if isinstance(msg.key, bytes) else None, None, self.max_bytes)
        if too_big is not None:
            return None, ("oversized", EventTooLarge(too_big))
        try:
            env = self.edge.envelope(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                                     value=value, timestamp_ms=int((msg.timestamp or 0) * 1000),
                                     headers=headers_dict(msg.headers))
        except SerializationError as exc:
            return None, (refusal_reason(exc), exc)
        self.legacy_framing += env.legacy_framing
        return env, None

    def decode(self, event: faust.EventT) -> Envelope | None:
        """For callers outside an event loop: a refused event is dead-lettered here, synchronously."""
        env, refused = self._decode(event)
        if refused is not None:
            self.dead_letter(event, *refused)
        return env

    def copy_headers(self, event: faust.EventT, env: Envelope) -> list[tuple[str, bytes]]:
        """CloudEvents headers for a copy of a decoded event that an agent writes on (the search inbox)."""
        return list(event_headers(self.codec.writer_of(event.message.value), env.value).items())

    def dead_letter(self, event: faust.EventT, reason: str, exc: BaseException) -> None:
        msg = event.message
        key = msg.key if isinstance(msg.key, (bytes, bytearray)) or msg.key is None else str(msg.key).encode()
        send_to_dlq(self.producer, topic=msg.topic, partition=msg.partition, offset=msg.offset, key=key,
                    value=msg.value, reason=reason, error=exc, group=self.group,
                    original_headers=headers_dict(msg.headers))
        self.producer.flush(30)   # durable before faust acks (commits) the source event
        self.dead_lettered += 1
        log.warning("%s: dead-lettered %s[%s]@%s: %s", self.group, msg.topic, msg.partition, msg.offset, exc)

    async def dead_letter_async(self, event: faust.EventT, reason: str, exc: BaseException) -> None:
        """``dead_letter`` off the event loop: its flush may wait up to 30 s, longer than the group's session
        timeout, and faust must keep heartbeating meanwhile. The agent awaits it before its next event, so the
        source event is still acknowledged only after its dead letter is durable."""
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self.dead_letter, event, reason, exc))

    async def settle(self, event: faust.EventT, outcome: Outcome) -> None:
        """Act on the outcome policy's verdict for one event (only a dead letter needs work here)."""
        if outcome.action == DEAD_LETTER:
            await self.dead_letter_async(event, outcome.reason, outcome.error or RuntimeError("dead-lettered"))

    async def envelopes(self, stream) -> AsyncIterator[tuple[faust.EventT, Envelope]]:
        """Iterate a raw stream as (event, envelope); refused events are dead-lettered and skipped."""
        async for event in stream.events():
            env, refused = self._decode(event)
            if env is not None:
                yield event, env
            elif refused is not None:
                await self.dead_letter_async(event, *refused)
