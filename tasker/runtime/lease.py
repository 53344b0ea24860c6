"""The master lease as this instance knows it: which term it may act under, until when.

The elector renews it each beat and, when a renewal came too late, says so
with `lapse()`; the master-only services (dispatch, rescue, periodic
inserts, maintenance) ask `term()` before acting (a pure read: an untrusted
lease reads as None, changing nothing) and `demote()` when the database
refused a fenced write. The lease is trusted
only until a fraction of `master_out_of_date` has passed since the start of
its last successful renewal (River's elector trusts its lease the same
way), so a master stops acting before anybody else may take over; the
term fence in the database catches what slips through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tasker import defaults

log = logging.getLogger(__name__)


def trust_deadline(attempt_started: float, lease_ms: int, margin: float) -> float:
    """Monotonic time (s) after which a master must stop acting on a renewal."""
    return attempt_started + lease_ms / 1000 * (1 - margin)


class Lease:
    """Thread-safe: written by the elector, read by every master-only service."""

    def __init__(
        self,
        *,
        margin: float = defaults.LEASE_SAFETY_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.margin = margin
        self.clock = clock
        self.lease_ms = defaults.MASTER_OUT_OF_DATE_MS
        self._lock = threading.Lock()
        self._term: int | None = None
        self._deadline = 0.0
        self._on_lost: list[Callable[[int], None]] = []

    def on_lost(self, callback: Callable[[int], None]) -> None:
        """Call `callback(term)` whenever a term ends for us (demotion, resignation)."""
        self._on_lost.append(callback)

    def term(self) -> int | None:
        """Our term while the lease can be trusted, else None. A pure read:
        a lapsed term is demoted only by `lapse()`."""
        with self._lock:
            if self._term is not None and self.clock() < self._deadline:
                return self._term
            return None

    def lapse(self) -> int | None:
        """Demote a term we hold whose trust deadline has passed (the
        elector calls this each beat); returns that term, or None."""
        with self._lock:
            term = self._term
            if term is None or self.clock() < self._deadline:
                return None
        return term if self.demote(term, "lease not renewed in time") else None

    def renewed(self, term: int, attempt_started: float, lease_ms: int) -> int | None:
        """A successful renewal that began at `attempt_started` (monotonic s).
        Returns the term we held before when it differs (None otherwise)."""
        deadline = trust_deadline(attempt_started, lease_ms, self.margin)
        with self._lock:
            old, self._term, self._deadline = self._term, term, deadline
            self.lease_ms = lease_ms
        if old is not None and old != term:
            self._lost(old)
        return old

    def demote(self, term: int, why: str) -> bool:
        """Stop acting as master for `term` (idempotent); True when it was ours."""
        with self._lock:
            if self._term != term:
                return False
            self._term, self._deadline = None, 0.0
        log.warning("no longer master (term %s): %s", term, why, extra={"action": "demoted"})
        self._lost(term)
        return True

    def give_up(self) -> int | None:
        """Forget the term at once (resignation); returns it, or None."""
        with self._lock:
            term, self._term, self._deadline = self._term, None, 0.0
        if term is not None:
            self._lost(term)
        return term

    def _lost(self, term: int) -> None:
        for callback in self._on_lost:
            callback(term)
