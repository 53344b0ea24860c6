"""SIGTERM and SIGINT: the first asks for a graceful stop, a second for an immediate one.

Handlers only set flags (the stop runs in a thread of its own, never in a
signal handler). A signal to the whole process group means the same: the
children of process-isolated executions ignore it (see `isolation`), so
systemd's `KillMode=control-group` stop lets them finish within the grace.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Counts stop signals: `requested` after the first, `forced` after the second."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()
        self._count = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Install the handlers (main thread only; elsewhere this does nothing
        and returns False)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return True

    def restore(self) -> None:
        """Put the previous handlers back (an embedding program keeps its own)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            log.info("%s: stopping (again to stop at once)", name, extra={"action": "signal"})
            self.requested.set()
        else:
            log.warning("%s: stopping at once", name, extra={"action": "signal"})
            self.forced.set()
