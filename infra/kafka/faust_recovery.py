"""A watchdog for faust's table recovery: a changelog partition that never delivers what it reports.

Why: after the embedded broker restarts without its log, a changelog partition can report records
(its high watermark) that no fetch returns. faust then waits in recovery forever, logging "No event
received for active tp", and its agents decide nothing, on every later rebalance too (a second
deployer joining, a restarted one). Seen on tansu; Apache Kafka keeps its log and never gets here.

The watchdog gives such a partition up once no event arrived for ``stall_s`` since recovery started:
faust's own recovery loop then ends recovery and the agents run on with the state they hold. That
is safe for the agents built here because none trusts a table over durable state: the deployer
asks the Triton repository and ClickHouse for the champion before it gates (``consumers/champion.py``),
and the search coordinator's trials are idempotent on their event ids. Each partition given up is
logged as an error and counted in ``given_up``.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import faust
from faust import Service

log = logging.getLogger("modelbus.faust")

CHECK_EVERY_S = 5.0


def stalled_partitions(recovery: Any, stall_s: float, now: float) -> dict[Any, tuple[int, int]]:
    """Active changelog partitions owing records that delivered none for ``stall_s``: tp → (offset, highwater)."""
    started = recovery._recovery_started_at
    if not recovery.in_recovery or started is None or now - started < stall_s:
        return {}
    out = {}
    for tp, highwater in recovery.active_highwaters.items():
        offset = recovery.active_offsets.get(tp)
        if highwater is None or offset is None or highwater <= offset:
            continue
        last = recovery._active_events_received_at.get(tp)
        if last is None or now - last >= stall_s:
            out[tp] = (offset, highwater)
    return out


class RecoveryWatchdog(Service):
    """Runs beside the app in the faust worker (started with it, not after recovery, as app tasks are)."""

    def __init__(self, app: faust.App, stall_s: float, **kwargs: Any) -> None:
        self.app = app
        self.stall_s = stall_s
        self.given_up = 0
        super().__init__(**kwargs)

    def check(self, now: float | None = None) -> dict[Any, tuple[int, int]]:
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]  # TableManager has it; its ABC does not
        stalled = stalled_partitions(recovery, self.stall_s, monotonic() if now is None else now)
        for tp, (offset, highwater) in stalled.items():
            recovery.active_offsets[tp] = highwater     # faust's recovery loop sees nothing owed and ends
            self.given_up += 1
            log.error("table recovery: %s[%d] reports records up to offset %d but delivered none after offset %d "
                      "for %.0fs (a broker that lost its log?); giving the partition up as recovered: the tables "
                      "keep what they hold, and the deployer rebuilds its champion from Triton and ClickHouse",
                      tp.topic, tp.partition, highwater, offset, self.stall_s)
        return stalled

    @Service.timer(CHECK_EVERY_S)
    async def _watch(self) -> None:
        self.check()
