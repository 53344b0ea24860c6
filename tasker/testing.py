"""Helpers for users' own tests: provision the schema, run due tasks in this process.

`run_until_idle` is tasker's burst mode, after RQ's `Worker.work(burst=True)`
and procrastinate's `run_worker(wait=False)`: it runs every due task of the
app's registered topics in the calling process and returns when nothing is
due. No broker and no election: tasks are picked by `store.task_claim_inprocess`
(the master's due rule without its fence), then started, executed and
finished by the consumer's own path (`Started.from_row`,
`tasker.runtime.isolation.run`, `tasker.outcome.decide`,
`store.task_finish_many`), so states, runs left, errlog, back-off
and `ctx.exec_after` end exactly as they would in production.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time

from tasker import outcome, provision, store
from tasker.app import Tasker
from tasker.msgq import MsgQ
from tasker.runtime.execute import Started, decide
from tasker.runtime.isolation import ChildWorker, run

CLAIM_BATCH = 100
"""Tasks claimed per topic and round; the rest wait for the next round."""

INPROCESS_INSTANCE_ID = 0
"""The `instance_id` written on tasks run here: no instance row has it, so a
master would rescue them as orphaned if this process died mid-run."""


def create_schema(app: Tasker) -> None:
    """Provision `app`'s database with tasker's packaged migrations (up to every head).

    Idempotent: a database already at head is left as it is. Raises
    `DatabaseError` when the database cannot be reached and `MigrationError`
    when it holds revisions tasker does not know.
    """
    with app.transaction() as conn:
        provision.upgrade(provision.config(connection=conn))


def run_until_idle(app: Tasker, timeout: float = 10.0) -> dict[str, int]:
    """Run every due task of `app`'s registered topics here until none is due.

    A task is due when pending or retry, its exec_after has passed and no
    master has it in flight; a retry scheduled in the future is not due, so
    back-off ends the run rather than being waited out. Tasks published by
    the tasks themselves run in the same call. Stops after `timeout` seconds
    (tasks already claimed but not started are handed back). Each task runs
    under its own timeout, in a thread (abandoned at the timeout, as the
    consumer does) or in a child process for `isolation = "process"`.

    Returns {status: count} of the tasks this call ran, by the status they
    ended in, e.g. {"success": 3, "retry": 1}. Raises `DatabaseError`.
    """
    deadline = time.monotonic() + timeout
    children: dict[str, ChildWorker] = {}
    ran: set[int] = set()
    try:
        while time.monotonic() < deadline:
            _expire(app)
            claimed = False
            for cls in list(app.registry):
                with app.transaction() as conn:
                    pairs = store.task_claim_inprocess(
                        conn, topic=cls.topic, limit=CLAIM_BATCH,
                        window_s=app.settings.redelivery_window_s,
                    )
                claimed = claimed or bool(pairs)
                for i, pair in enumerate(pairs):
                    if time.monotonic() >= deadline:
                        with app.transaction() as conn:
                            store.task_unclaim_many(conn, pairs=pairs[i:])
                        break
                    task_id = _run_one(app, cls, pair, children)
                    if task_id is not None:
                        ran.add(task_id)
            if not claimed:
                break
        _expire(app)  # what the start refused as expired in the last round
    finally:
        for child in children.values():
            child.kill()
    if not ran:
        return {}
    with app.transaction() as conn:
        final = store.task_status_many(conn, ids=sorted(ran))
    return dict(collections.Counter(final.values()))


def _expire(app: Tasker) -> None:
    """The master's expiry pass: tasks whose `expires` passed end `failed`."""
    with app.transaction() as conn:
        store.task_expire_due(
            conn, note=outcome.expired_note(host=app.settings.fqdn), limit=CLAIM_BATCH
        )


def _run_one(
    app: Tasker, cls: type[MsgQ], pair: tuple[int, int], children: dict[str, ChildWorker]
) -> int | None:
    """Start, execute and finish one claimed task; None when its token moved on."""
    with app.transaction() as conn:
        rows = store.task_start_if_token(
            conn, pairs=[pair], instance_id=INPROCESS_INSTANCE_ID, fqdn=app.settings.fqdn
        )
    if not rows:
        return None
    task = Started.from_row(rows[0])
    began = [time.monotonic()]  # exec's start, as the consumer records it
    host = app.settings.fqdn
    if cls.isolation == "process":
        if cls.topic not in children:
            children[cls.topic] = ChildWorker(cls, host=host)
        decision, text = run(cls, task, host=host, child=children[cls.topic],
                             cancelled=lambda: task.cancelled,
                             began=lambda: began.append(time.monotonic()))  # fmt: skip
    else:
        decision, text = _in_thread(cls, task, host)
    took = time.monotonic() - began[-1]
    with app.transaction() as conn:
        finish = store.Finish(task.id, task.worker_id, decision, text, task.linked, took)
        store.task_finish_many(conn, [finish])
    if app.stats.active:
        status = decision.target.value
        app.stats(task.topic, status, dt.datetime.now(dt.timezone.utc), took)
    return task.id


def _in_thread(cls: type[MsgQ], task: Started, host: str) -> tuple[outcome.Decision, str]:
    """`execute` in a daemon thread, abandoned at the task's timeout like the consumer's."""
    done: list[tuple[outcome.Decision, str]] = []
    t = threading.Thread(
        target=lambda: done.append(run(cls, task, host=host, cancelled=lambda: task.cancelled)),
        name=f"tasker-inprocess-{task.topic}",
        daemon=True,
    )
    t.start()
    t.join(task.timeout_s)
    if t.is_alive() or not done:
        return decide(task, outcome.Ended.timed_out(task.timeout_s), host=host), ""
    return done[0]
