"""Statements of the master's rescue: running tasks whose execution is stuck
or whose instance died, found and ended by its decisions (fenced).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker.schema import instance, task
from tasker.states import Status
from tasker.store.dialect import _now, _status_in, plus_ms, to_ms
from tasker.store.finish import Finish, task_finish_many
from tasker.store.leases import core_fence
from tasker.store.links import LINKED


def task_find_stuck(
    conn: sa.Connection,
    *,
    grace_s: float,
    out_of_date_s: float,
    limit: int,
    now: dt.datetime | None = None,
) -> Sequence[sa.Row[Any]]:
    """Running tasks past timeout + grace, or whose instance stopped beating
    for `out_of_date_s`, or cancelled by an admin more than `out_of_date_s` +
    grace ago (their instance should have finished them within two
    heartbeats). Durations in seconds."""
    grace_ms, out_of_date_ms = to_ms(grace_s), to_ms(out_of_date_s)
    n = _now(now)
    live = sa.select(instance.c.id).where(instance.c.heartbeat >= plus_ms(n, -out_of_date_ms))
    overdue = task.c.started < plus_ms(n, -(task.c.timeout + grace_ms))
    orphan = sa.or_(task.c.instance_id.is_(None), task.c.instance_id.not_in(live))
    unheeded = task.c.cancel_requested < plus_ms(n, -(out_of_date_ms + grace_ms))
    stmt = (
        sa.select(
            task.c.id,
            task.c.topic,
            task.c.worker_id,
            task.c.retry,
            task.c.attempts,
            task.c.instance_id,
            task.c.cancel_requested,
            overdue.label("overdue"),
            LINKED,
        )
        .where(_status_in([Status.RUNNING]), sa.or_(overdue, orphan, unheeded))
        .order_by(task.c.id)
        .limit(limit)
    )
    return conn.execute(stmt).all()


def task_rescue_many(
    conn: sa.Connection,
    *,
    term: int,
    instance_id: int,
    finishes: Sequence[Finish],
) -> int:
    """Write the master's rescue decisions (retry or fail), fenced by its term;
    how many rows changed. Raises `LeadershipLost` when the term is over."""
    core_fence(conn, term=term, instance_id=instance_id)
    return task_finish_many(conn, finishes)
