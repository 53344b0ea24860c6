"""Master-only: claim due tasks within free capacity and publish them.

One thread sweeps the topics that were woken (by their spec, by a publish
NOTIFY, or by a backlog), so the publisher has a single user. A sweep is:
live capacity of the topic minus tasks in flight; claim that many due rows
(fenced, one statement); commit; publish the messages. Publisher confirms
are collected while the next sweeps run; a claim whose messages the broker
refused, never confirmed, or could not take is undone at once, so nothing
waits out the redelivery window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasker import brokers, db, defaults, store
from tasker.exceptions import BrokerError, DatabaseError, LeadershipLost

log = logging.getLogger(__name__)

Pair = tuple[int, int]

CONFIRM_POLL_S = 0.02
"""While messages await publisher confirms, look for them this often."""

INFLIGHT_RECOUNT_S = 1.0
"""An in-flight count (plus later claims) is trusted this long while it is
at most half the topic's capacity; then the sweep counts again."""

STOP_CONFIRM_S = 2.0
"""On stop, how long to wait for the last confirms before undoing those claims."""


@dataclass(frozen=True)
class Capacity:
    """What the live consumers of one topic can hold."""

    slots: int  # sum of concurrency
    limit: int  # slots plus prefetch
    concurrency: int  # the largest per-instance concurrency


def capacity_of(topic: str, instances: Sequence[object]) -> Capacity:
    slots = limit = conc = 0
    for row in instances:
        cfg = store.topics_of(row).get(topic)  # type: ignore[arg-type]
        if not cfg:
            continue
        c = int(cfg.get("concurrency", 1))
        slots += c
        limit += c + int(cfg.get("prefetch", c))
        conc = max(conc, c)
    return Capacity(slots, limit, conc)


def pack(pairs: Sequence[Pair], *, slots: int, concurrency: int, backlog: bool) -> list[list[Pair]]:
    """Split claimed tasks into messages.

    Idle: one task per message while there are no more tasks than execution
    slots (latency). Backlog: up to `concurrency` per message, so the broker
    costs a message per `concurrency` tasks (throughput).
    """
    if not pairs:
        return []
    cap = max(1, min(concurrency, defaults.MAX_TASKS_PER_MESSAGE))
    if backlog:
        size = cap
    elif len(pairs) <= max(1, slots):
        size = 1
    else:
        size = min(cap, math.ceil(len(pairs) / max(1, slots)))
    return [list(pairs[i : i + size]) for i in range(0, len(pairs), size)]


