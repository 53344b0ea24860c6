"""Read-side statements for admin, CLI and dashboard: listing with filters,
counts by topic and status, oldest due, and purge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states
from tasker.exceptions import IllegalTransition
from tasker.schema import UTCDateTime, task, task_group, task_outbox
from tasker.states import Status
from tasker.store.dialect import (
    PUBLISH_CHANNEL,
    _in,
    _is_pg,
    _notify,
    _now,
    _status_in,
    db_now,
    plus_ms,
    to_ms,
)
from tasker.store.glance import no_jit

# --- admin: listing, counting, purge ----------------------------------------

LIST_COLUMNS = (
    task.c.id,
    task.c.topic,
    task.c.status,
    task.c.retry,
    task.c.attempts,
    task.c.exec_after,
    task.c.created,
    task.c.updated,
    task.c.started,
    task.c.finished,
    task.c.term,
)

TimeBound = dt.datetime | dt.timedelta


def _bound(value: TimeBound) -> ColumnElement[dt.datetime]:
    """An absolute time, or a span before the database clock's now."""
    if isinstance(value, dt.timedelta):
        return plus_ms(db_now(), -round(value.total_seconds() * 1000))
    return sa.literal(value, UTCDateTime())


def _filters(
    *,
    topic: str | None,
    statuses: Iterable[Status] | None,
    since: TimeBound | None,
    until: TimeBound | None,
    time_column: str,
    table: Any = task,
) -> list[ColumnElement[bool]]:
    col = table.c[time_column]
    where: list[ColumnElement[bool]] = []
    if topic is not None:
        where.append(table.c.topic == topic)
    if statuses is not None:
        # Literals, not parameters, so PostgreSQL can match the partial indexes.
        where.append(table.c.status.in_([sa.literal_column(f"'{s.value}'") for s in statuses]))
    if since is not None:
        where.append(col >= _bound(since))
    if until is not None:
        where.append(col < _bound(until))
    return where


def task_list(
    conn: sa.Connection,
    *,
    topic: str | None = None,
    statuses: Iterable[Status] | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    limit: int = 50,
) -> Sequence[sa.Row[Any]]:
    """The newest tasks (by id) matching the filters; since/until bound `created`."""
    # Select[Any]: rows of these columns, whatever SQLAlchemy's typing counts.
    stmt: sa.Select[Any] = (
        sa.select(*LIST_COLUMNS)
        .where(
            *_filters(
                topic=topic, statuses=statuses, since=since, until=until, time_column="created"
            )
        )
        .order_by(task.c.id.desc())
        .limit(limit)
    )
    return conn.execute(stmt).all()


def task_ids_matching(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    topic: str | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    time_column: str = "finished",
    keyed: bool = False,
) -> list[int]:
    """Ids of tasks in `statuses` (of a topic, within a time window; with
    `keyed`, only those with a unique key), oldest first."""
    where = _filters(
        topic=topic, statuses=statuses, since=since, until=until, time_column=time_column
    )
    if keyed:
        where.append(task.c.unique_key.isnot(None))
    stmt = sa.select(task.c.id).where(*where).order_by(task.c.id)
    return list(conn.execute(stmt).scalars())


_LIVE: list[ColumnElement[Any]] = [
    sa.literal_column(f"'{s.value}'") for s in (Status.PENDING, Status.RETRY, Status.RUNNING)
]


def _requeue_where(**filters: Any) -> list[ColumnElement[bool]]:
    """The finished tasks the filters match that a requeue may move: all but
    those whose unique key a live task holds, and all but the newest of the
    matched tasks sharing a key (`admin.requeue.blocked`, as one predicate)."""
    held, newer = task.alias("held"), task.alias("newer")
    live = sa.exists().where(
        held.c.topic == task.c.topic, held.c.unique_key == task.c.unique_key,
        held.c.id != task.c.id, held.c.status.in_(_LIVE),
    )  # fmt: skip
    newer_matched = sa.exists().where(
        newer.c.topic == task.c.topic, newer.c.unique_key == task.c.unique_key,
        newer.c.id > task.c.id, *_filters(table=newer, **filters),
    )  # fmt: skip
    free = sa.or_(task.c.unique_key.is_(None), sa.and_(~live, ~newer_matched))
    return [*_filters(**filters), free]


def _renewed_expiry(conn: sa.Connection, n: Any) -> ColumnElement[Any]:
    """`store.requeue`'s rule as an expression: a passed `expires_at` becomes
    now plus the span it was published with (none when that span is not
    positive); one still ahead, or none, is kept."""
    if _is_pg(conn):
        span_ms: Any = sa.extract("epoch", task.c.expires_at - task.c.created) * 1000
    else:
        days = sa.func.julianday(task.c.expires_at) - sa.func.julianday(task.c.created)
        span_ms = days * 86_400_000.0
    renewed = sa.case((task.c.expires_at > task.c.created, plus_ms(n, span_ms)), else_=sa.null())
    passed = sa.and_(task.c.expires_at.isnot(None), task.c.expires_at <= n)
    return sa.case((passed, renewed), else_=task.c.expires_at)


