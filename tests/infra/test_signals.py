"""The shared SIGTERM/SIGINT handling every long-running ModelBus process uses."""

from __future__ import annotations

import os
import signal
import threading

from infra.signals import on_stop_signals


def test_signals_call_stop_and_restore_puts_the_previous_handlers_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    got: list[int] = []
    restore = on_stop_signals(got.append)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        restore()
    assert got == [signal.SIGTERM, signal.SIGINT]
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("restore", on_stop_signals(lambda _s: None)))
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is before
    result["restore"]()   # a no-op, and safe to call
    assert signal.getsignal(signal.SIGTERM) is before
