"""The one outcome policy: what becomes of an event once its handler returned or raised.

Every runtime that handles events (``ConsumerRunner``, the faust agents of the deployer
and the search coordinator) runs its handler through ``handle`` (threads) or
``handle_async`` (an event loop), so the same error gives the same outcome everywhere:

* returns                                   → ``done``
* ``SkipEvent``                             → ``skip`` (nothing to do; committed like done)
* ``PoisonEvent``                           → ``dead-letter``, reason ``poison``
* ``FatalError``                            → raised: the runtime stops without committing the event
* an error whose ``is_transient`` is true   → retried with capped backoff for as long as it takes
  (a dependency is down: dead-lettering would lose events an outage did not spoil)
* anything else                             → retried with backoff; after ``max_attempts`` →
  ``dead-letter``, reason ``retries-exhausted``

``is_transient`` is a class attribute (or property) of the error: ``StorageUnavailable``,
``ClickHouseUnavailable``, ``ServerUnavailable``, ``DeliveryError`` and busy-server ClickHouse
codes say true. Each attempt gets its number through ``Envelope.attempt``, so a handler can
tell its last try (``Envelope.last_attempt``) without counting for itself.

Each stage may pass an error callback (as quix-streams does): ``on_error(env, exc, outcome)``
sees every failure with the policy's outcome and may return another one (e.g. ``Outcome.skip``
to drop what the stage knows is harmless) or ``None`` to keep it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from infra.errors import FatalError, PoisonEvent, SkipEvent
from infra.kafka.envelope import Envelope

log = logging.getLogger("modelbus.kafka.outcome")

DONE, SKIP, RETRY, DEAD_LETTER = "done", "skip", "retry", "dead-letter"
REASON_POISON, REASON_EXHAUSTED = "poison", "retries-exhausted"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The policy's verdict on one attempt. ``reason`` is the DLQ reason header; ``delay_s`` the wait before a retry."""

    action: str
    reason: str = ""
    delay_s: float = 0.0
    error: BaseException | None = None

    @classmethod
    def skip(cls, error: BaseException | None = None) -> Outcome:
        return cls(SKIP, error=error)


ErrorCallback = Callable[[Envelope, BaseException, Outcome], "Outcome | None"]


def is_transient(exc: BaseException) -> bool:
    """Whether the error says a dependency is unavailable for now (the same call may succeed unchanged later)."""
    return bool(getattr(exc, "is_transient", False))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5          # attempts of an event failing with an error that is not transient
    backoff_s: float = 0.5         # first delay; doubles per attempt
    max_backoff_s: float = 30.0    # cap of the delay (transient errors retry at this pace without bound)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"bad retry policy: {self}")

    def decide(self, exc: BaseException, attempt: int) -> Outcome:
        """The outcome of attempt number ``attempt`` (1-based) that raised ``exc``; ``FatalError`` never gets here."""
        if isinstance(exc, SkipEvent):
            return Outcome(SKIP, error=exc)
        if isinstance(exc, PoisonEvent):
            return Outcome(DEAD_LETTER, REASON_POISON, error=exc)
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** min(attempt - 1, 30)))
        if is_transient(exc) or attempt < self.max_attempts:
            return Outcome(RETRY, delay_s=delay, error=exc)
        return Outcome(DEAD_LETTER, REASON_EXHAUSTED, error=exc)


def _settle(env: Envelope, exc: BaseException, policy: RetryPolicy, on_error: ErrorCallback | None,
            stage: str) -> Outcome:
    if isinstance(exc, FatalError):
        raise exc
    outcome = policy.decide(exc, env.attempt)
    if on_error is not None:
        outcome = on_error(env, exc, outcome) or outcome
    if outcome.action == RETRY:
        log.warning("%s: %s attempt %d failed (%s: %s); retrying in %.1fs", stage, env.coordinates, env.attempt,
                    type(exc).__name__, exc, outcome.delay_s)
    elif outcome.action == DEAD_LETTER:
        log.warning("%s: %s (%s) dead-lettered after attempt %d (%s): %s", stage, env.coordinates, env.event_type,
                    env.attempt, outcome.reason, exc)
    else:
        log.debug("%s: %s: %s", stage, env.coordinates, outcome.action)
    return outcome


def _attempt(env: Envelope, n: int, policy: RetryPolicy) -> Envelope:
    if env.attempt == n and env.max_attempts == policy.max_attempts:   # the edge built it so: no copy per event
        return env
    return dataclasses.replace(env, attempt=n, max_attempts=policy.max_attempts)


def handle(handler: Callable[[Envelope], object], env: Envelope, policy: RetryPolicy, *,
           wait: Callable[[float], bool], stage: str, on_error: ErrorCallback | None = None,
           on_retry: Callable[[Outcome], None] | None = None) -> Outcome:
    """Run ``handler`` until the policy settles the event: done, skip or dead-letter (``FatalError`` is raised).

    ``wait(seconds)`` sleeps before a retry and returns True when the runtime is stopping, which
    turns the pending retry into a ``FatalError`` (the event stays uncommitted and is redelivered).
    """
    n = 0
    while True:
        n += 1
        current = _attempt(env, n, policy)
        try:
            handler(current)
            return Outcome(DONE)
        except Exception as exc:  # noqa: BLE001 - the policy classifies every error; FatalError is re-raised
            outcome = _settle(current, exc, policy, on_error, stage)
        if outcome.action != RETRY:
            return outcome
        if on_retry is not None:
            on_retry(outcome)
        if wait(outcome.delay_s):
            raise FatalError(f"{stage}: stopping while {env.coordinates} awaits a retry") from outcome.error


async def handle_async(handler: Callable[[Envelope], Awaitable[object]], env: Envelope, policy: RetryPolicy, *,
                       stage: str, on_error: ErrorCallback | None = None,
                       on_retry: Callable[[Outcome], None] | None = None,
                       sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> Outcome:
    """``handle`` for an event loop: the handler is a coroutine function, retries wait with ``sleep``."""
    n = 0
    while True:
        n += 1
        current = _attempt(env, n, policy)
        try:
            await handler(current)
            return Outcome(DONE)
        except Exception as exc:  # noqa: BLE001 - the policy classifies every error; FatalError is re-raised
            outcome = _settle(current, exc, policy, on_error, stage)
        if outcome.action != RETRY:
            return outcome
        if on_retry is not None:
            on_retry(outcome)
        await sleep(outcome.delay_s)