def task_requeue_matching(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    runs: int,
    note: str,
    topic: str | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    time_column: str = "finished",
) -> list[int]:
    """failed/success -> pending with `runs` runs left, for every task the
    filters match (since/until bound `time_column`), in one statement; the
    rows `_requeue_where` leaves out for their unique key stay. Returns the
    ids moved. The same row values as `task_requeue_if_finished`, and in the
    same statement what `task_renew_expiry_if_passed` sets (an `expires_at`
    that passed gets its span again from now); one NOTIFY per topic."""
    statuses = set(statuses)
    if not statuses or not statuses <= states.TERMINAL:
        raise IllegalTransition("only failed or success tasks can be retried")
    filters = {"topic": topic, "statuses": sorted(statuses), "since": since, "until": until,
               "time_column": time_column}  # fmt: skip
    n = db_now()
    no_jit(conn)
    stmt = (
        sa.update(task)
        .where(*_requeue_where(**filters))
        .values(
            status=states.transition("requeue").target.value,
            retry=runs, exec_after=n, updated=n, finished=None, worker_id=0, token=None,
            dispatched=None, cancel_requested=None, errlog=task.c.errlog + sa.literal(note),
            expires_at=_renewed_expiry(conn, n),
        )
        .returning(task.c.id, task.c.topic)
    )
    moved = conn.execute(stmt).all()
    for name in sorted({r[1] for r in moved}):
        _notify(conn, PUBLISH_CHANNEL, name)
    return [r[0] for r in moved]


def task_count_requeue_matching(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    topic: str | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    time_column: str = "finished",
) -> int:
    """How many tasks `task_requeue_matching` with the same filters would move now."""
    filters = {"topic": topic, "statuses": sorted(set(statuses)), "since": since,
               "until": until, "time_column": time_column}  # fmt: skip
    stmt = sa.select(sa.func.count()).select_from(task).where(*_requeue_where(**filters))
    no_jit(conn)
    return int(conn.execute(stmt).scalar_one())


def task_count_by_topic_status(
    conn: sa.Connection, *, statuses: Iterable[Status] | None = None
) -> Sequence[sa.Row[Any]]:
    """(topic, status, n) for every pair present, optionally only some statuses."""
    stmt = sa.select(task.c.topic, task.c.status, sa.func.count().label("n"))
    if statuses is not None:
        stmt = stmt.where(_status_in(statuses))
    stmt = stmt.group_by(task.c.topic, task.c.status).order_by(task.c.topic, task.c.status)
    return conn.execute(stmt).all()


def task_oldest_due(
    conn: sa.Connection, *, now: dt.datetime | None = None
) -> Sequence[sa.Row[Any]]:
    """(topic, oldest, db_now): the earliest exec_after among due tasks of each topic."""
    n = _now(now)
    stmt = (
        sa.select(
            task.c.topic,
            sa.func.min(task.c.exec_after).label("oldest"),
            n.label("db_now"),
        )
        .where(_status_in(states.DUE), task.c.exec_after <= n)
        .group_by(task.c.topic)
        .order_by(task.c.topic)
    )
    return conn.execute(stmt).all()


# What something live still needs (DESIGN 2): decided inside the statement that
# counts or deletes, so no window opens between a check and the delete.
_OTHER_STEP = task.alias("other_step")
_NOT_ENDED = [s.value for s in Status if s not in states.TERMINAL]
_IN_LIVE_GROUP = (
    sa.exists()
    .where(task_group.c.id == task.c.group_id, task_group.c.callback_id.is_(None))
    .correlate(task)
)
"""A member of a group whose callback is not written yet: the callback reads it."""
_IN_LIVE_CHAIN = task.c.chain_id.isnot(None) & (
    sa.exists()
    .where(_OTHER_STEP.c.chain_id == task.c.chain_id, _OTHER_STEP.c.status.in_(_NOT_ENDED))
    .correlate(task)
)
"""A step of a chain with a step still due or running: `app.result(first)` reads it."""
_OUTBOX_UNSENT = sa.exists().where(task_outbox.c.task_id == task.c.id).correlate(task)
"""A row whose result-topic message is not published yet."""


def _purgeable(
    statuses: Iterable[Status], older_than_s: float, now: dt.datetime | None
) -> list[ColumnElement[bool]]:
    statuses = set(statuses)
    if not statuses or not statuses <= states.TERMINAL:
        raise IllegalTransition("only success and failed tasks can be purged")
    return [
        _status_in(statuses),
        task.c.finished < plus_ms(_now(now), -to_ms(older_than_s)),
        task.c.group_id.is_(None) | ~_IN_LIVE_GROUP,
        ~_IN_LIVE_CHAIN,
        ~_OUTBOX_UNSENT,
    ]


def task_count_purgeable(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    older_than_s: float,
    now: dt.datetime | None = None,
) -> int:
    """How many finished tasks in `statuses` finished more than `older_than_s`
    seconds ago and needed by nothing live (see `task_purge_batch`);
    IllegalTransition for a status that is not terminal."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(task)
        .where(*_purgeable(statuses, older_than_s, now))
    )
    return int(conn.execute(stmt).scalar_one())


def task_purge_batch(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    older_than_s: float,
    limit: int,
    now: dt.datetime | None = None,
) -> int:
    """Delete up to `limit` terminal tasks finished more than `older_than_s`
    seconds ago; returns how many.

    Only `success`/`failed` rows qualify (a running or due row is never
    touched); on PostgreSQL rows another transaction holds are skipped, so a
    batch never waits on a lock and holds its own only briefly. A row
    something live still needs stays (DESIGN 2): a member of a group whose
    callback is not written, any step of a chain with a step still pending,
    retrying or running, a row whose result-topic message is unsent. A
    group's row goes with its callback task.
    """
    victims = (
        sa.select(task.c.id)
        .where(*_purgeable(statuses, older_than_s, now))
        .order_by(task.c.id)
        .limit(limit)
    )
    if _is_pg(conn):
        victims = victims.with_for_update(skip_locked=True)
    stmt = sa.delete(task).where(task.c.id.in_(victims.scalar_subquery())).returning(task.c.id)
    ids = list(conn.execute(stmt).scalars())
    if ids:
        gone = sa.delete(task_group).where(_in(conn, task_group.c.callback_id, "ids"))
        conn.execute(gone, {"ids": ids})
    return len(ids)
