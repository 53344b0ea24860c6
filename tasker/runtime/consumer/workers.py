"""Execution workers: per topic, `concurrency` threads that run `exec`.

A worker takes a job whose start is written, runs it (in this thread, or in
its own child process for `isolation = "process"`) and hands the outcome to
the shared state, which frees the slot at once. `execute` never raises; the
worker's own bookkeeping is supervised besides: should it fail on a job,
that job fails with the error and the worker goes on. A thread execution
that outlives its timeout is abandoned (its outcome is `timeout`) and a new
worker takes its slot, so a stuck task never holds capacity.

Abort: a thread execution's `Context` is handed to the shared state, which
tells it of a cancel; a process-isolated one is watched by its worker,
which kills the child as soon as the job is flagged.
"""

from __future__ import annotations

import logging
import threading

from tasker import outcome, text
from tasker.context import Context
from tasker.runtime.consumer.state import ConsumerState, Job, Lane
from tasker.runtime.execute import decide
from tasker.runtime.isolation import ChildWorker, run

log = logging.getLogger(__name__)


class Workers:
    """The execution threads of every topic of one consumer."""

    def __init__(self, state: ConsumerState, *, max_wait_s: float, host: str) -> None:
        self.state = state
        # A task started ahead that waited longer than this is handed back
        # unexecuted, so it can never still run when the master rescues it.
        self.max_wait_s = max_wait_s
        self.host = host
        self._count: dict[str, int] = dict.fromkeys(state.lanes, 0)
        self._children: set[ChildWorker] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """`concurrency` workers per topic."""
        for topic, lane in self.state.lanes.items():
            for _ in range(lane.concurrency):
                self.spawn(topic)

    def spawn(self, topic: str) -> None:
        """One more worker for `topic` (a timed-out one's replacement)."""
        with self._lock:
            self._count[topic] += 1
        t = threading.Thread(target=self._work, args=(topic,), name=f"tasker-{topic}", daemon=True)
        t.start()

    def stop(self) -> None:
        """Ask every worker to end once its current execution is over."""
        with self._lock:
            counts = dict(self._count)
        for topic, n in counts.items():
            for _ in range(n):
                self.state.lanes[topic].ready.put(None)

    def kill_children(self) -> None:
        """SIGKILL every child process now (end of the grace: their tasks were
        handed back and must not go on running). Their workers then end."""
        with self._lock:
            children = list(self._children)
        for child in children:
            child.kill_now()

    def alive(self) -> int:
        """Worker threads now running (tests check nothing leaks)."""
        with self._lock:
            return sum(self._count.values())

    # --- one worker ---------------------------------------------------------

    def _work(self, topic: str) -> None:
        lane = self.state.lanes[topic]
        child = ChildWorker(lane.cls, host=self.host) if lane.cls.isolation == "process" else None
        if child is not None:
            with self._lock:
                self._children.add(child)
        try:
            while True:
                job = lane.ready.get()
                if job is None:
                    return
                if not self._run(lane, job, child):
                    return  # abandoned (timed out): a new worker has the slot
        finally:
            with self._lock:
                self._count[topic] -= 1
                if child is not None:
                    self._children.discard(child)
            if child is not None:
                child.kill()

    def _run(self, lane: Lane, job: Job, child: ChildWorker | None) -> bool:
        """Run one job and hand over its outcome; False when this worker must end."""
        ctx = None
        if child is None and job.task is not None:
            ctx = Context(job.task.id, job.task.topic, job.task.attempts, job.task.worker_id)
        waited = self.state.begin(job, self.max_wait_s, ctx)
        if waited is None or job.task is None:
            return True  # handed back while it waited
        task = job.task
        try:
            if waited > self.max_wait_s and not job.cancelled:
                log.info("task %d waited %.1fs to run; handed back", job.task_id, waited,
                         extra={"action": "handed_back", "task_id": job.task_id})  # fmt: skip
                decision, log_text = decide(task, outcome.Ended.handed_back(), host=self.host), ""
            else:
                decision, log_text = run(lane.cls, task, host=self.host, child=child, ctx=ctx,
                                         cancelled=lambda: job.cancelled)  # fmt: skip
        except BaseException as exc:  # a bug of ours; the task must not stay running
            log.exception(
                "worker failed on task %d", job.task_id, extra={"action": "worker_failed"}
            )
            reason = f"tasker failed running this task: {text.describe(exc)}"
            decision, log_text = decide(task, outcome.Ended.raised(reason), host=self.host), ""
        return self.state.finish(job, decision, log_text)
