"""The heartbeat and the master lease: one beat per `instance_heartbeat`.

Protocol (DESIGN 4). Each beat renews this instance's row and, when the
instance is eligible, takes or keeps the lease in one conditional UPDATE on
`core` judged by the database clock (`store.core_attempt_elect`): ours
already, or `updated` older than `master_out_of_date`; the term grows by one
whenever the holder changes. The renewal is trusted until `Lease`'s
deadline, so a master that cannot renew stops acting before another may
take over; master-only writes are fenced by the term besides. Timings are
read from the core row each beat, so an operator can retune them live. A
follower that sees the lease about to expire beats early (fast fail-over);
a resign NOTIFY wakes it at once. On graceful stop the master resigns.

The same transaction reads the ids of this instance's running tasks that an
admin cancelled (`store.task_cancel_wanted`, one indexed look-up) and hands
them to `on_cancel`: abort reaches an execution within one beat, or at once
when a NOTIFY wakes the beat (DESIGN 7).

Each beat first demotes a term whose trust deadline has passed
(`Lease.lapse`): reading the lease never changes it, the elector does.

Before each beat the instance's health is checked: an instance whose
services stopped working must not look alive, so the beat gives up instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasker import defaults, store
from tasker.db import Database
from tasker.exceptions import DatabaseError
from tasker.retry import system_random
from tasker.runtime.lease import Lease
from tasker.runtime.service import InstanceId, Pass, Service, Supervision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """Cluster timings read from the core row each beat (milliseconds)."""

    master_out_of_date_ms: int = defaults.MASTER_OUT_OF_DATE_MS
    instance_heartbeat_ms: int = defaults.INSTANCE_HEARTBEAT_MS


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


@dataclass(frozen=True)
class Beat(Pass):
    """One beat: the term this instance holds after it (None: not master)."""

    term: int | None = None


class Elector(Service):
    """Beats the instance row and holds the lease when eligible."""

    name = "heartbeat"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        supervision: Supervision,
        *,
        instance_id: InstanceId,
        eligible: bool,
        fqdn: str,
        on_elected: Callable[[int], None] = lambda term: None,
        on_forgotten: Callable[[], None] = lambda: None,
        topics: Callable[[], dict[str, dict[str, int]]] = dict,
        health: Callable[[], str | None] = lambda: None,
        on_cancel: Callable[[list[tuple[int, int]]], None] | None = None,
        rand: Callable[[], float] = system_random,
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.lease = lease
        self.instance_id = instance_id
        self.eligible = eligible
        self.fqdn = fqdn
        self.on_elected = on_elected
        self.on_forgotten = on_forgotten
        self.topics = topics
        self.health = health
        self.on_cancel = on_cancel
        self.rand = rand
        self.timings = Timings()
        self._topics_written: dict[str, dict[str, int]] | None = None
        self._beating = threading.Lock()
        self.beat_at: float | None = None  # time.monotonic() of the last beat written

    def run_once(self) -> Beat:
        """One beat; the term held after it, and seconds until the next one."""
        with self._beating:  # none while `step_down` resigns
            wait = self._beat()
        return Beat(wait, self.lease.term())

    def _beat(self) -> float:
        problem = self.health()
        if problem is not None:  # never heartbeat while not working
            self.lease.give_up()
            self._give_up(problem)
            return self.retry_s
        self.lease.lapse()
        self.doing = "beating"
        started = time.monotonic()
        try:
            with self.database.transaction() as conn:
                topics = self.topics()
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
                cancels = None
                if self.on_cancel is not None:
                    cancels = store.task_cancel_wanted(conn, instance_id=self.instance_id())
        except DatabaseError:
            self.lease.lapse()
            raise
        self.beat_at = time.monotonic()
        if cancels and self.on_cancel is not None:
            self.on_cancel(cancels)
        if won is not None:
            self.timings = Timings(won.master_out_of_date, won.instance_heartbeat)
            self._renewed(won.term, started)
            return next_beat_s(self.timings, lease_expires_in_s=None, rand=self.rand)
        assert core is not None
        self.timings = Timings(core.master_out_of_date, core.instance_heartbeat)
        self.lease.lease_ms = core.master_out_of_date
        self.lease.lapse()
        held = self.lease.term()
        if held is not None:
            self.lease.demote(held, f"instance {core.master_instance_id} holds the lease")
        expires = None
        if self.eligible and core.master_instance_id is not None:
            age = (core.db_now - core.updated).total_seconds()
            expires = core.master_out_of_date / 1000 - age
        elif self.eligible:
            expires = 0.0
        return next_beat_s(self.timings, lease_expires_in_s=expires, rand=self.rand)

    def _renewed(self, term: int, started: float) -> None:
        old = self.lease.renewed(term, started, self.timings.master_out_of_date_ms)
        if old != term:
            log.info("elected master, term %s (%s)", term, self.fqdn,
                     extra={"action": "elected", "term": term})  # fmt: skip
            self.on_elected(term)

    def step_down(self) -> bool:
        """Stop racing and give the lease up at once (graceful stop); later
        beats only renew the instance row, so running executions stay ours."""
        with self._beating:
            self.eligible = False
            term = self.lease.give_up()
        if term is None:
            return False
        try:
            with self.database.transaction() as conn:
                done = store.core_resign(conn, instance_id=self.instance_id(), term=term)
        except DatabaseError as exc:
            log.warning("could not resign: %s", exc, extra={"action": "resign_failed"})
            return False
        if done:
            log.info("resigned master, term %s", term, extra={"action": "resigned", "term": term})
        else:  # another instance took the lease meanwhile: nothing to give up
            log.info("term %s had already ended; nothing to resign", term,
                     extra={"action": "resign_skipped", "term": term})  # fmt: skip
        return done
