"""Fault injection for crash tests: ``MODELBUS_FAULT=<point>`` kills the process at that point.

Crash-safety claims (e.g. "a sink killed between insert and commit stores no
duplicates") are only worth something when a test really kills a real process
at the worst moment. Code marks such moments with ``maybe_fault("<module>.<point>")``;
the variable is read once per process, and with it unset the call is a dict lookup.
This is the one documented exception to "settings only": a test harness switch,
never a behaviour users configure.
"""

from __future__ import annotations

import logging
import os
import signal
from functools import lru_cache

log = logging.getLogger("modelbus.faults")

ENV = "MODELBUS_FAULT"


@lru_cache(maxsize=1)
def _armed() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def maybe_fault(point: str) -> None:
    """SIGKILL this process if ``point`` is armed (no cleanup, no flush: a real crash)."""
    if point in _armed():
        log.critical("fault injection: killing pid %d at %s", os.getpid(), point)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
