"""Statements of abort (DESIGN 7): an admin's cancel, and each instance
learning which of its running tasks were cancelled.

Protocol. `task_cancel_or_stop` is the admin's one statement: a pending or
retry row becomes `failed` at once (the "cancel" transition); a running row
keeps `running`, so the guarded transitions of its execution stay valid,
and gets `cancel_requested`. Each instance's heartbeat reads its own
requested rows (`task_cancel_wanted`, one look-up in the partial index
`ix_task_cancel`); on PostgreSQL a NOTIFY on `CANCEL_CHANNEL` carrying the
instance id makes that instance beat at once. The execution's own write then
records the run as cancelled; the master's rescue does so for a row whose
instance died. River (`JobCancel`: metadata `cancel_attempted_at`, a
control NOTIFY, the rescuer finishing such jobs as cancelled) and
procrastinate (`abort_requested`, workers polling and listening for it) work
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker import states
from tasker.schema import task
from tasker.states import Status
from tasker.store.dialect import (
    CAPACITY_PREFIX,
    PUBLISH_CHANNEL,
    _in,
    _notify,
    _status_guard,
    db_now,
)
from tasker.store.links import LINKED, task_links_on_terminal

CANCEL_CHANNEL = "tasker_cancel"
"""NOTIFY channel of cancel requests; the payload is the instance id that runs the task."""


def task_cancel_or_stop(conn: sa.Connection, *, ids: Sequence[int], note: str) -> list[sa.Row[Any]]:
    """Cancel tasks in one statement: pending/retry -> failed with `note` in
    errlog; running -> `cancel_requested` set (status unchanged, the first
    request's time kept). Returns (id, status, instance_id) of every row
    changed, status as it is now: `failed` (cancelled) or `running`
    (asked to stop). Finished and unknown ids are left alone. A row cancelled
    here ends its chain or counts as an ended group member
    (`task_links_on_terminal`, in this transaction), and wakes `app.result`."""
    cancel = states.transition("cancel")
    due = _status_guard(cancel.sources)
    n = db_now()

    def when_due(value: Any, other: Any) -> Any:
        return sa.case((due, value), else_=other)

    stmt = (
        sa.update(task)
        .where(_in(conn, task.c.id, "ids"), _status_guard(cancel.sources | {Status.RUNNING}))
        .values(
            status=when_due(sa.literal(cancel.target.value), task.c.status),
            updated=n,
            finished=when_due(n, task.c.finished),
            token=when_due(sa.null(), task.c.token),
            dispatched=when_due(sa.null(), task.c.dispatched),
            errlog=when_due(task.c.errlog + sa.literal(note), task.c.errlog),
            cancel_requested=sa.func.coalesce(task.c.cancel_requested, n),
        )
        .returning(task.c.id, task.c.status, task.c.instance_id, task.c.topic, LINKED)
    )
    rows = conn.execute(stmt, {"ids": list(ids)}).all()
    running = Status.RUNNING.value
    ended = [r for r in rows if r.status != running]
    task_links_on_terminal(conn, ids=[r.id for r in ended if r.linked])
    for topic in sorted({r.topic for r in ended}):
        _notify(conn, PUBLISH_CHANNEL, CAPACITY_PREFIX + topic)
    for iid in sorted({r.instance_id for r in rows if r.status == running and r.instance_id}):
        _notify(conn, CANCEL_CHANNEL, str(iid))
    return sorted(rows, key=lambda r: r.id)


def task_cancel_wanted(conn: sa.Connection, *, instance_id: int) -> list[tuple[int, int]]:
    """(id, worker_id) of the tasks running on `instance_id` that an admin
    cancelled: one look-up in `ix_task_cancel` (read by every heartbeat)."""
    stmt = sa.select(task.c.id, task.c.worker_id).where(
        task.c.instance_id == instance_id,
        # Spelled as the index predicate is, so SQLite uses it as well.
        task.c.status == sa.literal_column(f"'{Status.RUNNING.value}'"),
        task.c.cancel_requested.isnot(None),
    )
    return [(r.id, r.worker_id) for r in conn.execute(stmt)]