class Dispatcher:
    """Sweeps woken topics while this instance holds a trusted lease."""

    def __init__(
        self,
        app: object,
        *,
        topics: Sequence[str],
        instance_id: Callable[[], int],
        current_term: Callable[[], int | None],
        lease_ms: Callable[[], int],
        on_lost: Callable[[int, str], None],
        window_s: float,
        capacity_ttl_s: float = 0.5,
    ) -> None:
        self.app = app
        self.topics = list(topics)
        self.instance_id = instance_id
        self.current_term = current_term
        self.lease_ms = lease_ms
        self.on_lost = on_lost
        self.window_ms = int(window_s * 1000)
        self.capacity_ttl_s = capacity_ttl_s
        self.publisher = brokers.Publisher(app.broker)  # type: ignore[attr-defined]
        self._woken: set[str] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._live: tuple[float, list[object]] = (0.0, [])
        # On PostgreSQL each sweep statement commits itself (the claim carries
        # its own fence), so a sweep costs two round trips, not five.
        engine = app.autocommit_engine() or app.engine  # type: ignore[attr-defined]
        self._db = db.HeldConnection(engine)
        self._sent: dict[int, list[Pair]] = {}  # batch -> its claims, until confirmed
        self._full: set[str] = set()  # topics whose last sweep ran out of capacity
        self._counted: dict[str, tuple[int, float]] = {}  # topic -> (in flight, when counted)
        self.errors = 0

    # --- wake-ups -----------------------------------------------------------

    def notified(self, payload: str) -> None:
        """A NOTIFY on the publish channel: a publish (sweep now) or freed
        capacity (sweep now only if the topic was held back by capacity)."""
        if payload.startswith(store.CAPACITY_PREFIX):
            topic = payload[len(store.CAPACITY_PREFIX) :]
            if topic in self._full:
                self.wake(topic)
        else:
            self.wake(payload)

    def wake(self, topic: str | None = None) -> None:
        """Ask for a sweep of one topic (None: all) as soon as possible."""
        with self._cond:
            if topic is None:
                self._woken.update(self.topics)
            elif topic in self.topics:
                self._woken.add(topic)
            self._cond.notify()

    # --- the loop -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tasker-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self.publisher.close()
        self.settle()  # what the closed channel never confirmed is dispatched again
        self._db.close()

    def _loop(self) -> None:
        retry_after = 0.0
        while True:
            with self._cond:
                while not self._stop and not self._woken:
                    # Unconfirmed messages: look for their confirms every few ms.
                    if self.publisher.unconfirmed:
                        self._cond.wait(CONFIRM_POLL_S)
                        break
                    self._cond.wait()
                if self._stop:
                    break
                topics, self._woken = self._woken, set()
            self.settle()
            if not topics:
                continue
            try:
                backlog = self.run_once(topics)
            except Exception:  # a bug must not stop dispatch for good
                log.exception("sweep crashed", extra={"action": "sweep_crashed"})
                backlog, self.errors = set(topics), self.errors + 1
            self.settle()
            if self.errors:
                retry_after = min(defaults.RECONNECT_INTERVAL_S, max(0.05, retry_after * 2))
                self.errors = 0
            else:
                retry_after = 0.0
            if backlog:
                with self._cond:
                    self._woken.update(backlog)
                    self._cond.wait(retry_after or defaults.BACKLOG_POLL_S)
        self.settle(wait_s=STOP_CONFIRM_S)

    def settle(self, wait_s: float = 0.0) -> None:
        """Forget confirmed batches; undo the claims of those the broker did not take."""
        deadline = time.monotonic() + wait_s
        while True:
            done, failed = self.publisher.settle(max(0.0, deadline - time.monotonic()))
            for batch in done:
                self._sent.pop(batch, None)
            for batch in failed:
                pairs = self._sent.pop(batch, [])
                log.warning(
                    "the broker did not confirm %d task(s); dispatching them again",
                    len(pairs),
                    extra={"action": "unconfirmed"},
                )
                self._unclaim(pairs)
            if not self.publisher.unconfirmed or time.monotonic() >= deadline:
                return

    def run_once(self, topics: Sequence[str] | set[str] | None = None) -> set[str]:
        """Sweep the given topics (default all); returns those with work left."""
        left: set[str] = set()
        for topic in sorted(topics if topics is not None else self.topics):
            term = self.current_term()
            if term is None:
                return set()
            try:
                if self.sweep(topic, term):
                    left.add(topic)
            except LeadershipLost as exc:
                self.on_lost(term, str(exc))
                return set()
            except (DatabaseError, BrokerError) as exc:
                log.warning("sweep of %s failed: %s", topic, exc, extra={"action": "sweep_failed"})
                self.errors += 1
                left.add(topic)
        return left

    # --- one sweep ----------------------------------------------------------

    def _instances(self) -> list[object]:
        at, rows = self._live
        if time.monotonic() - at < self.capacity_ttl_s:
            return rows
        with self.app.transaction() as conn:  # type: ignore[attr-defined]
            rows = list(store.instance_live(conn, out_of_date_ms=self.lease_ms()))
        self._live = (time.monotonic(), rows)
        return rows

    def sweep(self, topic: str, term: int) -> bool:
        """Claim and publish what the topic's free capacity allows; True when
        due tasks were left behind for lack of capacity."""
        cap = capacity_of(topic, self._instances())
        if cap.limit == 0:
            return False
        with self._db.transaction() as conn:
            free = cap.limit - self._inflight(conn, topic, cap.limit)
            if free <= 0:
                waiting = store.task_any_due(conn, topic=topic)
                self._mark_full(topic, waiting)
                return waiting
            limit = min(free, defaults.CLAIM_BATCH)
            pairs = store.task_claim_due(
                conn,
                topic=topic,
                limit=limit,
                term=term,
                instance_id=self.instance_id(),
                window_ms=self.window_ms,
            )
        full = len(pairs) == limit
        self._mark_full(topic, full)
        if topic in self._counted:
            counted, at = self._counted[topic]
            self._counted[topic] = (counted + len(pairs), at)
        if not pairs:
            return False
        self._publish(topic, pairs, cap, backlog=full)
        return full

    def _inflight(self, conn: object, topic: str, limit: int) -> int:
        """Tasks in flight: counted, or, when a recent count plus what we
        claimed since is well below the limit, that sum. It can only be too
        high (executions end meanwhile), so it never lets a claim overshoot."""
        known = self._counted.get(topic)
        if known is not None:
            counted, at = known
            if counted * 2 <= limit and time.monotonic() - at < INFLIGHT_RECOUNT_S:
                return counted
        counted = store.task_count_inflight(conn, topic=topic, window_ms=self.window_ms)  # type: ignore[arg-type]
        self._counted[topic] = (counted, time.monotonic())
        return counted

    def _mark_full(self, topic: str, full: bool) -> None:
        if full:
            self._full.add(topic)
        else:
            self._full.discard(topic)

    def _publish(self, topic: str, pairs: list[Pair], cap: Capacity, *, backlog: bool) -> None:
        messages = pack(pairs, slots=cap.slots, concurrency=cap.concurrency, backlog=backlog)
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
            with self.app.transaction() as conn:  # type: ignore[attr-defined]
                store.task_unclaim_many(conn, pairs=pairs)
        except DatabaseError as exc:  # the redelivery window dispatches them again
            log.warning("could not undo a claim: %s", exc, extra={"action": "unclaim_failed"})
