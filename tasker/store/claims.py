"""Statements of dispatch (master) and the start of an execution (consumer):
in-flight counts, the fenced claim (with its per-key lock check), unclaim,
taking back claims that a higher priority overtook, and the master's expiry
pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states
from tasker.schema import core, task
from tasker.states import Status
from tasker.store.dialect import (
    CAPACITY_PREFIX,
    PUBLISH_CHANNEL,
    _is_pg,
    _notify,
    _now_param,
    _pair_params,
    _pairs_for,
    _per_dialect,
    _status_guard,
    _status_in,
    plus_ms,
    random_token,
    to_ms,
)
from tasker.store.leases import _lease_held, core_fence
from tasker.store.links import LINKED, task_links_on_terminal

# --- task: dispatch (master) ------------------------------------------------


def _count_inflight_stmt() -> sa.Select[Any]:
    n = _now_param()
    topic = sa.bindparam("topic", type_=sa.String())
    running = (
        sa.select(sa.func.count())
        .select_from(task)
        .where(task.c.topic == topic, _status_in([Status.RUNNING]))
        .scalar_subquery()
    )
    sent = (
        sa.select(sa.func.count())
        .select_from(task)
        .where(
            task.c.topic == topic,
            task.c.dispatched.isnot(None),
            task.c.dispatched
            >= plus_ms(n, -(sa.bindparam("window_ms", type_=sa.Integer()) + task.c.timeout)),
        )
        .scalar_subquery()
    )
    return sa.select(running + sent)


_COUNT_INFLIGHT = _count_inflight_stmt()


def task_count_inflight(
    conn: sa.Connection, *, topic: str, window_s: float, now: dt.datetime | None = None
) -> int:
    """Tasks of a topic running or sent to the broker within the redelivery
    window (`window_s`, seconds) plus their timeout."""
    params = {"topic": topic, "window_ms": to_ms(window_s), "now": now}
    return int(conn.execute(_COUNT_INFLIGHT, params).scalar_one())


# Priority bands, in claim order. ix_task_due is (topic, priority DESC,
# exec_after, id); PostgreSQL 15 cannot skip over priorities, so one scan
# ordered by priority would read every delayed task of the topic whenever
# fewer than `limit` are due. Band 0 (every task unless you use priorities)
# is bounded by `exec_after <= now` and stops at the first delayed task, as
# before priorities existed; the other bands cost only when they hold rows.
_ZERO = sa.literal_column("0", sa.Integer())
_BANDS = (
    (lambda p: p > _ZERO, True),
    (lambda p: p == _ZERO, False),
    (lambda p: p < _ZERO, True),
)


def due_filter(n: Any, topic: Any) -> list[Any]:
    """The WHERE of "due tasks of a topic" as of `n`: pending or retry, and
    exec_after passed (whether one is still in flight is `not_in_flight`).
    The master's claim, its any-due probe and the in-process claim share it."""
    return [task.c.topic == topic, _status_in(states.DUE), task.c.exec_after <= n]


def not_in_flight(n: Any) -> ColumnElement[bool]:
    """Never sent, or sent longer ago than the redelivery window (`window_ms`
    bind parameter) plus the task's timeout."""
    window = sa.bindparam("window_ms", type_=sa.Integer())
    return sa.or_(
        task.c.dispatched.is_(None), task.c.dispatched < plus_ms(n, -(window + task.c.timeout))
    )


def _any_due_stmt() -> sa.Select[Any]:
    n = _now_param()
    topic = sa.bindparam("topic", type_=sa.String())
    band = [
        sa.select(task.c.id).where(*due_filter(n, topic), cond(task.c.priority)).limit(1).exists()
        for cond, _ in (_BANDS[1], _BANDS[0], _BANDS[2])
    ]
    return sa.select(sa.or_(*band))


_ANY_DUE = _any_due_stmt()


