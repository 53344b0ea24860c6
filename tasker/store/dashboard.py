"""Read statements the dashboard needs beyond `history`: a keyset page of
tasks, recent run times, finishes per minute, and whether a topic exists.

The task page is ordered newest first by (created, id) and built as one
small index range per status (`ix_task_history` when a topic is given,
`ix_task_status_created` otherwise), each cut at `limit`, then merged: it
reads at most `limit` rows per status whatever the table's size, where one
scan in id order would walk past every row the filter rejects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states
from tasker.schema import task
from tasker.states import Status
from tasker.store.dialect import _is_pg, _status_in, db_now, plus_ms
from tasker.store.history import LIST_COLUMNS, TimeBound, _filters


def _after_cursor(before: int) -> ColumnElement[bool]:
    """Rows older than task `before` in (created, id) order. A cursor task that
    was purged meanwhile is stood in for by the nearest older id."""
    created = (
        sa.select(task.c.created)
        .where(task.c.id <= before)
        .order_by(task.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return sa.tuple_(task.c.created, task.c.id) < sa.tuple_(created, sa.literal(before))


def task_page(
    conn: sa.Connection,
    *,
    topic: str | None = None,
    statuses: Iterable[Status] | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    task_id: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[sa.Row[Any]]:
    """Up to `limit` tasks newest first by (created, id), older than task
    `before` when given; since/until bound `created`; `task_id` picks one id."""
    where = _filters(topic=topic, statuses=None, since=since, until=until, time_column="created")
    if before is not None:
        where.append(_after_cursor(before))
    if task_id is not None:
        stmt = sa.select(*LIST_COLUMNS).where(task.c.id == task_id, *where)
        if statuses is not None:
            stmt = stmt.where(_status_in(statuses))
        return conn.execute(stmt).all()
    order = (task.c.created.desc(), task.c.id.desc())
    branches = [
        sa.select(*LIST_COLUMNS)
        .where(*where, _status_in([s]))
        .order_by(*order)
        .limit(limit)
        .subquery()
        for s in (list(statuses) if statuses is not None else list(Status))
    ]
    if not branches:
        return []
    merged = sa.union_all(*(sa.select(*b.c) for b in branches)).subquery()
    stmt = sa.select(*merged.c).order_by(merged.c.created.desc(), merged.c.id.desc()).limit(limit)
    return conn.execute(stmt).all()


def task_topic_exists(conn: sa.Connection, *, topic: str) -> bool:
    """Whether any task row has this topic (one probe of `ix_task_history`)."""
    stmt = sa.select(task.c.id).where(task.c.topic == topic).limit(1)
    return conn.execute(stmt).first() is not None


def task_recent_runs(conn: sa.Connection, *, window_ms: int, limit: int) -> list[sa.Row[Any]]:
    """(topic, started, finished) of the newest `limit` finished tasks of the
    last `window_ms`, newest first (a backward range of `ix_task_finished`)."""
    stmt = (
        sa.select(task.c.topic, task.c.started, task.c.finished)
        .where(
            task.c.finished >= plus_ms(db_now(), -window_ms),
            task.c.started.isnot(None),
            _status_in(sorted(states.TERMINAL)),
        )
        .order_by(task.c.finished.desc())
        .limit(limit)
    )
    return conn.execute(stmt).all()


def _minute_of(conn: sa.Connection, col: Any) -> ColumnElement[int]:
    """Whole minutes since the Unix epoch of a timestamp column."""
    if _is_pg(conn):
        return sa.cast(sa.func.floor(sa.extract("epoch", col) / 60), sa.BigInteger)
    return sa.cast(sa.func.strftime("%s", col), sa.Integer) / 60


def task_finished_per_minute(
    conn: sa.Connection, *, window_ms: int
) -> tuple[dt.datetime, list[sa.Row[Any]]]:
    """(database now, [(minute, status, n)]): terminal finishes of the last
    `window_ms` per epoch minute and status (a range of `ix_task_finished`)."""
    now = conn.execute(sa.select(db_now())).scalar_one()
    minute = _minute_of(conn, task.c.finished).label("minute")
    stmt = (
        sa.select(minute, task.c.status, sa.func.count().label("n"))
        .where(
            task.c.finished >= plus_ms(db_now(), -window_ms), _status_in(sorted(states.TERMINAL))
        )
        .group_by(minute, task.c.status)
        .order_by(minute)
    )
    return now, conn.execute(stmt).all()
