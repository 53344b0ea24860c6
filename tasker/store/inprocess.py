"""The claim of an in-process run (`tasker.testing.run_until_idle`): no master, no fence.

It picks due tasks exactly as the master's claim does (pending or retry,
exec_after passed, not in flight) and stamps them with a fresh token, so
the consumer's token-checked start and guarded finish apply unchanged.
It carries no term: nothing here claims to be master.
"""

from __future__ import annotations

import sqlalchemy as sa

from tasker.schema import task
from tasker.store.claims import due_filter, lock_free, not_in_flight
from tasker.store.dialect import _now_param, _per_dialect, random_token, to_ms


def _claim_stmt(pg: bool) -> sa.Update:
    n = _now_param()
    due = (
        sa.select(task.c.id)
        .where(
            *due_filter(n, sa.bindparam("p_topic", type_=sa.String())),
            not_in_flight(n),
            lock_free(n),
        )
        .order_by(task.c.priority.desc(), task.c.exec_after, task.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    if pg:
        due = due.with_for_update(skip_locked=True)
        picked = task.c.id == sa.any_(sa.func.array(due.scalar_subquery()))
    else:
        picked = task.c.id.in_(due.scalar_subquery())
    return (
        sa.update(task)
        .where(picked)
        .values(token=random_token(), dispatched=n, updated=n)
        .returning(task.c.id, task.c.token, task.c.priority, task.c.exec_after)
    )


_CLAIM = _per_dialect(_claim_stmt)


def task_claim_inprocess(
    conn: sa.Connection, *, topic: str, limit: int, window_s: float
) -> list[tuple[int, int]]:
    """Stamp up to `limit` due tasks of `topic` with a fresh token, in the
    master's claim order: higher priority first, then oldest due.

    Due as for `task_claim_due` (the redelivery window `window_s`, seconds, plus each
    task's timeout decides when a sent task is no longer in flight), but
    without the master's term and fence. Returns (id, token) pairs.
    """
    params = {"p_topic": topic, "limit": limit, "window_ms": to_ms(window_s), "now": None}
    rows = sorted(
        conn.execute(_CLAIM[conn.dialect.name], params),
        key=lambda r: (-r.priority, r.exec_after, r.id),
    )
    return [(r.id, r.token) for r in rows]
