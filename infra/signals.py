"""One way for a long-running process to stop cleanly on SIGTERM / SIGINT.

Kubernetes and `modelbus down` send SIGTERM; a person sends SIGINT. Every
ModelBus process answers both the same way: finish the unit of work in hand,
make its outputs durable, then exit. Handlers can only be installed from the
main thread, so elsewhere (tests running a consumer in a thread) this is a
no-op and the caller's own ``stop()`` is the way out.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(stop: Callable[[int], None]) -> Callable[[], None]:
    """Call ``stop(signum)`` on SIGTERM/SIGINT; returns a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stop(signum))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