def task_any_due(conn: sa.Connection, *, topic: str, now: dt.datetime | None = None) -> bool:
    """Whether the topic has a due task (an index probe per priority band, not a count)."""
    return bool(conn.execute(_ANY_DUE, {"topic": topic, "now": now}).scalar())


# --- per-key locks (DESIGN 1, `lock`) ----------------------------------------
# Enforced by the claim itself, as `global_concurrency` is: a task with a
# lock key is claimable only when it is the first live task of its key in
# (priority DESC, id) order and no other task of the key runs or is in
# flight. Checked in ix_task_lock, partial on `lock_key IS NOT NULL`; a row
# without a key stops at `lock_key IS NULL`, so plain tasks pay no look-up.
# The master claims from one thread, so two claims never race on a key; a
# crashed holder stops blocking when the rescue ends its `running`.


def lock_free(n: Any) -> ColumnElement[bool]:
    """No key, or nothing of the key runs, is in flight or comes first (the
    `window_ms` bind parameter is the redelivery window, as `not_in_flight`)."""
    other = task.alias("holder")
    window = sa.bindparam("window_ms", type_=sa.Integer())
    live = [Status.PENDING, Status.RETRY, Status.RUNNING]
    blocking = sa.select(other.c.id).where(
        other.c.lock_key == task.c.lock_key,
        other.c.lock_key.isnot(None),  # spelled as the index predicate is (SQLite)
        other.c.status.in_([sa.literal_column(f"'{s.value}'") for s in live]),
        other.c.id != task.c.id,
        sa.or_(
            other.c.status == sa.literal_column(f"'{Status.RUNNING.value}'"),
            other.c.dispatched >= plus_ms(n, -(window + other.c.timeout)),
            other.c.priority > task.c.priority,
            sa.and_(other.c.priority == task.c.priority, other.c.id < task.c.id),
        ),
    )
    return sa.or_(task.c.lock_key.is_(None), ~blocking.exists())


def _due_ids(pg: bool, n: Any, term: Any) -> sa.Select[Any]:
    """Ids of up to `limit` due tasks, in claim order: higher priority first,
    FIFO among equals (one bounded index scan per band, read in band order)."""
    topic = sa.bindparam("p_topic", type_=sa.String())
    limit = sa.bindparam("limit", type_=sa.Integer())
    # or claimed by an earlier master, which may have died before publishing
    free = sa.and_(sa.or_(not_in_flight(n), task.c.term < term), lock_free(n))
    parts = []
    for cond, by_priority in _BANDS:
        order: list[ColumnElement[Any]] = [task.c.exec_after, task.c.id]
        if by_priority:
            order.insert(0, task.c.priority.desc())
        band = (
            sa.select(task.c.id)
            .where(*due_filter(n, topic), cond(task.c.priority), free)
            .order_by(*order)
            .limit(limit)
        )
        if pg:
            band = band.with_for_update(skip_locked=True)
        parts.append(sa.select(band.subquery().c.id))
    # UNION ALL reads its parts in order and stops once `limit` rows are out.
    bands = sa.union_all(*parts).subquery("due")
    return sa.select(bands.c.id).limit(limit)


def _claim_stmt(pg: bool) -> sa.Update:
    n = _now_param()
    term = sa.bindparam("p_term", type_=sa.BigInteger())
    due = _due_ids(pg, n, term)
    if pg:
        # id = ANY(ARRAY(...)): the claimed ids are found first, then each row by
        # primary key; `id IN (...)` let PostgreSQL hash-join a scan of the table.
        # Each band locks its rows (FOR UPDATE SKIP LOCKED, in `_due_ids`).
        # The fence rides in the same statement: the core row is share-locked
        # until it commits, so no election can slip in between.
        fence = (
            sa.select(core.c.term)
            .where(_lease_held(term, sa.bindparam("p_instance_id", type_=sa.BigInteger())))
            .with_for_update(read=True)
            .cte("fence")
        )
        picked = sa.and_(
            sa.exists(sa.select(fence.c.term)),
            task.c.id == sa.any_(sa.func.array(due.scalar_subquery())),
        )
    else:
        picked = task.c.id.in_(due.scalar_subquery())
    return (
        sa.update(task)
        .where(picked)
        .values(token=random_token(), dispatched=n, term=term, updated=n)
        .returning(task.c.id, task.c.token, task.c.priority, task.c.exec_after)
    )


