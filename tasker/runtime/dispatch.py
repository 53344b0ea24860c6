"""Master-only: claim due tasks within free capacity and publish them.

Protocol (DESIGN 5). One service sweeps the topics that are due by their
`spec` trigger or were woken (a publish NOTIFY, freed capacity, a backlog,
an election), so the publisher has a single user. A sweep is: live
capacity of the topic minus tasks in flight, capped by the topic's
cluster-wide limits; claim that many due rows (fenced, one statement);
commit; publish the messages. Publisher confirms are collected while the
next sweeps run; a claim whose messages the broker refused, never
confirmed, or could not take is undone at once, so nothing waits out the
redelivery window.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from tasker import brokers, defaults, limits, store
from tasker.db import Database
from tasker.exceptions import BrokerError, DatabaseError, LeadershipLost
from tasker.runtime import capacity, triggers
from tasker.runtime.backlog import Backlog
from tasker.runtime.capacity import Capacity, Pair, capacity_of, pack
from tasker.runtime.lease import Lease
from tasker.runtime.quiet import NEVER_QUIET, Quiet
from tasker.runtime.service import InstanceId, Pass, Service, Supervision

__all__ = ["Capacity", "Dispatcher", "DispatcherConfig", "Swept", "capacity_of", "pack"]

log = logging.getLogger(__name__)


CONFIRM_POLL_S = 0.02
"""While messages await publisher confirms, look for them this often."""

INFLIGHT_RECOUNT_S = 1.0
"""An in-flight count (plus later claims) is trusted this long while it is
at most half the topic's capacity; then the sweep counts again."""

STOP_CONFIRM_S = 2.0
"""On stop, how long to wait for the last confirms before undoing those claims."""

PAUSED_TTL_S = 1.0
"""The paused topics are read at most this often (a pause or resume NOTIFY
on PostgreSQL refreshes them at once)."""


@dataclass(frozen=True)
class DispatcherConfig:
    """Settings of the dispatcher (seconds)."""

    window_s: float  # the redelivery window a claim holds a task for
    capacity_ttl_s: float = 0.5  # the live instances' rows are read at most this often


@dataclass(frozen=True)
class Swept(Pass):
    """One dispatch pass: how many tasks it claimed and published."""

    dispatched: int = 0


NO_LIMITS = limits.Limits()


