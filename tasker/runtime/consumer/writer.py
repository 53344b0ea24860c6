"""The status writer: starts and outcomes of executions, batched, to the database.

Each pass takes every finished outcome and every task that free slots
allow to start, and writes them in one transaction: one UPDATE per kind of
outcome and one token-checked UPDATE for the starts (DESIGN 6: a task costs
no round trip of its own). Then the started tasks go to their workers and
the messages whose tasks are all written are handed to the intake for acks.

A write that fails for a passing reason (the database restarting) keeps
everything and is retried by the service's supervision, with back-off,
until it gives up loudly. A write the database refuses for its data is
split: each outcome is written alone, and one that still fails is replaced
by a failure saying why ("could not store this outcome"), so one bad row
never holds back the outcomes beside it nor comes back for ever.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasker import db, outcome, store, text
from tasker.runtime.consumer.state import ConsumerState, Job, Outcome
from tasker.runtime.execute import decide
from tasker.runtime.logfields import task_extra
from tasker.runtime.service import InstanceId, Pass, Service, Supervision
from tasker.runtime.stats import Stats
from tasker.states import Status

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
"""A pass with nothing to do returns after this long (the loop then checks stop)."""


@dataclass(frozen=True)
class Written(Pass):
    """One writer pass: outcomes written and tasks started (the starts a
    stale token refused included)."""

    outcomes: int = 0
    starts: int = 0


class StatusWriter(Service):
    """Turns the shared state's starts and outcomes into rows."""

    name = "writer"

    def __init__(
        self,
        database: db.Database,
        state: ConsumerState,
        supervision: Supervision,
        *,
        instance_id: InstanceId,
        fqdn: str,
        stats: Stats,
        respawn: Callable[[str], None],
        on_prefetch_change: Callable[[], None],
        on_results: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(supervision)
        # Topics whose outcomes go to a result topic: after a commit that
        # ended one, `on_results` wakes the result publisher.
        self.on_results = on_results
        self._reporting = {t for t, lane in state.lanes.items() if lane.cls.result_topic}
        self.database = database
        self.state = state
        self.instance_id = instance_id
        self.fqdn = fqdn
        self.stats = stats
        self.respawn = respawn
        self.on_prefetch_change = on_prefetch_change
        self._db = database.held()

    def on_stop(self) -> None:
        self._db.close()

    def run_once(self) -> Written:
        """Write what is ready (waiting up to `IDLE_WAIT_S` for it); how many
        outcomes and starts went in one transaction; waits 0."""
        self.doing = "waiting for outcomes"
        done, starts, expired = self.state.take_work(IDLE_WAIT_S)
        for topic in expired:
            log.warning("an execution of %s timed out or ignored a cancel; its thread is abandoned",
                        topic, extra={"action": "timeout", "topic": topic})  # fmt: skip
            self.respawn(topic)
        if not done and not starts:
            return Written(0.0)
        self.doing = f"writing {len(done)} outcome(s) and {len(starts)} start(s)"
        try:
            rows = self._write(done, starts)
        except Exception as exc:
            if db.is_transient(exc):
                self.state.requeue(done, starts)
                raise
            log.warning("a batch write was refused (%s); writing its rows one by one",
                        text.describe(exc), extra={"action": "write_split"})  # fmt: skip
            rows = self._write_alone(done, starts)
        self._after(done, starts, rows)
        return Written(0.0, len(done), len(starts))

    # --- writing --------------------------------------------------------------

    def _write(self, done: list[Outcome], starts: list[Job]) -> list[Any]:
        finishes = [finish_of(job, decision, log_text) for job, decision, log_text in done]
        with self._db.transaction() as conn:
            store.task_finish_many(conn, finishes)
            if not starts:
                return []
            return store.task_start_if_token(
                conn,
                pairs=[(j.task_id, j.token) for j in starts],
                instance_id=self.instance_id(),
                fqdn=self.fqdn,
            )

    def _write_alone(self, done: list[Outcome], starts: list[Job]) -> list[Any]:
        """Each outcome in its own transaction; a refused one is replaced by a
        failure saying why. Passing errors still go to the supervisor."""
        for i, (job, decision, log_text) in enumerate(done):
            try:
                self._write([(job, decision, log_text)], [])
            except Exception as exc:
                if db.is_transient(exc):
                    self.state.requeue(done[i:], starts)
                    raise
                self._write_refused(job, decision, exc)
        try:
            return self._write([], starts)
        except Exception as exc:
            if db.is_transient(exc):
                self.state.requeue([], starts)
                raise
            # Their claims stay; the master dispatches them again after the window.
            log.error("could not start %d task(s): %s", len(starts), text.describe(exc),
                      extra={"action": "start_refused"})  # fmt: skip
            return []

    def _write_refused(self, job: Job, decision: outcome.Decision, exc: Exception) -> None:
        assert job.task is not None
        reason = f"could not store this outcome ({decision.transition}): {text.describe(exc)}"
        log.error("task %d: %s", job.task_id, reason,
                  extra={"action": "outcome_refused", "task_id": job.task_id})  # fmt: skip
        fallback = decide(job.task, outcome.Ended.not_stored(reason), host=self.fqdn)
        try:
            self._write([(job, fallback, "")], [])
        except Exception as again:
            if db.is_transient(again):
                raise
            # Left running: the master rescues it after its timeout.
            log.error("task %d: the failure could not be stored either: %s", job.task_id,
                      text.describe(again), extra={"action": "outcome_lost"})  # fmt: skip

    # --- after a write ------------------------------------------------------------

    def _after(self, done: list[Outcome], starts: list[Job], rows: list[Any]) -> None:
        self.state.written([job for job, _d, _t in done])
        for job, decision, _text in done:
            if decision.target in (Status.FAILED, Status.RETRY) and job.task is not None:
                # One line per failed run, with the task's fields: what a log
                # shipper alerts on (the traceback is in the row's errlog).
                level = logging.WARNING if decision.target is Status.FAILED else logging.INFO
                why = decision.err.strip().partition("\n")[0]
                log.log(level, "task %d %s: %s", job.task_id, decision.target.value, why,
                        extra=task_extra(
                            job.task_id, job.task.topic, job.task.attempts,
                            action=decision.target.value))  # fmt: skip
        stale = self.state.started(starts, rows)
        if stale:
            self._log_stale(stale)
        if done and self.state.prefetch_moved():
            self.on_prefetch_change()
        if self._reporting and self.on_results is not None and self._reported(done):
            self.on_results()
        if self.stats.active:
            at = dt.datetime.now(dt.timezone.utc)
            for job, decision, _text in done:
                status = decision.target.value
                self.stats(job.delivery.topic, status, at, job.took)

    def _reported(self, done: list[Outcome]) -> bool:
        return any(job.delivery.topic in self._reporting for job, _d, _t in done)

    def _log_stale(self, jobs: list[Job]) -> None:
        try:
            with self.database.transaction() as conn:
                found = store.task_status_many(conn, ids=[j.task_id for j in jobs])
        except Exception:  # only a log line is at stake
            found = {}
        for job in jobs:
            extra = {"action": "stale", "task_id": job.task_id}
            if job.task_id in found:
                log.info("dropped stale message for task %d (now %s)", job.task_id,
                         found[job.task_id], extra=extra)  # fmt: skip
            else:
                log.warning("dropped a message for task %d: no such task", job.task_id,
                            extra={"action": "missing_task", "task_id": job.task_id})  # fmt: skip


def finish_of(job: Job, decision: outcome.Decision, log_text: str) -> store.Finish:
    """What `store.task_finish_many` writes for a job's outcome (its start is
    written); `started` and `finished` become when its exec began and ended,
    measured now, just before the write, by this process's monotonic clock
    (a busy writer's delay is not run time)."""
    assert job.task is not None
    now = time.monotonic()
    ago = None if job.exec_began is None else now - job.exec_began
    ended = None if job.exec_ended is None or ago is None else now - job.exec_ended
    return store.Finish(job.task_id, job.task.worker_id, decision, log_text, job.task.linked,
                        ago, ended)  # fmt: skip