_CLAIM = _per_dialect(_claim_stmt)


def task_claim_due(
    conn: sa.Connection,
    *,
    topic: str,
    limit: int,
    term: int,
    instance_id: int,
    window_s: float,
    now: dt.datetime | None = None,
    lowest: list[int] | None = None,
) -> list[tuple[int, int]]:
    """Stamp up to `limit` due tasks with a fresh token and our term (fenced).

    A task is due when pending or retry, its exec_after has passed, and it is
    not already in flight (never sent, sent longer ago than the redelivery
    window `window_s` (seconds) plus its timeout, or sent by an earlier master, whose messages may
    never have left: its stale messages are dropped by the token check).
    Higher `priority` first, then the oldest `exec_after`, then the id.
    Returns (id, token) pairs in that order; the lowest priority claimed is
    appended to `lowest` when given (and something was claimed).
    """
    pg = _is_pg(conn)
    if not pg:
        core_fence(conn, term=term, instance_id=instance_id)
    params = {
        "p_topic": topic,
        "limit": limit,
        "p_term": term,
        "p_instance_id": instance_id,
        "window_ms": to_ms(window_s),
        "now": now,
    }
    # RETURNING has no order: put them back in claim order, which is the
    # order their messages are published and so started.
    rows = sorted(
        conn.execute(_CLAIM[conn.dialect.name], params),
        key=lambda r: (-r.priority, r.exec_after, r.id),
    )
    if pg and not rows:  # nothing due, or the fence refused: say which
        core_fence(conn, term=term, instance_id=instance_id)
    if lowest is not None and rows:
        lowest.append(int(rows[-1].priority))
    return [(r.id, r.token) for r in rows]


# --- priorities under prefetch (DESIGN 7) ----------------------------------------
# A task claimed ahead of a free slot waits on a consumer. When a higher
# priority becomes due meanwhile, the master takes such lower claims back
# (token cleared: the consumer's start finds the token moved on and drops
# it), so the freed capacity goes to the higher task. Only the master's own
# claims (its term) are taken back.


def _probe_stmt(above: bool) -> sa.Select[Any]:
    """Whether a task is due (the any-due probe), and the highest priority
    among due tasks not in flight, above the `above` bind parameter if asked:
    one round trip. Bounded by `priority > above`, a topic whose tasks share
    one priority probes an empty index range."""
    n = _now_param()
    topic = sa.bindparam("p_topic", type_=sa.String())
    top = sa.select(task.c.priority).where(*due_filter(n, topic), not_in_flight(n))
    if above:
        top = top.where(task.c.priority > sa.bindparam("above", type_=sa.Integer()))
    top = top.order_by(task.c.priority.desc()).limit(1)
    band = [
        sa.select(task.c.id).where(*due_filter(n, topic), cond(task.c.priority)).limit(1).exists()
        for cond, _ in (_BANDS[1], _BANDS[0], _BANDS[2])
    ]
    return sa.select(sa.or_(*band).label("due"), top.scalar_subquery().label("top"))


_PROBE = {True: _probe_stmt(True), False: _probe_stmt(False)}


def task_due_probe(
    conn: sa.Connection,
    *,
    topic: str,
    above: int | None,
    window_s: float,
    now: dt.datetime | None = None,
) -> tuple[bool, int | None]:
    """(whether the topic has a due task, the highest priority above `above`
    (None: any) among its due tasks not in flight, or None). `window_s`
    (seconds) is the redelivery window, as in `task_claim_due`."""
    params = {"p_topic": topic, "above": above, "window_ms": to_ms(window_s), "now": now}
    row = conn.execute(_PROBE[above is not None], params).one()
    return bool(row.due), None if row.top is None else int(row.top)


