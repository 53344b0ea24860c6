"""Consumers: take messages, run executions, write outcomes in batches, ack.

Three kinds of threads share one lock:

- the connection thread owns the kombu connection (one for every topic, a
  channel per topic with its prefetch): it receives messages into the
  inbox and performs acks, and reconnects with bounded retries;
- the writer thread turns the inbox into executions and outcomes into
  rows: each pass writes every finished outcome (one UPDATE per kind) and
  starts what free slots allow (one token-checked UPDATE), in one
  transaction, then asks for the acks of messages whose tasks are all
  written. It also times out thread executions and, on a failed write,
  keeps everything and tries again after reconnecting;
- per topic, `concurrency` worker threads run `exec` (in a child process
  when the topic asks for `isolation = "process"`).

A message is acked only after every task it carries is written; a task
whose token no longer matches is dropped as stale.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kombu

from tasker import brokers, db, defaults, outcome, states, store
from tasker.exceptions import BrokerError, DatabaseError
from tasker.execute import ChildWorker, Started, execute, timed_out
from tasker.msgq import MsgQ

log = logging.getLogger(__name__)



# --- bookkeeping ------------------------------------------------------------


@dataclass(eq=False)
class Delivery:
    """One broker message and how many of its tasks are not yet written."""

    topic: str
    tag: Any
    gen: int
    message: Any
    left: int


@dataclass(eq=False)
class Job:
    """One task of a delivery, from receipt to its written outcome."""

    task_id: int
    token: int
    delivery: Delivery
    task: Started | None = None
    deadline: float = 0.0
    began: float = 0.0
    took: float = 0.0  # execution time, for the stats hook
    abandoned: bool = False


@dataclass(eq=False)
class Lane:
    """Per-topic execution state."""

    cls: type[MsgQ]
    concurrency: int
    waiting: collections.deque[Job] = field(default_factory=collections.deque)
    ready: queue.SimpleQueue[Job | None] = field(default_factory=queue.SimpleQueue)
    running: set[Job] = field(default_factory=set)
    workers: int = 0
    fixed_prefetch: int | None = None  # TASKER_PREFETCH, or None for auto
    exec_s: float | None = None  # moving average of execution time here

    @property
    def prefetch(self) -> int:
        """Tasks the master may dispatch to us beyond our slots (see defaults.PREFETCH)."""
        if self.fixed_prefetch is not None:
            return self.fixed_prefetch
        if self.exec_s is None:
            return self.concurrency
        ahead = self.concurrency * defaults.AHEAD_BUDGET_S / max(self.exec_s, 1e-4)
        return int(min(defaults.AUTO_PREFETCH_MAX, max(self.concurrency, ahead)))

    @property
    def free(self) -> int:
        """Tasks that may be started now: free slots, plus the prefetch when
        executions are short (a task started ahead then waits only briefly)."""
        short = self.exec_s is not None and self.exec_s < defaults.AHEAD_MAX_EXEC_S
        return self.concurrency + (self.prefetch if short else 0) - len(self.running)

    def timed(self, took: float) -> None:
        self.exec_s = took if self.exec_s is None else 0.8 * self.exec_s + 0.2 * took


class AckTracker:
    """Acks in delivery order: the highest contiguous written tag, `multiple=True`."""

    def __init__(self) -> None:
        self.order: collections.deque[Any] = collections.deque()
        self.done: set[Any] = set()

    def delivered(self, tag: Any) -> None:
        self.order.append(tag)

    def written(self, tag: Any) -> Any:
        """Mark a tag written; returns the tag to ack up to (inclusive) or None."""
        self.done.add(tag)
        upto = None
        while self.order and self.order[0] in self.done:
            upto = self.order.popleft()
            self.done.discard(upto)
        return upto


# --- the consumer -----------------------------------------------------------


class Consumer:
    """All topics of one instance."""

    def __init__(
        self,
        app: Any,
        *,
        classes: dict[str, type[MsgQ]],
        instance_id: Callable[[], int],
        fatal: Callable[[str], None],
        prefetch: int | None,
        on_prefetch_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.instance_id = instance_id
        self.fatal = fatal
        self.lanes = {
            t: Lane(cls, cls.concurrency, fixed_prefetch=prefetch) for t, cls in classes.items()
        }
        self.on_prefetch_change = on_prefetch_change
        self._advertised = {t: lane.prefetch for t, lane in self.lanes.items()}
        # A task started ahead that waited longer than this is handed back
        # unexecuted, so it can never still run when the master rescues it.
        self.max_wait_s = self.settings.rescue_grace_s / 2
        self._lock = threading.Condition()
        self._inbox: list[tuple[Delivery, list[tuple[int, int]]]] = []
        self._outcomes: list[tuple[Job, outcome.Decision, str]] = []
        self._acks: list[Delivery] = []
        self._gen = 0
        self._accepting = True  # taking new messages
        self._closing = False  # connection thread should close
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._trackers: dict[str, AckTracker] = {}
        self._conn: kombu.Connection | None = None
        self._channels: dict[str, Any] = {}
        self._consumers: list[kombu.Consumer] = []
        self._db = db.HeldConnection(app.engine)  # the writer thread's own

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        if not self.lanes:
            return
        for topic in self.lanes:
            for _ in range(self.lanes[topic].concurrency):
                self._spawn_worker(topic)
        self._connect()  # fail fast at start-up when the broker is unreachable
        for target, name in ((self._connection_loop, "conn"), (self._write_loop, "writer")):
            t = threading.Thread(target=target, name=f"tasker-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def topics_row(self) -> dict[str, dict[str, int]]:
        """What the `instance` row says of our topics (the master's capacity)."""
        with self._lock:
            return {
                t: {"concurrency": lane.concurrency, "prefetch": lane.prefetch}
                for t, lane in self.lanes.items()
            }

    def stop_taking(self) -> None:
        """Stop starting executions; what was received but not started goes
        back to the master at once (claim undone), so nothing waits."""
        with self._lock:
            self._accepting = False
            self._drain_inbox()
            jobs = [j for lane in self.lanes.values() for j in lane.waiting]
            for lane in self.lanes.values():
                lane.waiting.clear()
            self._lock.notify_all()
        if not jobs:
            return
        try:
            with self.app.transaction() as conn:
                store.task_unclaim_many(conn, pairs=[(j.task_id, j.token) for j in jobs])
        except DatabaseError as exc:  # their messages are requeued when we close
            log.warning("could not return unstarted tasks: %s", exc, extra={"action": "unclaim"})
            return
        with self._lock:
            for job in jobs:
                self._written(job)
            self._lock.notify_all()

    def wait_idle(self, timeout: float, force: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no execution runs and every outcome is written."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                busy = sum(len(lane.running) for lane in self.lanes.values()) + len(self._outcomes)
                if not busy:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or force():
                    return False
                self._lock.wait(min(left, 0.05))

    def hand_back(self) -> int:
        """Give every running execution back to `pending`, no run charged."""
        with self._lock:
            jobs = [j for lane in self.lanes.values() for j in lane.running]
            for job in jobs:
                job.abandoned = True
            for lane in self.lanes.values():
                lane.running.clear()
        rows = [outcome.handed_back().row(j.task_id, j.task.worker_id) for j in jobs if j.task]
        if rows:
            try:
                with self.app.transaction() as conn:
                    n = store.task_finish_if_running_many(conn, transition="hand_back", rows=rows)
                log.info("handed back %d unfinished task(s)", n, extra={"action": "handed_back"})
            except DatabaseError as exc:
                log.error(
                    "could not hand back %d task(s); the master will rescue them: %s",
                    len(rows),
                    exc,
                    extra={"action": "hand_back_failed"},
                )
        with self._lock:
            for job in jobs:
                self._written(job)
        return len(rows)

    def close(self, timeout: float = 5.0) -> None:
        """Flush acks, close the connection, stop the threads and child processes."""
        with self._lock:
            self._accepting = False
            self._closing = True
            self._lock.notify_all()
        self._stopped.set()
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            for lane in self.lanes.values():
                for _ in range(lane.workers):
                    lane.ready.put(None)
        self._db.close()

    # --- connection thread --------------------------------------------------

    def _connect(self) -> None:
        broker = self.app.broker
        with self._lock:  # deliveries may arrive while the other queues are declared
            self._gen += 1
            self._trackers = {t: AckTracker() for t in self.lanes}
            self._acks.clear()
        conn = broker.connect()
        channels: dict[str, Any] = {}
        consumers = []
        with brokers.wrap_broker_errors(broker):
            for topic, lane in self.lanes.items():
                channel = conn.channel()
                # The master bounds what is in flight; this only caps messages.
                most = lane.fixed_prefetch
                most = defaults.AUTO_PREFETCH_MAX if most is None else most
                channel.basic_qos(0, lane.concurrency + most, False)
                q = broker.queue(topic).bind(channel)
                q.declare()
                c = kombu.Consumer(
                    channel, queues=[q], on_message=self._receiver(topic), no_ack=False
                )
                c.consume()
                channels[topic] = channel
                consumers.append(c)
        with self._lock:
            self._conn, self._channels, self._consumers = conn, channels, consumers

    def _receiver(self, topic: str) -> Callable[[Any], None]:
        def on_message(message: Any) -> None:
            self._received(topic, message)

        return on_message

    def _received(self, topic: str, message: Any) -> None:
        try:
            pairs = brokers.decode_body(message.body)
        except ValueError as exc:
            log.error("dropped a message on %s: %s", topic, exc, extra={"action": "bad_message"})
            pairs = []
        with self._lock:
            d = Delivery(topic, message.delivery_tag, self._gen, message, len(pairs))
            self._trackers[topic].delivered(d.tag)
            if not pairs:
                self._acks.append(d)
            elif not self._accepting:
                return  # not acked: back to the queue when the connection closes
            else:
                self._inbox.append((d, pairs))
            self._lock.notify_all()

    def _connection_loop(self) -> None:
        while True:
            if self._closing and not self._pending_acks():
                break
            try:
                if self._conn is None:
                    self._connect()
                self._do_acks()
                if self._closing:
                    continue
                if not self._accepting and self._consumers:
                    self._cancel_consumers()
                self._conn.drain_events(timeout=self._drain_timeout())
            except TimeoutError:
                continue
            except Exception as exc:
                if not brokers.is_broker_error(exc):
                    log.exception("consumer connection loop failed")
                if self._closing or not self._reconnect(exc):
                    break
        self._ack_leftovers()
        self._close_connection()

    def _drain_timeout(self) -> float:
        """Short while work is in flight, so acks (and the prefetch window
        they free) are not held back; longer when idle."""
        busy = self._acks or any(lane.running for lane in self.lanes.values())
        return 0.002 if busy else 0.05

    def _reconnect(self, exc: BaseException) -> bool:
        log.warning(
            "broker connection lost (%s); reconnecting", exc, extra={"action": "broker_lost"}
        )
        self._close_connection()
        with self._lock:
            # Unstarted tasks of the old connection come back with their messages.
            self._inbox.clear()
            for lane in self.lanes.values():
                lane.waiting.clear()
        try:
            self._connect()
        except BrokerError as err:
            self.fatal(
                f"gave up on the broker after {self.settings.reconnect_retries} tries: {err}"
            )
            return False
        log.info("broker connection restored", extra={"action": "broker_restored"})
        return True

    def _ack_leftovers(self) -> None:
        """On close, ack one by one what the in-order acks were still holding."""
        with self._lock:
            left = {t: list(tr.done) for t, tr in self._trackers.items() if tr.done}
            channels = dict(self._channels)
        for topic, tags in left.items():
            for tag in tags:
                with contextlib.suppress(Exception):
                    channels[topic].basic_ack(tag)

    def _pending_acks(self) -> bool:
        with self._lock:
            return bool(self._acks)

    def _do_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
            gen = self._gen
        multiple = self.app.broker.is_amqp
        for d in acks:
            if d.gen != gen:
                continue  # the old connection's messages were requeued
            if not multiple:
                d.message.ack()
                continue
            with self._lock:
                upto = self._trackers[d.topic].written(d.tag)
            if upto is not None:
                self._channels[d.topic].basic_ack(upto, multiple=True)

    def _cancel_consumers(self) -> None:
        consumers, self._consumers = self._consumers, []
        for c in consumers:
            with contextlib.suppress(Exception):
                c.cancel()

    def _close_connection(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._consumers = []
            self._channels = {}
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()

    # --- writer thread ------------------------------------------------------

    def _write_loop(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            with self._lock:
                self._expire_timeouts()
                while not self._outcomes and not self._startable() and not self._stopped.is_set():
                    self._lock.wait(self._next_deadline())
                    self._expire_timeouts()
                if self._stopped.is_set():
                    return
                done, self._outcomes = self._outcomes, []
                starts = self._take_startable()
            try:
                started = self._write(done, starts)
                failures = 0
            except DatabaseError as exc:
                failures += 1
                self._requeue(done, starts)
                if failures > self.settings.reconnect_retries:
                    self.fatal(f"gave up on the database after {failures - 1} retries: {exc}")
                    return
                wait = min(5.0, self.settings.reconnect_interval_s * (1 + 0.5 * (failures - 1)))
                log.warning(
                    "status write failed (try %d of %d); retrying in %.1fs: %s",
                    failures,
                    self.settings.reconnect_retries,
                    wait,
                    exc,
                    extra={"action": "db_retry"},
                )
                self._stopped.wait(wait)
                continue
            self._after_write(done, starts, started)

    def _startable(self) -> bool:
        if not self._accepting:
            return False
        if self._inbox:
            return True
        return any(lane.waiting and lane.free > 0 for lane in self.lanes.values())

    def _drain_inbox(self) -> None:
        """Received messages become waiting jobs of their topics (lock held)."""
        for d, pairs in self._inbox:
            self.lanes[d.topic].waiting.extend(Job(tid, tok, d) for tid, tok in pairs)
        self._inbox.clear()

    def _take_startable(self) -> list[Job]:
        self._drain_inbox()
        if not self._accepting:
            return []
        jobs: list[Job] = []
        for lane in self.lanes.values():
            for _ in range(min(lane.free, len(lane.waiting))):
                job = lane.waiting.popleft()
                lane.running.add(job)  # holds the slot while the start is written
                jobs.append(job)
        return jobs

    def _write(self, done: list[tuple[Job, outcome.Decision, str]], starts: list[Job]) -> list[Any]:
        by_kind: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for job, decision, text in done:
            assert job.task is not None
            by_kind[decision.transition].append(decision.row(job.task_id, job.task.worker_id, text))
        with self._db.transaction() as conn:
            for kind, rows in by_kind.items():
                store.task_finish_if_running_many(conn, transition=kind, rows=rows)
            if not starts:
                return []
            return store.task_start_if_token(
                conn,
                pairs=[(j.task_id, j.token) for j in starts],
                instance_id=self.instance_id(),
                fqdn=self.settings.fqdn,
            )

    def _requeue(self, done: list[tuple[Job, outcome.Decision, str]], starts: list[Job]) -> None:
        with self._lock:
            self._outcomes[:0] = done
            for job in reversed(starts):
                lane = self.lanes[job.delivery.topic]
                lane.running.discard(job)
                lane.waiting.appendleft(job)

    def _after_write(
        self, done: list[tuple[Job, outcome.Decision, str]], starts: list[Job], rows: list[Any]
    ) -> None:
        by_id = {r.id: r for r in rows}
        now = time.monotonic()
        stale: list[Job] = []
        with self._lock:
            for job, _decision, _text in done:
                self._written(job)
            for job in starts:
                lane = self.lanes[job.delivery.topic]
                row = by_id.get(job.task_id)
                if row is None:
                    lane.running.discard(job)
                    stale.append(job)
                    self._written(job)
                    continue
                job.task = Started(
                    row.id,
                    row.topic,
                    row.input,
                    row.timeout,
                    row.retry,
                    row.attempts,
                    row.worker_id,
                )
                job.began = now  # when the start was written; reset when it runs
                job.deadline = float("inf")
                lane.ready.put(job)
            self._lock.notify_all()
        if stale:
            self._log_stale(stale)
        if done and self._prefetch_moved():
            self.on_prefetch_change()
        if self.app.stats.active:
            at = dt.datetime.now(dt.timezone.utc)
            for job, decision, _text in done:
                status = states.transition(decision.transition).target.value
                self.app.stats(job.delivery.topic, status, at, job.took)

    def _written(self, job: Job) -> None:
        d = job.delivery
        d.left -= 1
        if d.left == 0:
            self._acks.append(d)

    def _prefetch_moved(self) -> bool:
        """Whether a topic's automatic prefetch moved by half or more since we said it."""
        with self._lock:
            now = {t: lane.prefetch for t, lane in self.lanes.items()}
        moved = any(
            abs(now[t] - self._advertised[t]) * 2 >= max(1, self._advertised[t]) for t in now
        )
        if moved:
            self._advertised = now
        return moved

    def _log_stale(self, jobs: list[Job]) -> None:
        try:
            with self.app.transaction() as conn:
                found = store.task_status_many(conn, ids=[j.task_id for j in jobs])
        except DatabaseError:
            found = {}
        for job in jobs:
            if job.task_id in found:
                log.info(
                    "dropped stale message for task %d (now %s)",
                    job.task_id,
                    found[job.task_id],
                    extra={"action": "stale", "task_id": job.task_id},
                )
            else:
                log.warning(
                    "dropped a message for task %d: no such task",
                    job.task_id,
                    extra={"action": "missing_task", "task_id": job.task_id},
                )

    def _expire_timeouts(self) -> None:
        now = time.monotonic()
        for topic, lane in self.lanes.items():
            if lane.cls.isolation == "process":
                continue  # the child is killed by its worker at the timeout
            for job in [j for j in lane.running if j.task and j.deadline <= now]:
                lane.running.discard(job)
                job.abandoned = True
                job.took = job.task.timeout_ms / 1000
                self._outcomes.append((job, timed_out(job.task), ""))
                log.warning(
                    "task %d of %s timed out; its thread is abandoned",
                    job.task_id,
                    topic,
                    extra={"action": "timeout", "task_id": job.task_id},
                )
                self._spawn_worker(topic)

    def _next_deadline(self) -> float:
        deadlines = [j.deadline for lane in self.lanes.values() for j in lane.running if j.task]
        if not deadlines:
            return 0.5
        return max(0.001, min(0.5, min(deadlines) - time.monotonic()))

    # --- workers ------------------------------------------------------------

    def _spawn_worker(self, topic: str) -> None:
        lane = self.lanes[topic]
        lane.workers += 1
        t = threading.Thread(target=self._work, args=(topic,), name=f"tasker-{topic}", daemon=True)
        t.start()

    def _work(self, topic: str) -> None:
        lane = self.lanes[topic]
        child = ChildWorker(lane.cls) if lane.cls.isolation == "process" else None
        try:
            while True:
                job = lane.ready.get()
                if job is None:
                    return
                assert job.task is not None
                with self._lock:
                    if job.abandoned:
                        continue  # handed back while it waited
                    now = time.monotonic()
                    waited = now - job.began
                    job.began, job.deadline = now, now + job.task.timeout_ms / 1000
                if waited > self.max_wait_s:
                    decision, text = outcome.handed_back(), ""
                    log.info(
                        "task %d waited %.1fs to run; handed back",
                        job.task_id,
                        waited,
                        extra={"action": "handed_back", "task_id": job.task_id},
                    )
                elif child is not None:
                    decision, text = child.run(job.task)
                else:
                    decision, text = execute(lane.cls, job.task)
                with self._lock:
                    if job.abandoned:
                        lane.workers -= 1
                        return  # timed out or handed back; a new worker took the slot
                    job.took = time.monotonic() - job.began
                    lane.timed(job.took)
                    lane.running.discard(job)
                    self._outcomes.append((job, decision, text))
                    self._lock.notify_all()
        finally:
            if child is not None:
                child.kill()
