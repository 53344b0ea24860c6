"""Read statements the dashboard needs beyond `history`: a keyset page of
tasks, recent run times, finishes per minute, and whether a topic exists.

The task page is ordered newest first by (created, id) and built as one
small index range per status (`ix_task_history` when a topic is given,
`ix_task_status_created` otherwise; pending rows without a topic, which that
index leaves out, one range per topic), each cut at `limit`, then merged: it
reads at most `limit` rows per range whatever the table's size, where one
scan in id order would walk past every row the filter rejects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states
from tasker.schema import UTCDateTime, task
from tasker.states import Status
from tasker.store.dialect import _is_pg, _status_in, db_now, plus_ms, to_ms
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
) -> Sequence[sa.Row[Any]]:
    """Up to `limit` tasks newest first by (created, id), older than task
    `before` when given; since/until bound `created`; `task_id` picks one id."""
    where = _filters(topic=topic, statuses=None, since=since, until=until, time_column="created")
    if before is not None:
        where.append(_after_cursor(before))
    if task_id is not None:
        # Select[Any]: rows of these columns, whatever SQLAlchemy's typing counts.
        stmt: sa.Select[Any] = sa.select(*LIST_COLUMNS).where(task.c.id == task_id, *where)
        if statuses is not None:
            stmt = stmt.where(_status_in(statuses))
        return conn.execute(stmt).all()
    order = (task.c.created.desc(), task.c.id.desc())
    branches = []
    for status in list(statuses) if statuses is not None else list(Status):
        # ix_task_status_created leaves pending rows out (publishing stays as
        # fast as before it): without a topic, pending is read topic by topic.
        by_topic = [None] if topic is not None or status != Status.PENDING else task_topics(conn)
        for t in by_topic:
            branch = sa.select(*LIST_COLUMNS).where(*where, _status_in([status]))
            if t is not None:
                branch = branch.where(task.c.topic == t)
            branches.append(branch.order_by(*order).limit(limit).subquery())
    if not branches:
        return []
    merged = sa.union_all(*(sa.select(*b.c) for b in branches)).subquery()
    stmt = sa.select(*merged.c).order_by(merged.c.created.desc(), merged.c.id.desc()).limit(limit)
    return conn.execute(stmt).all()


def task_topic_exists(conn: sa.Connection, *, topic: str) -> bool:
    """Whether any task row has this topic (one probe of `ix_task_history`)."""
    stmt = sa.select(task.c.id).where(task.c.topic == topic).limit(1)
    return conn.execute(stmt).first() is not None


def task_topics(conn: sa.Connection) -> list[str]:
    """Every topic present, in order. On PostgreSQL a loose scan of
    `ix_task_history` (one index probe per topic, not one read per row)."""
    if not _is_pg(conn):
        stmt = sa.select(task.c.topic).distinct().order_by(task.c.topic)
        return list(conn.execute(stmt).scalars())
    first = sa.select(task.c.topic).order_by(task.c.topic).limit(1)
    walk = first.cte("topics", recursive=True)
    after = (
        sa.select(task.c.topic)
        .where(task.c.topic > walk.c.topic)
        .order_by(task.c.topic)
        .limit(1)
        .scalar_subquery()
    )
    walk = walk.union_all(sa.select(after).where(walk.c.topic.isnot(None)))
    stmt = sa.select(walk.c.topic).where(walk.c.topic.isnot(None))
    return list(conn.execute(stmt).scalars())


def task_count_capped(
    conn: sa.Connection, *, topics: Iterable[str], cap: int
) -> Sequence[sa.Row[Any]]:
    """(topic, status, n) for every topic x status, n counted up to `cap`.

    Each count reads at most `cap` entries of `ix_task_history`, so the
    statement costs topics x statuses x cap at worst, whatever the table's
    size; n == cap means "cap or more" (River UI counts the same way).
    """
    topic_list = list(topics)
    if not topic_list:
        return []
    t = sa.union_all(
        *(sa.select(sa.literal(x, sa.String()).label("topic")) for x in topic_list)
    ).subquery("t")
    s = sa.union_all(
        *(sa.select(sa.literal_column(f"'{st.value}'").label("status")) for st in Status)
    ).subquery("s")
    capped = (
        sa.select(sa.literal_column("1"))
        .select_from(task)
        .where(task.c.topic == t.c.topic, task.c.status == s.c.status)
        .correlate(t, s)
        .limit(cap)
        .subquery("capped")
    )
    n = sa.select(sa.func.count()).select_from(capped).scalar_subquery()
    stmt: sa.Select[Any] = sa.select(t.c.topic, s.c.status, n.label("n")).select_from(
        t.join(s, sa.true())
    )
    return conn.execute(stmt).all()


def task_max_id(conn: sa.Connection) -> int:
    """The newest task id (0 when none): one probe of the primary key."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(task.c.id), 0))).scalar_one())


def _seconds_between(conn: sa.Connection, end: Any, start: Any) -> ColumnElement[float]:
    """end - start in seconds, as a float computed by the database."""
    if _is_pg(conn):
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def task_recent_runs(conn: sa.Connection, *, window_s: float, limit: int) -> Sequence[sa.Row[Any]]:
    """(topic, seconds) run times (finished - started) of the newest `limit`
    finished tasks of the last `window_s` seconds, newest first (a backward range of
    `ix_task_finished`; the subtraction is the database's, so no timestamp
    is converted in Python)."""
    stmt = (
        sa.select(
            task.c.topic, _seconds_between(conn, task.c.finished, task.c.started).label("seconds")
        )
        .where(
            task.c.finished >= plus_ms(db_now(), -to_ms(window_s)),
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
    # `//`: SQLAlchemy's `/` is true division, which SQLite would do in floats.
    return sa.cast(sa.func.strftime("%s", col), sa.Integer) // 60


def task_finished_per_minute(
    conn: sa.Connection, *, since: dt.datetime | None = None, window_s: float = 3600.0
) -> tuple[dt.datetime, Sequence[sa.Row[Any]]]:
    """(database now, [(minute, status, n)]): terminal finishes per epoch
    minute and status, from `since` (or the last `window_s` seconds) on: a range of
    `ix_task_finished`."""
    now = conn.execute(sa.select(db_now())).scalar_one()
    start: ColumnElement[dt.datetime] = plus_ms(db_now(), -to_ms(window_s))
    if since is not None:
        start = sa.literal(since, UTCDateTime())
    minute = _minute_of(conn, task.c.finished).label("minute")
    stmt = (
        sa.select(minute, task.c.status, sa.func.count().label("n"))
        .where(task.c.finished >= start, _status_in(sorted(states.TERMINAL)))
        .group_by(minute, task.c.status)
        .order_by(minute)
    )
    return now, conn.execute(stmt).all()
