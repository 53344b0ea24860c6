"""One shape for every background loop, and the supervision rule in one place.

A `Service` has `start`/`stop` (both idempotent) and a `run_once` that does
one pass and returns how long to wait before the next (seconds; `wake()`
cuts the wait short). Tests drive `run_once` directly; in production a
thread loops around it under one rule (River's `startstop` services and
procrastinate's supervised side tasks are the models):

- an expected outage (`DatabaseError`, `BrokerError`) is logged as a warning
  and retried with a growing wait;
- an unexpected error is logged with its traceback and what the service was
  doing (`self.doing`); the loop goes on. The item that caused it is the
  service's business: `run_once` fails that item rather than retrying it
  for ever (see the status writer);
- after `max_failures` failures in a row, or any `BaseException` that is not
  an `Exception`, the loop cannot go on: it calls `on_fatal`, which stops
  the instance with a non-zero exit. A service never dies in silence.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tasker.exceptions import BrokerError, DatabaseError

log = logging.getLogger(__name__)

Fatal = Callable[[str], None]
"""Called once when a service cannot go on: the reason, for the log and exit."""


class Service:
    """Base of every loop of an instance; subclasses implement `run_once`."""

    name = "service"

    def __init__(
        self,
        *,
        on_fatal: Fatal,
        max_failures: int,
        retry_s: float,
    ) -> None:
        self.on_fatal = on_fatal
        self.max_failures = max_failures
        self.retry_s = retry_s
        self.doing = "starting"
        self.failures = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # --- what subclasses implement ------------------------------------------

    def run_once(self) -> float:
        """One pass; returns seconds to wait before the next one."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Release what the service holds, after its loop ended (in `stop`)."""

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a daemon thread (no-op when it already runs)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._loop, name=f"tasker-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop after its current pass, then `on_stop` (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
            first, self._stopped = not self._stopped, True
            self._stopping.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if first:  # also when only driven by run_once (tests)
            self.on_stop()

    def wake(self) -> None:
        """Run the next pass now instead of after the wait."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def alive(self) -> bool:
        """False when the loop was started and has ended without `stop`."""
        with self._lock:
            return self._thread is None or self._thread.is_alive()

    # --- the supervised loop ---------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the pass: a wake-up during the pass is never lost.
            self._wake.clear()
            wait = self.supervised_pass()
            if wait is None:
                return
            self._wake.wait(wait)

    def supervised_pass(self) -> float | None:
        """`run_once` under the supervision rule; None when the loop must end."""
        try:
            wait = self.run_once()
        except (DatabaseError, BrokerError) as exc:
            return self._failed(exc, expected=True)
        except Exception as exc:
            return self._failed(exc, expected=False)
        except BaseException as exc:
            self._give_up(f"{self.name} stopped by {type(exc).__name__} while {self.doing}")
            return None
        self.failures = 0
        return wait

    def _failed(self, exc: Exception, *, expected: bool) -> float | None:
        self.failures += 1
        if self.failures > self.max_failures:
            if isinstance(exc, (DatabaseError, BrokerError)):
                what = "database" if isinstance(exc, DatabaseError) else "broker"
                why = f"gave up on the {what} after {self.max_failures} retries"
            else:
                why = f"failed {self.failures} times in a row"
            self._give_up(f"{self.name} {why} while {self.doing}: {exc}")
            return None
        extra = {"action": f"{self.name}_failed", "try": self.failures}
        if expected:
            log.warning("%s failed while %s (try %d of %d): %s", self.name, self.doing,
                        self.failures, self.max_failures, exc, extra=extra)  # fmt: skip
        else:
            log.exception("%s failed while %s (try %d of %d)", self.name, self.doing,
                          self.failures, self.max_failures, extra=extra)  # fmt: skip
        return min(5.0, self.retry_s * (1 + 0.5 * (self.failures - 1)))

    def _give_up(self, reason: str) -> None:
        self._stopping.set()
        self.on_fatal(reason)
