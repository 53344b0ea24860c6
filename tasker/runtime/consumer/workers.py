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

Async topics (`async def exec`, not process-isolated): one feeder thread
per topic hands each job to the instance's event loop
(`tasker.runtime.eventloop`), so `concurrency` counts coroutines, not
threads. The shared state's deadline check records a coroutine past its
timeout as for a thread; `spawn` then cancels it and replaces the loop if
a coroutine blocks it. A cancel cancels the coroutine (`LoopContext`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

from tasker import outcome, text
from tasker.context import Context
from tasker.msgq import is_async
from tasker.runtime import tracing
from tasker.runtime.consumer.state import ConsumerState, Job, Lane
from tasker.runtime.eventloop import EventLoop, LoopContext
from tasker.runtime.execute import arun_exec, decide
from tasker.runtime.isolation import ChildWorker, run
from tasker.runtime.logfields import about_task

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
        self._async = {t for t, lane in state.lanes.items() if _on_loop(lane)}
        self.loop = EventLoop() if self._async else None  # started on first use
        self._coroutines: dict[Job, concurrent.futures.Future[None]] = {}
        # Jobs may be started ahead of free slots (prefetch); at most
        # `concurrency` coroutines of a topic run. A slot is free again when
        # its coroutine ends or is cancelled (abandoned on a blocked loop).
        self._slots = {t: threading.Semaphore(state.lanes[t].concurrency) for t in self._async}

    def start(self) -> None:
        """`concurrency` workers per topic (one feeder for an async topic)."""
        for topic, lane in self.state.lanes.items():
            for _ in range(1 if topic in self._async else lane.concurrency):
                self._start_thread(topic)

    def spawn(self, topic: str) -> None:
        """A timed-out execution of `topic` was abandoned: one more worker in
        its place, or for an async topic, its coroutine cancelled (and the loop
        replaced when that coroutine blocks it)."""
        if topic in self._async:
            self._reap()
            return
        self._start_thread(topic)

    def _start_thread(self, topic: str) -> None:
        with self._lock:
            self._count[topic] += 1
        work = self._feed if topic in self._async else self._work
        t = threading.Thread(target=work, args=(topic,), name=f"tasker-{topic}", daemon=True)
        t.start()

    def stop(self) -> None:
        """Ask every worker to end once its current execution is over."""
        with self._lock:
            counts = dict(self._count)
        for topic, n in counts.items():
            for _ in range(n):
                self.state.lanes[topic].ready.put(None)

    def kill_children(self) -> None:
        """SIGKILL every child process and cancel every coroutine now (end of
        the grace: their tasks were handed back and must not go on running).
        Their workers then end; once the consumer no longer takes work, the
        event loop stops too."""
        with self._lock:
            children = list(self._children)
            coroutines = list(self._coroutines.values())
        for child in children:
            child.kill_now()
        for fut in coroutines:
            fut.cancel()
        if self.loop is not None and not self.state.accepting:
            self.loop.stop()

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
                with tracing.executing(task) as decided:
                    with about_task(task.id, task.topic, task.attempts):
                        decision, log_text = run(
                            lane.cls, task, host=self.host, child=child, ctx=ctx,
                            cancelled=lambda: job.cancelled,
                            began=lambda: self.state.exec_begins(job),
                        )  # fmt: skip
                    decided(decision)
        except BaseException as exc:  # a bug of ours; the task must not stay running
            log.exception(
                "worker failed on task %d", job.task_id, extra={"action": "worker_failed"}
            )
            reason = f"tasker failed running this task: {text.describe(exc)}"
            decision, log_text = decide(task, outcome.Ended.raised(reason), host=self.host), ""
        return self.state.finish(job, decision, log_text)

    # --- async topics: a feeder thread, executions on the loop -------------

    def _feed(self, topic: str) -> None:
        lane = self.state.lanes[topic]
        try:
            while True:
                job = lane.ready.get()
                if job is None:
                    return
                self._slots[topic].acquire()
                try:
                    if not self._submit(lane, job):
                        self._slots[topic].release()
                except BaseException as exc:  # a bug of ours; the task must not stay running
                    self._slots[topic].release()
                    self._failed(job, exc)
        finally:
            with self._lock:
                self._count[topic] -= 1

    def _submit(self, lane: Lane, job: Job) -> bool:
        """Start the job's coroutine; False when none was started (slot unused)."""
        task = job.task
        if task is None:
            return False
        ctx = LoopContext(task.id, task.topic, task.attempts, task.worker_id)
        waited = self.state.begin(job, self.max_wait_s, ctx)
        if waited is None:
            return False  # handed back while it waited
        if waited > self.max_wait_s and not job.cancelled:
            log.info("task %d waited %.1fs to run; handed back", job.task_id, waited,
                     extra={"action": "handed_back", "task_id": job.task_id})  # fmt: skip
            self.state.finish(job, decide(task, outcome.Ended.handed_back()), "")
            return False
        assert self.loop is not None
        with self._lock:
            fut = self.loop.submit(self._arun(lane, job, ctx))
            self._coroutines[job] = fut
        fut.add_done_callback(lambda _: self._forget(job))
        return True

    async def _arun(self, lane: Lane, job: Job, ctx: LoopContext) -> None:
        task = job.task
        assert task is not None
        ctx.bind()
        try:
            with tracing.executing(task) as decided:
                if ctx.cancelled:
                    ended = outcome.Ended.cancelled("cancelled before exec began")
                else:
                    with about_task(task.id, task.topic, task.attempts):
                        ended = await arun_exec(lane.cls, task, ctx)
                decision = decide(task, ended, host=self.host, policy=lane.cls.retry_policy())
                decided(decision)
        except asyncio.CancelledError:
            return  # abandoned: the deadline check or the stop recorded its outcome
        except BaseException as exc:  # a bug of ours; the task must not stay running
            self._failed(job, exc)
            return
        self.state.finish(job, decision, ctx.log_text())

    def _failed(self, job: Job, exc: BaseException) -> None:
        log.exception("worker failed on task %d", job.task_id, extra={"action": "worker_failed"})
        if job.task is not None:
            reason = f"tasker failed running this task: {text.describe(exc)}"
            self.state.finish(job, decide(job.task, outcome.Ended.raised(reason),
                                          host=self.host), "")  # fmt: skip

    def _forget(self, job: Job) -> None:
        """Its coroutine ended or was cancelled: the slot is free (once)."""
        with self._lock:
            known = self._coroutines.pop(job, None) is not None
        if known:
            self._slots[job.delivery.topic].release()

    def _reap(self) -> None:
        """Cancel the coroutines of abandoned jobs; replace a blocked loop."""
        with self._lock:
            late = [fut for job, fut in self._coroutines.items() if job.abandoned]
        for fut in late:
            fut.cancel()
        if self.loop is not None:
            self.loop.unstick()


def _on_loop(lane: Lane) -> bool:
    """Whether this topic's executions run on the instance's event loop."""
    return is_async(lane.cls) and lane.cls.isolation != "process"
