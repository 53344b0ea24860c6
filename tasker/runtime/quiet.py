"""Which topics the dispatcher may leave alone at their `spec` tick: the idle
schedule of a master on PostgreSQL.

A master sweeps each topic on its `spec` (one claim statement a topic a
second by default) besides the NOTIFY wake-ups. While the listener holds a
live LISTEN, nearly every way a task becomes claimable says so at once: a
publish, a chain or group step, an admin retry or resume, and every end of
an execution (`free:`, which also covers a retry, a release, a hand-back and
a rescue). What does not notify is a time passing: a delayed task's
`exec_after`, a back-off, the end of a redelivery window. So once a sweep
found nothing left, the topic's next tick reads instead when its next task
falls due (`store.task_next_due`, one statement for every such topic, with
the paused topics in the same transaction) and the later ticks skip it until
then, until a NOTIFY names it, or for at most `IDLE_RECHECK_S` (what plain
SQL writes without `pg_notify` wait at worst). A tick when that time came
sweeps as before, so a delayed task starts at the same tick as it did.

A topic whose due tasks its sweep could not claim (no consumer serves it, a
per-key lock, a limit) is "blocked": it waits for any NOTIFY of freed
capacity or of an instance starting, or `IDLE_RECHECK_S`. Anything unsure
falls back to sweeping: the listener down (and every topic swept when it
comes back, since notifications were lost meanwhile), a change of term,
publishes awaiting their broker confirms (a refused one is undone and due
again at once). The embedded default (SQLite) has no NOTIFY and keeps
sweeping on `spec`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from tasker import defaults, store
from tasker.db import Database

QUIET_AFTER_S = 5.0
"""A topic rests only once no NOTIFY named it for this long (see `_busy`)."""


class Quiet:
    """Nothing is ever quiet: sweep every topic on its `spec` (no NOTIFY)."""

    def live(self) -> bool:
        return False

    def refresh_due(self, known: Iterable[str]) -> bool:
        """Whether the dispatcher should read the live instances now (it
        sweeps the topics `known`)."""
        return True

    def to_sweep(self, ticked: set[str], term: int) -> set[str]:
        """Of the topics whose `spec` tick came (not woken), those to sweep."""
        return ticked

    def swept(self, topics: Iterable[str], backlog: set[str], dispatched: int) -> None:
        """What a pass swept, which topics it left with work, how many went out."""

    def notified(self, payload: str) -> None:
        """A NOTIFY on the publish channel (any payload)."""

    def forget(self) -> None:
        """Know nothing: every topic is read again at its next tick."""


NEVER_QUIET = Quiet()


class QuietTopics(Quiet):
    """The idle schedule of the module (thread-safe: NOTIFYs arrive on the
    listener's thread, the rest on the dispatcher's)."""

    def __init__(
        self,
        database: Database,
        *,
        listening: Callable[[], bool],
        unsettled: Callable[[], bool],
        window_s: float,
        on_dispatched: Callable[[], None] = lambda: None,
        rated: Iterable[str] = (),
        recheck_s: float | None = None,  # default: defaults.IDLE_RECHECK_S
        quiet_after_s: float = QUIET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.listening = listening
        self.unsettled = unsettled  # publishes awaiting broker confirms
        self.window_s = window_s
        self.on_dispatched = on_dispatched  # tasks went out: the rescue watches again
        # A rate-limited topic whose allowance is spent sends nothing and is
        # swept again when the next claim is allowed (its next tick): never blocked.
        self.rated = set(rated)
        self.recheck_s = defaults.IDLE_RECHECK_S if recheck_s is None else recheck_s
        self.quiet_after_s = quiet_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # topic -> not swept at a tick before (monotonic)
        self._due: set[str] = set()  # read as due by the last probe, swept since
        self._blocked: set[str] = set()  # due, yet their sweep sent nothing
        self._unknown: set[str] = set()  # named by a publish NOTIFY: maybe a topic we do not sweep
        self._named: set[str] = set()  # named by a NOTIFY while a probe ran
        self._heard: dict[str, float] = {}  # topic -> its last NOTIFY (monotonic)
        self._term: int | None = None
        self._refresh_at = 0.0  # the next read of the live instances (monotonic)
        self.probes = 0  # next-due reads done (tests)

    def live(self) -> bool:
        return self.listening()

    def _busy(self, now: float) -> set[str]:
        """Topics a NOTIFY named within `quiet_after_s` (lock held): they are
        swept on `spec` as without this schedule. Resting a topic with
        traffic saved nothing and lengthened the tail of its start latency
        (bench.run's latency phase: p95 about twice as long)."""
        return {t for t, at in self._heard.items() if now - at < self.quiet_after_s}

    def refresh_due(self, known: Iterable[str]) -> bool:
        if not self.live():
            return True
        now = self.clock()
        with self._lock:
            if self._busy(now):
                return True
            new, self._unknown = self._unknown - set(known), set()
            if now < self._refresh_at and not new:
                return False
            self._refresh_at = now + self.recheck_s
        return True

    def to_sweep(self, ticked: set[str], term: int) -> set[str]:
        if not self.live() or self.unsettled():
            self.forget()
            return ticked
        now = self.clock()
        with self._lock:
            if term != self._term:
                self._term = term
                self._clear()
            busy = self._busy(now) & ticked
            unknown = {t for t in ticked - busy if self._until.get(t, now) <= now}
            for t in unknown:
                self._until.pop(t, None)
                self._blocked.discard(t)
            self._named -= unknown
        return busy | (self._probe(unknown, term, now) if unknown else set())

    def _probe(self, topics: set[str], term: int, now: float) -> set[str]:
        """Read when each of `topics` falls due; those due now are swept."""
        with self.database.transaction() as conn:
            paused = store.topic_paused(conn)
            due_in = store.task_next_due(
                conn, topics=sorted(topics - paused), term=term, window_s=self.window_s
            )
        self.probes += 1
        due = set()
        with self._lock:
            for t in topics:
                seconds = None if t in paused else due_in.get(t)
                if seconds is not None and seconds <= 0:
                    due.add(t)
                elif t in self._named:  # a NOTIFY came after the read: read again
                    continue
                else:
                    wait = self.recheck_s if seconds is None else min(seconds, self.recheck_s)
                    self._until[t] = now + wait
            self._due |= due
        return due

    def swept(self, topics: Iterable[str], backlog: set[str], dispatched: int) -> None:
        if dispatched:
            self.on_dispatched()
        now = self.clock()
        with self._lock:
            for t in topics:
                if not dispatched and t in self._due and t not in backlog | self.rated:
                    # Due, yet nothing went out and nothing waits for
                    # capacity: held back by something (see the module).
                    self._until[t] = now + self.recheck_s
                    self._blocked.add(t)
                else:  # read again at its next tick
                    self._until.pop(t, None)
                    self._blocked.discard(t)
                self._due.discard(t)

    def notified(self, payload: str) -> None:
        with self._lock:
            if payload.startswith(store.INSTANCE_PREFIX):
                self._refresh_at = 0.0  # learn its topics and capacity
                self._unblock()
                return
            topic = payload
            for prefix in (store.CAPACITY_PREFIX, store.TOPIC_PREFIX):
                if payload.startswith(prefix):
                    topic = payload[len(prefix) :]
                    break
            else:
                self._unknown.add(topic)
            self._heard[topic] = self.clock()
            self._named.add(topic)
            self._until.pop(topic, None)
            self._blocked.discard(topic)
            if payload.startswith(store.CAPACITY_PREFIX):
                self._unblock()  # a lock or a limit may have let go

    def _unblock(self) -> None:
        for t in self._blocked:
            self._until.pop(t, None)
        self._blocked.clear()

    def forget(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._named.clear()
        self._until.clear()
        self._due.clear()
        self._blocked.clear()
