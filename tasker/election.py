"""The heartbeat and the master lease: one beat per `instance_heartbeat`.

Each beat renews this instance's row and, when the instance is eligible,
takes or keeps the lease in one conditional UPDATE judged by the database
clock (`store.core_attempt_elect`). The master trusts its lease only until
a fraction of it has passed since the start of its last successful renewal
(`trust_deadline`), so it stops acting before anyone else may take over.
Master-only writes are fenced by the term besides.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasker import defaults, store
from tasker.exceptions import DatabaseError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """Cluster timings read from the core row each beat (milliseconds)."""

    master_out_of_date_ms: int = defaults.MASTER_OUT_OF_DATE_MS
    instance_heartbeat_ms: int = defaults.INSTANCE_HEARTBEAT_MS


def trust_deadline(attempt_started: float, lease_ms: int, margin: float) -> float:
    """Monotonic time after which a master must stop acting on a renewal."""
    return attempt_started + lease_ms / 1000 * (1 - margin)


def next_beat_s(
    timings: Timings, *, lease_expires_in_s: float | None, rand: Callable[[], float]
) -> float:
    """Delay to the next beat: the heartbeat with 10 % jitter, or sooner when
    a follower sees the current lease expire before then (fast fail-over)."""
    base = timings.instance_heartbeat_ms / 1000
    delay = base * (0.9 + 0.2 * rand())
    if lease_expires_in_s is not None:
        delay = min(delay, max(0.01, lease_expires_in_s + 0.02))
    return delay


class Elector:
    """Beats the instance row and holds the lease when eligible."""

    def __init__(
        self,
        app: object,
        *,
        instance_id: Callable[[], int],
        eligible: bool,
        fqdn: str,
        on_elected: Callable[[int], None] = lambda term: None,
        on_lost: Callable[[int], None] = lambda term: None,
        on_forgotten: Callable[[], None] = lambda: None,
        fatal: Callable[[str], None] = lambda message: None,
        topics: Callable[[], dict[str, dict[str, int]]] | None = None,
        max_failures: int = defaults.RECONNECT_RETRIES,
        retry_s: float = defaults.RECONNECT_INTERVAL_S,
        margin: float = defaults.LEASE_SAFETY_MARGIN,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.instance_id = instance_id
        self.eligible = eligible
        self.fqdn = fqdn
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.on_forgotten = on_forgotten
        self.fatal = fatal
        self.topics = topics
        self._topics_written: dict[str, dict[str, int]] | None = None
        self.max_failures = max_failures
        self.retry_s = retry_s
        self.failures = 0
        self.margin = margin
        self.rand = rand
        self.timings = Timings()
        self._lock = threading.Lock()
        self._beating = threading.Lock()  # one beat at a time, and none during step_down
        self._term: int | None = None
        self._deadline = 0.0

    # --- state --------------------------------------------------------------

    def current_term(self) -> int | None:
        """Our term while the lease can be trusted, else None (and we demote)."""
        with self._lock:
            term = self._term
            if term is None:
                return None
            if time.monotonic() < self._deadline:
                return term
        self.demote(term, "lease not renewed in time")
        return None

    def demote(self, term: int, why: str) -> None:
        """Stop acting as master for `term` (idempotent)."""
        with self._lock:
            if self._term != term:
                return
            self._term = None
            self._deadline = 0.0
        log.warning("no longer master (term %s): %s", term, why, extra={"action": "demoted"})
        self.on_lost(term)

    # --- the beat -----------------------------------------------------------

    def run_once(self) -> float:
        """One beat; returns seconds until the next one."""
        with self._beating:
            return self._beat()

    def _beat(self) -> float:
        started = time.monotonic()
        try:
            with self.app.transaction() as conn:  # type: ignore[attr-defined]
                topics = self.topics() if self.topics is not None else None
                changed = topics if topics != self._topics_written else None
                if store.instance_beat(conn, instance_id=self.instance_id(), topics=changed):
                    self._topics_written = topics
                else:
                    self.on_forgotten()
                won = None
                if self.eligible:
                    won = store.core_attempt_elect(
                        conn, instance_id=self.instance_id(), fqdn=self.fqdn
                    )
                core = None if won is not None else store.core_get(conn)
        except DatabaseError as exc:
            self.failures += 1
            self.current_term()  # demotes once the trust deadline has passed
            if self.failures > self.max_failures:
                self.fatal(f"gave up on the database after {self.max_failures} retries: {exc}")
                return self.retry_s
            log.warning(
                "heartbeat failed (try %d of %d): %s",
                self.failures,
                self.max_failures,
                exc,
                extra={"action": "beat_failed"},
            )
            return min(self.retry_s, self.timings.instance_heartbeat_ms / 1000)
        self.failures = 0
        if won is not None:
            self.timings = Timings(won.master_out_of_date, won.instance_heartbeat)
            self._renewed(won.term, started)
            return next_beat_s(self.timings, lease_expires_in_s=None, rand=self.rand)
        assert core is not None
        self.timings = Timings(core.master_out_of_date, core.instance_heartbeat)
        if self._term is not None:
            self.demote(self._term, f"instance {core.master_instance_id} holds the lease")
        expires = None
        if self.eligible and core.master_instance_id is not None:
            age = (core.db_now - core.updated).total_seconds()
            expires = core.master_out_of_date / 1000 - age
        elif self.eligible:
            expires = 0.0
        return next_beat_s(self.timings, lease_expires_in_s=expires, rand=self.rand)

    def _renewed(self, term: int, started: float) -> None:
        deadline = trust_deadline(started, self.timings.master_out_of_date_ms, self.margin)
        with self._lock:
            old = self._term
            self._term = term
            self._deadline = deadline
        if old != term:
            if old is not None:
                self.on_lost(old)
            log.info(
                "elected master, term %s (%s)",
                term,
                self.fqdn,
                extra={"action": "elected", "term": term},
            )
            self.on_elected(term)

    def wait_beat(self) -> None:
        """Return once no beat is in progress."""
        with self._beating:
            pass

    def step_down(self) -> bool:
        """Stop racing and give the lease up at once (graceful stop); later
        beats only renew the instance row, so running executions stay ours."""
        with self._beating:
            self.eligible = False
            return self._resign()

    def _resign(self) -> bool:
        with self._lock:
            term, self._term, self._deadline = self._term, None, 0.0
        if term is None:
            return False
        try:
            with self.app.transaction() as conn:  # type: ignore[attr-defined]
                done = store.core_resign(conn, instance_id=self.instance_id(), term=term)
        except DatabaseError as exc:
            log.warning("could not resign: %s", exc, extra={"action": "resign_failed"})
            done = False
        log.info("resigned master, term %s", term, extra={"action": "resigned", "term": term})
        self.on_lost(term)
        return done
