"""What the consumer's threads share, behind one lock, in small named operations.

Three kinds of threads meet here: the intake (broker connection: deliveries
in, acks out), the status writer (starts and outcomes to the database) and
the execution workers. Each operation below takes the lock once, does one
thing and returns; nothing else touches these fields, so the lock
discipline reads in this one file. No operation calls out (database,
broker, user code) while holding the lock.

A task's life here: `received` (inbox) -> `take_work` (waiting, then
running: its start is written) -> `started` (ready for a worker) ->
`begin` -> `finish` (an outcome) -> `take_work` -> `written`, and its
message is acked once all its tasks are written. A cancel flags a job (`_flag`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from tasker import defaults, outcome
from tasker.context import Context
from tasker.msgq import MsgQ
from tasker.runtime.consumer.acks import AckTracker
from tasker.runtime.consumer.jobs import Delivery, Job, Lane, Outcome
from tasker.runtime.execute import Started, decide

__all__ = ["ConsumerState", "Delivery", "Job", "Lane", "Outcome"]


class ConsumerState:
    """The consumer's shared state; every method is one short critical section."""

    def __init__(
        self,
        classes: dict[str, type[MsgQ]],
        *,
        prefetch: int | None,
        host: str,
        ordered_acks: bool = True,
    ) -> None:
        # AMQP acks by delivery tag (one multiple ack covers a written prefix);
        # other transports ack each message on its own, so nothing is tracked.
        self.ordered_acks = ordered_acks
        self.lanes = {
            t: Lane(c, c.concurrency, fixed_prefetch=prefetch) for t, c in classes.items()
        }
        self.host = host
        self._cond = threading.Condition()
        self._inbox: list[tuple[Delivery, list[tuple[int, int]]]] = []
        self._outcomes: list[Outcome] = []
        self._acks: list[Delivery] = []
        self._trackers: dict[str, AckTracker] = {}
        self._gen = 0
        self._accepting = True
        self._advertised = {t: lane.prefetch for t, lane in self.lanes.items()}

    # --- intake: deliveries and acks ----------------------------------------

    def new_connection(self) -> int:
        """A new broker connection: fresh ack trackers; returns its generation."""
        with self._cond:
            self._gen += 1
            self._trackers = {t: AckTracker() for t in self.lanes}
            self._acks.clear()
            return self._gen

    def received(self, topic: str, message: Any, pairs: list[tuple[int, int]]) -> None:
        """A delivery: its tasks wait in the inbox (an empty one is acked at once;
        while not accepting, it is left unacked and requeued at close)."""
        with self._cond:
            d = Delivery(topic, message.delivery_tag, self._gen, message, len(pairs))
            if self.ordered_acks:
                self._trackers[topic].delivered(d.tag)
            if not pairs:
                self._acks.append(d)
            elif self._accepting:
                self._inbox.append((d, pairs))
            self._cond.notify_all()

    def take_acks(self) -> list[tuple[str, Any, Any, bool]]:
        """Acks to send now, as (topic, message, tag, multiple); those of an
        earlier connection are dropped (the broker requeued their messages)."""
        with self._cond:
            acks, self._acks = self._acks, []
            by_topic: dict[str, list[Delivery]] = collections.defaultdict(list)
            for d in acks:
                if d.gen == self._gen:
                    by_topic[d.topic].append(d)
            if not self.ordered_acks:
                return [(d.topic, d.message, d.tag, False) for ds in by_topic.values() for d in ds]
            out = []
            for topic, ds in by_topic.items():
                messages = {d.tag: d.message for d in ds}
                for tag, multiple in self._trackers[topic].written([d.tag for d in ds]):
                    out.append((topic, messages.get(tag), tag, multiple))
            return out

    def has_acks(self) -> bool:
        with self._cond:
            return bool(self._acks)

    def busy(self) -> bool:
        """Acks due or executions running (the intake then polls briskly)."""
        with self._cond:
            return bool(self._acks) or any(lane.running for lane in self.lanes.values())

    def connection_lost(self) -> None:
        """Unstarted tasks of a lost connection come back with their messages."""
        with self._cond:
            self._inbox.clear()
            for lane in self.lanes.values():
                lane.waiting.clear()

    # --- status writer --------------------------------------------------------

    def take_work(self, wait_s: float) -> tuple[list[Outcome], list[Job], list[str]]:
        """Wait up to `wait_s` for outcomes to write or tasks to start; returns
        (outcomes, jobs to start, topics whose timed-out worker needs replacing).
        A started job holds its slot while its start is written."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            expired = self._expire_timeouts()
            while not self._outcomes and not self._startable() and not expired:
                left = min(deadline - time.monotonic(), self._next_deadline())
                if left <= 0:
                    break
                self._cond.wait(left)
                expired = self._expire_timeouts()
            done, self._outcomes = self._outcomes, []
            return done, self._take_startable(), expired

    def requeue(self, done: list[Outcome], starts: list[Job]) -> None:
        """A write failed for a passing reason: everything is tried again."""
        with self._cond:
            self._outcomes[:0] = done
            for job in reversed(starts):
                lane = self.lanes[job.delivery.topic]
                lane.running.discard(job)
                lane.waiting.appendleft(job)

    def written(self, jobs: list[Job]) -> None:
        """These jobs' rows are written (or given up): their messages may be acked."""
        with self._cond:
            for job in jobs:
                self._written(job)
            self._cond.notify_all()

    def started(self, starts: list[Job], rows: list[Any]) -> list[Job]:
        """The starts are written; rows are the tasks now running for us. The
        others (token moved on: stale) are returned, their slots freed."""
        by_id = {r.id: Started.from_row(r) for r in rows}  # decoded before the lock
        now = time.monotonic()
        stale: list[Job] = []
        with self._cond:
            for job in starts:
                lane = self.lanes[job.delivery.topic]
                row = by_id.get(job.task_id)
                if row is None or job.abandoned:
                    lane.running.discard(job)
                    stale.append(job)
                    self._written(job)
                    continue
                job.task = row
                job.began = now  # when the start was written; reset when it runs
                job.deadline = float("inf")
                job.cancelled = job.task.cancelled  # flagged at `begin`
                lane.ready.put(job)
            self._cond.notify_all()
        return stale

    def prefetch_moved(self) -> bool:
        """Whether a topic's automatic prefetch moved by half or more since we said it."""
        with self._cond:
            now = {t: lane.prefetch for t, lane in self.lanes.items()}
            moved = any(
                abs(now[t] - self._advertised[t]) * 2 >= max(1, self._advertised[t]) for t in now
            )
            if moved:
                self._advertised = now
            return moved

    # --- execution workers ------------------------------------------------------

    def begin(self, job: Job, max_wait_s: float, ctx: Context | None = None) -> float | None:
        """A worker takes the job (`ctx`: a thread execution's, told of a cancel): its
        clock starts. Returns how long it waited since its start was written, or None."""
        with self._cond:
            if job.abandoned or job.task is None:
                return None
            now = time.monotonic()
            waited = now - job.began
            job.began = now
            job.deadline = float("inf") if waited > max_wait_s else now + job.task.timeout_ms / 1000
            # The row's `started` is this moment, not its start write (which
            # may precede it by the local queueing of a task taken ahead).
            job.exec_began = None if waited > max_wait_s else now
            job.ctx = ctx
            if job.cancelled:
                self._flag(job, now)
            return waited

    def exec_begins(self, job: Job) -> None:
        """A process-isolated job's child is ready and is sent the task now: the
        run's start (a child spawned for it does not count as its run time)."""
        with self._cond:
            job.exec_began = time.monotonic()

    def finish(self, job: Job, decision: outcome.Decision, log_text: str) -> bool:
        """The execution ended: its outcome is queued for the writer and its slot
        is free. False when the job was abandoned meanwhile (timed out, handed
        back): the outcome is dropped and the worker's thread must end."""
        with self._cond:
            if job.abandoned:
                return False
            lane = self.lanes[job.delivery.topic]
            job.exec_ended = time.monotonic()
            job.took = job.exec_ended - job.began
            lane.timed(job.took)
            lane.running.discard(job)
            if job.cancelled and job.task is not None:
                decision = outcome.cancelled(decision, attempt=job.task.attempts, host=self.host)
            self._outcomes.append((job, decision, log_text))
            self._cond.notify_all()
            return True

    def cancel_requested(self, pairs: list[tuple[int, int]]) -> list[Job]:
        """Flag the running jobs of these (task id, worker id) an admin
        cancelled (once each); returns the jobs newly flagged."""
        wanted = set(pairs)
        now = time.monotonic()
        with self._cond:
            jobs = [
                j for lane in self.lanes.values() for j in lane.running
                if j.task and not j.cancelled and (j.task_id, j.task.worker_id) in wanted
            ]  # fmt: skip
            for job in jobs:
                self._flag(job, now)
            self._cond.notify_all()  # the writer's wait ends at the new deadline
            return jobs

    # --- stopping -----------------------------------------------------------------

    def stop_taking(self) -> list[Job]:
        """Stop starting executions; returns the received, unstarted jobs
        (their claims are undone so nothing waits for us)."""
        with self._cond:
            self._accepting = False
            self._drain_inbox()
            jobs = [j for lane in self.lanes.values() for j in lane.waiting]
            for lane in self.lanes.values():
                lane.waiting.clear()
            self._cond.notify_all()
            return jobs

    @property
    def accepting(self) -> bool:
        with self._cond:
            return self._accepting

    def wait_idle(self, timeout: float, force: Callable[[], bool]) -> bool:
        """Wait until no execution runs and every outcome is written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                busy = sum(len(lane.running) for lane in self.lanes.values()) + len(self._outcomes)
                if not busy:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or force():
                    return False
                self._cond.wait(min(left, 0.05))

    def abandon_running(self) -> list[Job]:
        """Every running execution, abandoned (hand-back at the end of the grace)."""
        with self._cond:
            jobs = [j for lane in self.lanes.values() for j in lane.running]
            for job in jobs:
                job.abandoned = True
            for lane in self.lanes.values():
                lane.running.clear()
            return jobs

    def topics_row(self) -> dict[str, dict[str, int]]:
        """What the `instance` row says of our topics (the master's capacity)."""
        with self._cond:
            return {
                t: {"concurrency": lane.concurrency, "prefetch": lane.prefetch}
                for t, lane in self.lanes.items()
            }

    # --- helpers (lock held) -------------------------------------------------------

    def _flag(self, job: Job, now: float) -> None:
        """Cancel: `ctx` says so, the outcome is cancelled, a thread past the grace is abandoned."""
        job.cancelled = True
        job.deadline = min(job.deadline, now + defaults.CANCEL_GRACE_S)
        if job.ctx is not None:
            job.ctx.mark_cancelled()

    def _written(self, job: Job) -> None:
        d = job.delivery
        d.left -= 1
        if d.left == 0:
            self._acks.append(d)

    def _startable(self) -> bool:
        if not self._accepting:
            return False
        return bool(self._inbox) or any(
            lane.waiting and lane.free > 0 for lane in self.lanes.values()
        )

    def _drain_inbox(self) -> None:
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
                lane.running.add(job)
                jobs.append(job)
        return jobs

    def _expire_timeouts(self) -> list[str]:
        """Thread executions past their deadline fail as `timeout` (or as
        cancelled); each frees its slot at once (its thread is abandoned and replaced)."""
        now = time.monotonic()
        topics: list[str] = []
        for topic, lane in self.lanes.items():
            if lane.cls.isolation == "process":
                continue  # the child is killed by its worker at the timeout
            late = [(j, j.task) for j in lane.running if j.task is not None and j.deadline <= now]
            for job, task in late:
                lane.running.discard(job)
                job.abandoned = True
                job.took = now - job.began
                ended = outcome.Ended.timed_out(task.timeout_s)  # or the grace of its cancel
                decision = decide(task, ended, cancel=job.cancelled, host=self.host)
                self._outcomes.append((job, decision, ""))
                topics.append(topic)
        return topics

    def _next_deadline(self) -> float:
        deadlines = [j.deadline for lane in self.lanes.values() for j in lane.running if j.task]
        if not deadlines:
            return 0.5
        return max(0.001, min(0.5, min(deadlines) - time.monotonic()))