_TAKE_BACK = (
    sa.update(task)
    .where(
        task.c.topic == sa.bindparam("p_topic", type_=sa.String()),
        _status_in(states.DUE),
        task.c.dispatched.isnot(None),
        task.c.term == sa.bindparam("p_term", type_=sa.BigInteger()),
        task.c.priority < sa.bindparam("p_priority", type_=sa.Integer()),
    )
    .values(dispatched=None, token=None)
)


def task_take_back_below(conn: sa.Connection, *, topic: str, priority: int, term: int) -> int:
    """Undo our term's claims of the topic's tasks below `priority` that no
    consumer has started; returns how many (they are due again at once)."""
    params = {"p_topic": topic, "p_priority": priority, "p_term": term}
    return conn.execute(_TAKE_BACK, params).rowcount


def task_unclaim_many(conn: sa.Connection, *, pairs: Sequence[tuple[int, int]]) -> int:
    """Forget a claim whose message never reached the broker, so the next sweep
    dispatches it again at once instead of after the redelivery window."""
    if not pairs:
        return 0
    stmt = _UNCLAIM[conn.dialect.name]
    return conn.execute(stmt, _pair_params(pairs)).rowcount


def _unclaim_stmt(pg: bool) -> sa.Update:
    return (
        sa.update(task)
        .where(_pairs_for(pg, task.c.id, task.c.token), _status_guard(states.DUE))
        .values(dispatched=None, token=None)
    )


_UNCLAIM = _per_dialect(_unclaim_stmt)


# --- expiry (DESIGN 1, `expires`) -------------------------------------------------
# The consumer's start refuses a row past `expires_at` (`task_start_if_token`),
# so a task not started by then never runs; this pass then ends it `failed`.
# It reads ix_task_expires, partial on `expires_at IS NOT NULL`: while no
# task expires the index is empty and the pass is one empty index probe.


def _expire_stmt(pg: bool) -> sa.Update:
    n = _now_param()
    t = states.transition("expire")
    due = (
        sa.select(task.c.id)
        .where(
            task.c.expires_at.isnot(None),
            _status_in(t.sources),
            task.c.expires_at <= n,
        )
        .order_by(task.c.expires_at)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    if pg:
        due = due.with_for_update(skip_locked=True)
    return (
        sa.update(task)
        .where(task.c.id.in_(due.scalar_subquery()), _status_guard(t.sources))
        .values(
            status=t.target.value,
            updated=n,
            finished=n,
            token=None,
            dispatched=None,
            errlog=task.c.errlog + sa.bindparam("note", type_=sa.Text()),
        )
        .returning(task.c.id, task.c.topic, LINKED)
    )


_EXPIRE = _per_dialect(_expire_stmt)


def task_expire_due(
    conn: sa.Connection, *, note: str, limit: int, now: dt.datetime | None = None
) -> list[int]:
    """pending/retry -> failed for up to `limit` tasks whose `expires_at` has
    passed (database clock), `note` appended to errlog. Their chains end, their
    groups count them, their result topics get the outcome, and `app.result`
    wakes, in this transaction, as for any terminal state. Returns their ids.
    (Celery's `expires`, RQ's `ttl`.)"""
    rows = conn.execute(_EXPIRE[conn.dialect.name], {"note": note, "limit": limit, "now": now})
    ended = rows.all()
    task_links_on_terminal(conn, ids=[r.id for r in ended if r.linked])
    for topic in sorted({r.topic for r in ended}):
        _notify(conn, PUBLISH_CHANNEL, CAPACITY_PREFIX + topic)
    return sorted(r.id for r in ended)