class Dispatcher(Service):
    """Sweeps due and woken topics while this instance holds a trusted lease."""

    name = "dispatch"
    quiet: Quiet = NEVER_QUIET  # the idle schedule: the instance sets one on PostgreSQL

    def __init__(
        self,
        database: Database,
        broker: brokers.Broker,
        lease: Lease,
        supervision: Supervision,
        config: DispatcherConfig,
        *,
        specs: dict[str, BaseTrigger],
        instance_id: InstanceId,
        limits: dict[str, limits.Limits] | None = None,
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.lease = lease
        self.config = config
        self.triggers = dict(specs)  # topic -> trigger of its `spec`
        self.topics = list(specs)
        self.instance_id = instance_id
        self.window_ms = int(config.window_s * 1000)
        self.publisher = brokers.Publisher(broker)
        self._woken: set[str] = set()
        self._woken_lock = threading.Lock()
        self._next: dict[str, dt.datetime] = {}
        self._live: tuple[float, list[Any]] = (0.0, [])
        # On PostgreSQL each sweep statement commits itself (the claim carries
        # its own fence), so a sweep costs two round trips, not five, and
        # does not wait for the WAL flush (see `Database.held`).
        self._db = database.held(autocommit=True, flush_wait=False)
        self._sent: dict[int, list[Pair]] = {}  # batch -> its claims, until confirmed
        self._backlog = Backlog()  # topics the last sweeps left with work
        self._counted: dict[str, tuple[int, float]] = {}  # topic -> (in flight, when counted)
        self.limits = {t: lim for t, lim in (limits or {}).items() if lim.any}
        self._paused: tuple[float, set[str]] = (-PAUSED_TTL_S, set())
        self._ahead: dict[str, int | None] = {}  # topic -> `capacity.lowest_ahead`
        self._term: int | None = None  # the term the caches above belong to

    # --- wake-ups -----------------------------------------------------------

    def notified(self, payload: str) -> None:
        """A NOTIFY on the publish channel: a publish (sweep now) or freed
        capacity (sweep now only if the topic was held back by capacity)."""
        if payload.startswith(store.CAPACITY_PREFIX):
            topic = payload[len(store.CAPACITY_PREFIX) :]
            if self._backlog.wakes(topic):
                self.wake_topic(topic)
        elif payload.startswith(store.TOPIC_PREFIX):  # paused or resumed
            self._paused = (-PAUSED_TTL_S, set())
            self.wake_topic(payload[len(store.TOPIC_PREFIX) :])
        else:
            self.wake_topic(payload)

    def wake_topic(self, topic: str | None = None) -> None:
        """Ask for a sweep of one topic (None: all) as soon as possible."""
        with self._woken_lock:
            if topic is None:
                self._woken.update(self.topics)
            elif topic in self.triggers:
                self._woken.add(topic)
        self.wake()

    # --- the loop -----------------------------------------------------------

    def run_once(self) -> Swept:
        """Sweep what is due or woken; how many tasks went out, and the
        seconds until the next pass."""
        self.doing = "collecting publisher confirms"
        self.settle()
        now = dt.datetime.now(dt.timezone.utc)
        if self.lease.term() is not None and self.quiet.refresh_due(self.triggers):
            self.doing = "reading the live instances' topics"
            self._instances()  # a refresh (every capacity_ttl_s) learns new topics
        with self._woken_lock:
            topics, self._woken = self._woken, set()
        ticked = set()
        for topic, trigger in self.triggers.items():
            at = self._next.get(topic)
            if at is None or at <= now:
                ticked.add(topic)
                self._next[topic] = triggers.next_after(trigger, now)
        backlog: set[str] = set()
        dispatched = 0
        if (term := self.lease.term()) is not None:
            self.doing = "reading when the idle topics fall due"
            topics |= self.quiet.to_sweep(ticked - topics, term)
            backlog, dispatched = self.sweep_topics(topics) if topics else (set(), 0)
            self.quiet.swept(topics, backlog, dispatched)
        self.settle()
        if backlog:
            with self._woken_lock:
                self._woken.update(backlog)
            return Swept(self._backlog.wait_s(backlog), dispatched)
        if self.publisher.unconfirmed:
            return Swept(CONFIRM_POLL_S, dispatched)  # look for their confirms every few ms
        soonest = min(self._next.values(), default=now + dt.timedelta(seconds=1))
        wait = (soonest - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return Swept(min(1.0, max(0.0, wait)), dispatched)

    def _learn_topics(self, rows: list[Any]) -> None:
        """Sweep every topic a live instance serves, not only ours: a consumer
        running another module (a just-worker, a class added in a rolling
        deploy) must get work whichever instance is master. A topic we do not
        know is swept on the default spec, without limits (those come from
        the class: register it on master-eligible instances to enforce them)."""
        for row in rows:
            for topic in store.topics_of(row):
                if topic not in self.triggers:
                    self.triggers[topic] = triggers.make_trigger(defaults.TOPIC_SPEC)
                    self.topics.append(topic)
                    log.info("sweeping topic %r of another instance", topic,
                             extra={"action": "topic_learned", "topic": topic})  # fmt: skip

    def on_stop(self) -> None:
        self.settle(wait_s=STOP_CONFIRM_S)
        self.publisher.close()
        self.settle()  # what the closed channel never confirmed is dispatched again
        self._db.close()

    def settle(self, wait_s: float = 0.0) -> None:
        """Forget confirmed batches; undo the claims of those the broker did not take."""
        deadline = time.monotonic() + wait_s
        while True:
            done, failed = self.publisher.settle(max(0.0, deadline - time.monotonic()))
            for batch in done:
                self._sent.pop(batch, None)
            for batch in failed:
                pairs = self._sent.pop(batch, [])
                if not pairs:
                    continue
                log.warning(
                    "the broker did not confirm %d task(s); dispatching them again",
                    len(pairs),
                    extra={"action": "unconfirmed"},
                )
                self._unclaim(pairs)
            if not self.publisher.unconfirmed or time.monotonic() >= deadline:
                return

    def sweep_topics(self, topics: Sequence[str] | set[str] | None = None) -> tuple[set[str], int]:
        """Sweep the given topics (default all); returns those with work left
        and how many tasks went out. A topic whose sweep failed is left for
        the next pass; the failure reaches the supervisor, which retries
        with back-off and gives up loudly when the database or broker stays away."""
        left: set[str] = set()
        dispatched = 0
        failure: Exception | None = None
        term = self.lease.term()
        if term is None:
            return set(), 0
        if term != self._term:  # counts of another term may miss its claims
            self._term, self._counted, self._ahead = term, {}, {}
        self.doing = "reading the paused topics"
        paused = self._paused_topics()
        for topic in sorted(topics if topics is not None else self.topics):
            term = self.lease.term()
            if term is None:
                return set(), dispatched
            if topic in paused:
                continue
            self.doing = f"sweeping {topic!r}"
            try:
                sent, waiting = self.sweep(topic, term)
            except LeadershipLost as exc:
                self.lease.demote(term, str(exc))
                return set(), dispatched
            except (DatabaseError, BrokerError) as exc:
                left.add(topic)
                failure = exc
                continue
            dispatched += sent
            if waiting:
                left.add(topic)
        if failure is not None:
            with self._woken_lock:
                self._woken.update(left)
            raise failure
        return left, dispatched

    # --- one sweep ----------------------------------------------------------

    def _instances(self) -> list[Any]:
        at, rows = self._live
        if time.monotonic() - at < self.config.capacity_ttl_s:
            return rows
        with self.database.transaction() as conn:
            rows = list(store.instance_live(conn, out_of_date_s=self.lease.lease_ms / 1000))
        self._live = (time.monotonic(), rows)
        self._learn_topics(rows)
        return rows

    def _paused_topics(self) -> set[str]:
        at, paused = self._paused
        if time.monotonic() - at < PAUSED_TTL_S:
            return paused
        with self._db.transaction() as conn:
            paused = store.topic_paused(conn)
        self._paused = (time.monotonic(), paused)
        return paused

    def sweep(self, topic: str, term: int) -> tuple[int, bool]:
        """Claim and publish what the topic's free capacity allows, capped by
        its limits (`limits.claim_limit`); returns how many went out and
        whether due tasks were left behind for lack of capacity.

        With a rate limit its state (`limits.rate_allowance`) is read, locked
        and written in the claim's own transaction, so a change of master
        neither resets nor loses it; a spent allowance puts the topic's next
        sweep when the next claim is allowed."""
        cap = capacity_of(topic, self._instances())
        if cap.limit == 0:
            return 0, False
        lim = self.limits.get(topic, NO_LIMITS)
        bound = cap.limit
        if lim.global_concurrency is not None:
            bound = min(bound, lim.global_concurrency)
        held = self._db if lim.rate is None else self.database
        with held.transaction() as conn:
            allow = now = None
            if lim.rate is not None:
                tat, now = store.topic_rate_read(conn, name=topic)
                allow = limits.rate_allowance(lim.rate, tat=tat, now=now)
            inflight = self._inflight(conn, topic, bound)
            n = limits.claim_limit(
                cap.limit - inflight, inflight, lim, None if allow is None else allow.free
            )
            batch = min(n, defaults.CLAIM_BATCH)
            pairs: list[Pair] = []
            lowest: list[int] = []
            if batch > 0:
                pairs = store.task_claim_due(
                    conn, topic=topic, limit=batch, term=term,
                    instance_id=self.instance_id(), window_s=self.window_ms / 1000,
                    lowest=lowest,
                )  # fmt: skip
            if allow is not None and pairs:
                store.topic_rate_write(conn, name=topic, tat=allow.tat_after(len(pairs)))
            waiting, took = self._after_claim(conn, topic, term, batch, pairs, lowest, lim)
        if topic in self._counted:
            counted, at = self._counted[topic]
            self._counted[topic] = (counted + len(pairs) - took, at)
        if allow is not None and now is not None and waiting and len(pairs) >= allow.free:
            # The allowance is spent: sweep again when the next claim is
            # allowed, not every few ms.
            self._next[topic] = dt.datetime.now(dt.timezone.utc) + (
                allow.next_at(len(pairs)) - now
            )
            waiting = False
        self._backlog.mark(topic, waiting, cap, pace=not lim.any and not took)
        if pairs:
            self._publish(topic, pairs, cap, backlog=waiting)
        return len(pairs), waiting

    def _after_claim(
        self, conn: Any, topic: str, term: int, batch: int, pairs: list[Pair],
        lowest: list[int], lim: limits.Limits,
    ) -> tuple[bool, int]:  # fmt: skip
        """Whether due tasks were left behind, and how many lower claims a
        higher due priority took back (DESIGN 7: a task claimed ahead of a
        free slot never starts before a higher one due meanwhile; the freed
        capacity goes to the higher one at the next sweep, a few ms later)."""
        ahead = self._ahead.get(topic)
        low = lowest[-1] if lowest else None
        if len(pairs) < batch:  # everything due was claimed
            self._ahead[topic] = capacity.lowest_ahead(ahead, low, None)
            return False, 0
        top, took = None, 0
        if capacity.must_probe_priorities(ahead, batch, low):
            waiting, top = store.task_due_probe(
                conn, topic=topic, above=ahead, window_s=self.window_ms / 1000
            )
            if top is not None:
                took = store.task_take_back_below(conn, topic=topic, priority=top, term=term)
        else:  # a full batch of an unlimited topic says enough: more may be due
            waiting = (batch > 0 and not lim.any) or store.task_any_due(conn, topic=topic)
        self._ahead[topic] = capacity.lowest_ahead(ahead, low, top)
        if took:
            log.debug("took back %d %s task(s) claimed ahead: priority %d is due", took, topic,
                      top, extra={"action": "taken_back", "topic": topic})  # fmt: skip
        return waiting or took > 0, took

    def _inflight(self, conn: Any, topic: str, limit: int) -> int:
        """Tasks in flight: counted, or, when a recent count plus what we
        claimed since is well below the limit, that sum. It can only be too
        high (executions end meanwhile), so it never lets a claim overshoot."""
        known = self._counted.get(topic)
        if known is not None:
            counted, at = known
            if counted * 2 <= limit and time.monotonic() - at < INFLIGHT_RECOUNT_S:
                return counted
        counted = store.task_count_inflight(conn, topic=topic, window_s=self.window_ms / 1000)
        self._counted[topic] = (counted, time.monotonic())
        return counted

    def _publish(self, topic: str, pairs: list[Pair], cap: Capacity, *, backlog: bool) -> None:
        messages = pack(pairs, slots=cap.slots, concurrency=cap.concurrency, backlog=backlog,
                        soon=cap.soon, consumers=cap.consumers)  # fmt: skip
        try:
            batch = self.publisher.send(topic, [brokers.encode_body(m) for m in messages])
        except Exception:
            self._unclaim(pairs)
            raise
        self._sent[batch] = pairs
        log.debug(
            "dispatched %d %s task(s) in %d message(s)",
            len(pairs),
            topic,
            len(messages),
            extra={"action": "dispatched", "topic": topic},
        )

    def _unclaim(self, pairs: list[Pair]) -> None:
        try:
            with self.database.transaction() as conn:
                store.task_unclaim_many(conn, pairs=pairs)
        except DatabaseError as exc:  # the redelivery window dispatches them again
            log.warning("could not undo a claim: %s", exc, extra={"action": "unclaim_failed"})
