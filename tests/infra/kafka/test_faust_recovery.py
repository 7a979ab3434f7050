"""The recovery watchdog's rule, on a stand-in for faust's Recovery state (the stalled partition itself is
reproduced on the real stack in tests/consumers/test_deployer_champion.py)."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from infra.kafka.faust_recovery import RecoveryWatchdog, stalled_partitions

STUCK, FED, DONE = TP("cl", 0), TP("cl", 1), TP("cl", 2)


def _recovery(started_at=100.0, in_recovery=True):
    return SimpleNamespace(in_recovery=in_recovery, _recovery_started_at=started_at,
                           active_highwaters={STUCK: 0, FED: 9, DONE: 4},
                           active_offsets={STUCK: -1, FED: 5, DONE: 4},
                           _active_events_received_at={FED: 150.0})


def test_only_a_partition_owing_records_that_delivered_none_for_the_stall_is_given_up():
    rec = _recovery()
    assert stalled_partitions(rec, stall_s=60, now=159.0) == {}               # recovery younger than the stall
    assert stalled_partitions(rec, stall_s=60, now=161.0) == {STUCK: (-1, 0)}  # FED got an event 11 s ago
    assert stalled_partitions(rec, stall_s=60, now=211.0) == {STUCK: (-1, 0), FED: (5, 9)}
    assert stalled_partitions(_recovery(in_recovery=False), stall_s=60, now=500.0) == {}
    assert stalled_partitions(_recovery(started_at=None), stall_s=60, now=500.0) == {}


def test_check_marks_the_stalled_partitions_recovered_and_counts_them(caplog):
    rec = _recovery()
    dog = RecoveryWatchdog(SimpleNamespace(tables=SimpleNamespace(recovery=rec)), stall_s=60)
    assert dog.check(now=161.0) == {STUCK: (-1, 0)}
    assert rec.active_offsets == {STUCK: 0, FED: 5, DONE: 4} and dog.given_up == 1
    assert "cl[0] reports records up to offset 0 but delivered none" in caplog.text
    assert dog.check(now=162.0) == {}    # nothing owed any more: faust's loop ends recovery by itself
    assert dog.given_up == 1
