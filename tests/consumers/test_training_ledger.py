"""The run ledger on a local store and on S3 (moto's real S3 API over HTTP): leases, takeovers, versions."""

from __future__ import annotations

import threading

import pytest

from consumers.training.ledger import Claim, Heartbeat, RunAborted, RunLedger
from infra.storage import open_store


@pytest.fixture
def store(store_on_each_backend):
    return store_on_each_backend


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_put_if_absent_has_exactly_one_winner(store):
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent("runs/r/attempts/1.json", f'{{"owner": {i}}}'.encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert list(store.list("runs/r/")) == ["runs/r/attempts/1.json"]   # no temp files left behind


def test_a_live_lease_is_waited_for_an_expired_one_taken_over(store):
    clock = Clock()
    ledger = RunLedger(store, lease_s=30, poll_s=0.01, clock=clock)
    a = ledger.acquire("run1", "a")
    assert a == Claim("run1", "a", 1, None)
    waits = []

    def abort_after_two_polls() -> bool:
        waits.append(1)
        return len(waits) > 2

    with pytest.raises(RunAborted, match="held by a"):   # b waits while a's lease is live
        ledger.acquire("run1", "b", should_abort=abort_after_two_polls)
    clock.t += 10
    assert ledger.renew(a)                                # a heartbeats...
    clock.t += 25
    with pytest.raises(RunAborted):                       # ...so 35 s after it started it is still alive
        ledger.acquire("run1", "b", should_abort=lambda: True)
    clock.t += 31                                         # a went silent for longer than lease_s
    b = ledger.acquire("run1", "b")
    assert (b.attempt, b.previous_owner) == (2, "a")
    assert not ledger.renew(a) and not ledger.still_owner(a)   # a learns it was replaced, and stops
    assert ledger.still_owner(b)


def test_a_released_run_is_taken_at_once_and_a_done_run_is_never_taken(store):
    ledger = RunLedger(store, lease_s=3600, poll_s=0.01, clock=Clock())
    a = ledger.acquire("run1", "a")
    ledger.release(a)
    b = ledger.acquire("run1", "b", should_abort=lambda: True)   # no wait: released
    assert b.attempt == 2
    ledger.mark_done("run1", model_name="churn", model_version=4)
    assert ledger.acquire("run1", "c", should_abort=lambda: True)["model_version"] == 4


def test_model_versions_are_distinct_under_concurrency_and_kept_by_a_restarted_run(store):
    ledger = RunLedger(store, lease_s=30)
    got: dict[str, int] = {}

    def allocate(run: str) -> None:
        got[run] = ledger.allocate_version("churn", run, owner=run)

    threads = [threading.Thread(target=allocate, args=(f"run{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == [1, 2, 3, 4, 5, 6]
    assert ledger.allocate_version("churn", "run3", owner="other") == got["run3"]   # same run, same version
    store.delete_prefix("runs/run4/")                     # crashed between claiming and recording
    assert ledger.allocate_version("churn", "run4", owner="other") == got["run4"]
    assert ledger.allocate_version("fraud", "run9", owner="x") == 1   # versions count per name


def test_heartbeat_thread_renews_and_notices_a_takeover(tmp_path):
    store = open_store(str(tmp_path / "artifacts"))
    ledger = RunLedger(store, lease_s=0.6, poll_s=0.01)
    claim = ledger.acquire("run1", "a")
    with Heartbeat(ledger, claim, interval_s=0.05) as hb:
        threading.Event().wait(0.9)                       # longer than lease_s: only the heartbeat keeps it
        assert ledger.holder("run1")[0] == 1 and not hb.lost.is_set()
        with pytest.raises(RunAborted):
            ledger.acquire("run1", "b", should_abort=lambda: True)
        store.put_if_absent("runs/run1/attempts/2.json", b'{"owner": "b", "created": 0}')
        assert hb.lost.wait(2.0)
