"""One shape for every background loop, and the supervision rule in one place.

A `Service` has `start`/`stop` (both idempotent) and a `run_once` that does
one pass and returns a `Pass`: what it did (each service's counts) and how
long to wait before the next (`wait_s`, seconds; `wake()` cuts the wait
short). Tests drive `run_once` directly and read its result; in production
a thread loops around it under one rule (River's `startstop` services and
procrastinate's supervised side tasks are the models):

- an expected outage (`DatabaseError`, `BrokerError`) is logged as a warning
  and retried with a growing wait;
- an unexpected error is logged with its traceback and what the service was
  doing (`self.doing`); the loop goes on. The item that caused it is the
  service's business: `run_once` fails that item rather than retrying it
  for ever (see the status writer);
- after `Supervision.max_failures` failures in a row, or any
  `BaseException` that is not an `Exception`, the loop cannot go on: it
  calls `on_fatal`, which stops the instance with a non-zero exit. A
  service never dies in silence.

Stop: `stop()` ends the loop and waits (up to its timeout) for the pass in
flight to return; only then does `on_stop` release what the service holds,
so `on_stop` never runs beside a pass. When the pass outlives the timeout
(a hung connection), `stop` logs it and returns, and `on_stop` runs in the
loop's own thread once that pass returns; the same when `stop` is called
from inside a pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tasker import defaults
from tasker.exceptions import BrokerError, DatabaseError

log = logging.getLogger(__name__)

Fatal = Callable[[str], None]
"""Called once when a service cannot go on: the reason, for the log and exit."""

InstanceId = Callable[[], int]
"""This instance's row id. A getter, not an int: services are built before
the instance registers, and it registers again (a new id) when its row was
deleted; it raises `TaskerError` before the first registration."""


@dataclass(frozen=True)
class Supervision:
    """How a service's loop is supervised (one per instance, shared)."""

    on_fatal: Fatal
    max_failures: int = defaults.RECONNECT_RETRIES  # failures in a row before `on_fatal`
    retry_s: float = defaults.RECONNECT_INTERVAL_S  # first wait after a failure (seconds)


@dataclass(frozen=True)
class Pass:
    """What one pass did; services extend it with their counts. The loop
    waits `wait_s` seconds (or until `wake()`) before the next pass."""

    wait_s: float


class Service:
    """Base of every loop of an instance; subclasses implement `run_once`."""

    name = "service"

    def __init__(self, supervision: Supervision) -> None:
        self.supervision = supervision
        self.doing = "starting"
        self.failures = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False  # `stop` was called (on_stop runs once)
        self._stop_left = False  # `on_stop` is left to the loop's thread
        self._loop_done = False  # the loop's thread has left its last pass

    @property
    def retry_s(self) -> float:
        return self.supervision.retry_s

    # --- what subclasses implement ------------------------------------------

    def run_once(self) -> Pass:
        """One pass; returns what it did and the wait before the next one."""
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
            self._loop_done = False
            self._thread = threading.Thread(
                target=self._loop, name=f"tasker-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop after the pass in flight (waiting up to `timeout`
        seconds for it), then `on_stop`, as the module says. Idempotent,
        safe before `start` and from any thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            first, self._stopped = not self._stopped, True
            self._stopping.set()
            self._wake.set()
        if not first:
            return
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not self._leave_stop_to(thread):
            self.on_stop()  # also when only driven by run_once (tests)

    def _leave_stop_to(self, thread: threading.Thread) -> bool:
        """True when `thread` still runs a pass: it runs `on_stop` when that returns."""
        with self._lock:
            if self._loop_done:
                return False
            self._stop_left = True
        if thread is not threading.current_thread():
            log.warning("%s: a pass still runs after the stop timeout (%s); releasing "
                        "its resources when it returns", self.name, self.doing,
                        extra={"action": "stop_timeout"})  # fmt: skip
        return True

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
        try:
            while not self._stopping.is_set():
                # Cleared before the pass: a wake-up during the pass is never lost.
                self._wake.clear()
                wait = self.supervised_pass()
                if wait is None:
                    return
                self._wake.wait(wait)
        finally:
            self._loop_ended()

    def _loop_ended(self) -> None:
        # Marks the thread done under the lock `_leave_stop_to` reads, so
        # `on_stop` runs exactly once: here or in `stop`, never both.
        with self._lock:
            left, self._stop_left = self._stop_left, False
            self._loop_done = True
        if left:
            self.on_stop()

    def supervised_pass(self) -> float | None:
        """`run_once` under the supervision rule; the wait (seconds) before
        the next pass, or None when the loop must end."""
        try:
            wait = self.run_once().wait_s
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
        most = self.supervision.max_failures
        if self.failures > most:
            if isinstance(exc, (DatabaseError, BrokerError)):
                what = "database" if isinstance(exc, DatabaseError) else "broker"
                why = f"gave up on the {what} after {most} retries"
            else:
                why = f"failed {self.failures} times in a row"
            self._give_up(f"{self.name} {why} while {self.doing}: {exc}")
            return None
        extra = {"action": f"{self.name}_failed", "try": self.failures}
        if expected:
            log.warning("%s failed while %s (try %d of %d): %s", self.name, self.doing,
                        self.failures, most, exc, extra=extra)  # fmt: skip
        else:
            log.exception("%s failed while %s (try %d of %d)", self.name, self.doing,
                          self.failures, most, extra=extra)  # fmt: skip
        return min(5.0, self.retry_s * (1 + 0.5 * (self.failures - 1)))

    def _give_up(self, reason: str) -> None:
        self._stopping.set()
        self.supervision.on_fatal(reason)
