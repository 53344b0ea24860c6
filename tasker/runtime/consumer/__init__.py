"""Consumers: take messages, run executions, write outcomes in batches, ack.

Protocol (DESIGN 6). Taking a message: a token-checked UPDATE to `running`
(a task whose token moved on is dropped as stale), then `exec` under its
timeout, then the final UPDATE, then the ack; a message is acked only after
every task it carries is written. The parts, one module each, meet in
`ConsumerState` (the only shared state, one lock):

- `Intake` (a service): the broker connection, deliveries in, acks out;
- `StatusWriter` (a service): starts and outcomes, batched, to the database;
- `Workers`: per topic, `concurrency` threads running `exec`.

`Consumer` builds them and orders their start and graceful stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tasker import brokers, db, outcome, store
from tasker.exceptions import DatabaseError
from tasker.msgq import MsgQ
from tasker.runtime.consumer.intake import Intake
from tasker.runtime.consumer.state import ConsumerState
from tasker.runtime.consumer.workers import Workers
from tasker.runtime.consumer.writer import StatusWriter, finish_of
from tasker.runtime.execute import decide
from tasker.runtime.service import InstanceId, Supervision
from tasker.runtime.stats import Stats

log = logging.getLogger(__name__)

__all__ = ["Consumer", "ConsumerState"]


class Consumer:
    """All topics of one instance."""

    def __init__(
        self,
        database: db.Database,
        broker: brokers.Broker,
        supervision: Supervision,
        *,
        classes: dict[str, type[MsgQ]],
        instance_id: InstanceId,
        fqdn: str,
        stats: Stats,
        prefetch: int | None,
        max_wait_s: float,
        on_prefetch_change: Callable[[], None],
        on_results: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.fqdn = fqdn
        self.state = ConsumerState(
            classes, prefetch=prefetch, host=fqdn, ordered_acks=broker.is_amqp
        )
        self.workers = Workers(self.state, max_wait_s=max_wait_s, host=fqdn)
        self.intake = Intake(broker, self.state, supervision.on_fatal)
        self.writer = StatusWriter(
            database,
            self.state,
            supervision,
            instance_id=instance_id,
            fqdn=fqdn,
            stats=stats,
            respawn=self.workers.spawn,
            on_prefetch_change=on_prefetch_change,
            on_results=on_results,
        )

    def start(self) -> None:
        """Start workers, connect (failing fast when the broker is unreachable),
        then the intake and the writer."""
        if not self.state.lanes:
            return
        self.workers.start()
        self.intake.connect()
        self.intake.start()
        self.writer.start()

    def alive(self) -> bool:
        return self.intake.alive() and self.writer.alive()

    def topics_row(self) -> dict[str, dict[str, int]]:
        return self.state.topics_row()

    def cancel_requested(self, pairs: list[tuple[int, int]]) -> None:
        """An admin cancelled these running tasks, as (task id, worker id) (the
        heartbeat reads them): their executions are told, or killed."""
        for job in self.state.cancel_requested(pairs):
            log.info("task %d: cancel requested; stopping its execution", job.task_id,
                     extra={"action": "cancel_requested", "task_id": job.task_id})  # fmt: skip

    def stop_taking(self) -> None:
        """Stop starting executions; what was received but not started goes
        back to the master at once (claim undone), so nothing waits."""
        jobs = self.state.stop_taking()
        if not jobs:
            return
        try:
            with self.database.transaction() as conn:
                store.task_unclaim_many(conn, pairs=[(j.task_id, j.token) for j in jobs])
        except DatabaseError as exc:  # their messages are requeued when we close
            log.warning("could not return unstarted tasks: %s", exc, extra={"action": "unclaim"})
            return
        self.state.written(jobs)

    def wait_idle(self, timeout: float, force: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no execution runs and every outcome is written."""
        return self.state.wait_idle(timeout, force)

    def hand_back(self) -> int:
        """Give every running execution back to `pending`, no run charged; one
        an admin cancelled ends cancelled instead. Returns how many."""
        jobs = self.state.abandon_running()
        self.workers.kill_children()  # a handed-back task must not go on running
        back = outcome.Ended.handed_back()  # or cancelled, when an admin asked
        finishes = [
            finish_of(job, decide(job.task, back, cancel=job.cancelled, host=self.fqdn), "")
            for job in jobs
            if job.task is not None
        ]
        n = len(finishes)
        if n:
            try:
                with self.database.transaction() as conn:
                    store.task_finish_many(conn, finishes)
                log.info("handed back %d unfinished task(s)", n, extra={"action": "handed_back"})
            except DatabaseError as exc:
                log.error("could not hand back %d task(s); the master will rescue them: %s",
                          n, exc, extra={"action": "hand_back_failed"})  # fmt: skip
        self.state.written(jobs)
        return n

    def close(self, timeout: float = 5.0) -> None:
        """Flush acks, close the connection, end the threads and child processes."""
        self.state.stop_taking()
        self.writer.stop(timeout)
        self.intake.closing = True
        deadline = time.monotonic() + timeout
        while self.state.has_acks() and time.monotonic() < deadline and self.intake.alive():
            time.sleep(0.01)  # the intake thread owns the channel the acks go on
        self.intake.stop(timeout)
        self.workers.stop()
        self.workers.kill_children()
