"""The one outcome policy: the same errors give the same outcome through the thread entry and the event-loop entry.

``ConsumerRunner`` runs handlers through ``handle``; the faust agents (deployer, search
coordinator) through ``handle_async``. One table, both entries, no broker needed.
"""

from __future__ import annotations

import asyncio

import pytest

from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable
from infra.errors import DeliveryError, FatalError, PoisonEvent, SkipEvent
from infra.kafka.envelope import Envelope
from infra.kafka.outcome import (
    DEAD_LETTER,
    DONE,
    REASON_EXHAUSTED,
    REASON_POISON,
    RETRY,
    SKIP,
    Outcome,
    RetryPolicy,
    handle,
    handle_async,
    is_transient,
)
from infra.storage import StorageUnavailable
from serving.errors import ServerUnavailable

POLICY = RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.04)
ENV = Envelope(key="k", value={}, event_type="DriftDetected", topic="t", partition=0, offset=7, event_id="e1")


def _failing(errors: list[BaseException]):
    """A handler raising ``errors`` in turn, then returning; it records the attempt numbers it was given."""
    seen: list[tuple[int, bool]] = []

    def step(env: Envelope) -> None:
        seen.append((env.attempt, env.last_attempt))
        if len(seen) <= len(errors):
            raise errors[len(seen) - 1]
    return step, seen


def _run(entry: str, step, **kw) -> Outcome:
    waits: list[float] = []
    if entry == "sync":
        return handle(step, ENV, POLICY, wait=lambda s: waits.append(s) or False, stage="test", **kw)

    async def coro(env):
        step(env)

    async def sleep(s):
        waits.append(s)
    return asyncio.run(handle_async(coro, ENV, POLICY, stage="test", sleep=sleep, **kw))


# errors raised in turn → (action, DLQ reason, attempts made)
TABLE = {
    "returns": ([], DONE, "", 1),
    "skip": ([SkipEvent("dup")], SKIP, "", 1),
    "poison": ([PoisonEvent("bad")], DEAD_LETTER, REASON_POISON, 1),
    "error, then passes": ([RuntimeError("x")], DONE, "", 2),
    "error every time": ([RuntimeError("x")] * 5, DEAD_LETTER, REASON_EXHAUSTED, 3),
    "skip on a retry": ([RuntimeError("x"), SkipEvent("dup")], SKIP, "", 2),
    # a dependency down for longer than max_attempts: never dead-lettered, handled once it is back
    "storage down 5 tries": ([StorageUnavailable("s3 slow down")] * 5, DONE, "", 6),
    "clickhouse down": ([ClickHouseUnavailable("refused")] * 4, DONE, "", 5),
    "clickhouse busy code": ([ClickHouseError("Code: 241. memory", 241)] * 4, DONE, "", 5),
    "triton down": ([ServerUnavailable("unreachable")] * 4, DONE, "", 5),
    "broker did not ack": ([DeliveryError("timed out")] * 4, DONE, "", 5),
    "clickhouse refuses the data": ([ClickHouseError("Code: 27. cannot parse", 27)] * 5, DEAD_LETTER,
                                    REASON_EXHAUSTED, 3),
}


@pytest.mark.parametrize("entry", ["sync", "async"])
@pytest.mark.parametrize("case", list(TABLE))
def test_every_runtime_entry_gives_the_table_s_outcome(entry, case):
    errors, action, reason, attempts = TABLE[case]
    step, seen = _failing(errors)
    outcome = _run(entry, step)
    assert (outcome.action, outcome.reason, len(seen)) == (action, reason, attempts)
    assert [n for n, _ in seen] == list(range(1, attempts + 1))
    assert [last for _, last in seen] == [n >= POLICY.max_attempts for n in range(1, attempts + 1)]
    if action == DEAD_LETTER:
        assert outcome.error is errors[attempts - 1]


@pytest.mark.parametrize("entry", ["sync", "async"])
def test_fatal_errors_escape_so_the_runtime_stops_without_committing(entry):
    step, seen = _failing([RuntimeError("x"), FatalError("disk full")])
    with pytest.raises(FatalError, match="disk full"):
        _run(entry, step)
    assert len(seen) == 2


@pytest.mark.parametrize("entry", ["sync", "async"])
def test_the_stage_error_callback_sees_each_failure_and_may_change_the_outcome(entry):
    calls: list[tuple[int, str]] = []

    def on_error(env, exc, outcome):
        calls.append((env.attempt, outcome.action))
        return Outcome.skip(exc) if env.attempt == 2 else None

    step, seen = _failing([RuntimeError("a"), RuntimeError("b"), RuntimeError("c")])
    outcome = _run(entry, step, on_error=on_error)
    assert outcome.action == SKIP and calls == [(1, RETRY), (2, RETRY)] and len(seen) == 2


def test_backoff_doubles_and_is_capped():
    delays = [POLICY.decide(StorageUnavailable("x"), n).delay_s for n in range(1, 6)]
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_a_stop_during_a_retry_wait_leaves_the_event_uncommitted():
    step, seen = _failing([RuntimeError("x")] * 3)
    with pytest.raises(FatalError, match="awaits a retry"):
        handle(step, ENV, POLICY, wait=lambda s: True, stage="test")
    assert len(seen) == 1


def test_transience_is_the_error_s_own_answer():
    assert is_transient(StorageUnavailable("x")) and is_transient(DeliveryError("x"))
    assert not is_transient(RuntimeError("x")) and not is_transient(PoisonEvent("x"))
    assert not is_transient(ClickHouseError("Code: 60. unknown table", 60))


@pytest.mark.parametrize("bad", [dict(max_attempts=0), dict(backoff_s=-1), dict(backoff_s=2, max_backoff_s=1)])
def test_a_policy_that_cannot_work_is_refused(bad):
    with pytest.raises(ValueError, match="bad retry policy"):
        RetryPolicy(**bad)
