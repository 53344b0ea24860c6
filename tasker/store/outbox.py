"""Statements of the result-topic outbox: rows `links.task_links_on_terminal`
writes in the transaction that ends a task, taken and published after commit
by `tasker.runtime.outbox.ResultPublisher` (at least once), then deleted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker.schema import task_outbox
from tasker.store.dialect import _in, _is_pg, db_now, plus_ms, to_ms


def outbox_take(
    conn: sa.Connection, *, limit: int, hold_s: float, now: dt.datetime | None = None
) -> list[sa.Row[Any]]:
    """Take up to `limit` outbox rows nobody holds, for `hold_s` seconds; (id, queue,
    body) in id order. A publisher that dies holding rows lets them go when
    the hold ends, so another publishes them (at least once)."""
    n = sa.func.coalesce(sa.bindparam("now", value=now, type_=task_outbox.c.created.type), db_now())
    free = (
        sa.select(task_outbox.c.id)
        .where(sa.or_(task_outbox.c.taken_until.is_(None), task_outbox.c.taken_until < n))
        .order_by(task_outbox.c.id)
        .limit(limit)
    )
    if _is_pg(conn):
        free = free.with_for_update(skip_locked=True)
    stmt = (
        sa.update(task_outbox)
        .where(task_outbox.c.id.in_(free.scalar_subquery()))
        .values(taken_until=plus_ms(n, to_ms(hold_s)))
        .returning(task_outbox.c.id, task_outbox.c.queue, task_outbox.c.body)
    )
    return sorted(conn.execute(stmt).all(), key=lambda r: r.id)


def outbox_delete(conn: sa.Connection, *, ids: Sequence[int]) -> int:
    """Forget outbox rows the broker confirmed."""
    if not ids:
        return 0
    return conn.execute(sa.delete(task_outbox).where(_in(conn, task_outbox.c.id, "ids")),
                        {"ids": list(ids)}).rowcount  # fmt: skip


def outbox_release(conn: sa.Connection, *, ids: Sequence[int]) -> int:
    """Let rows go at once (the broker did not take them): the next pass retries."""
    if not ids:
        return 0
    stmt = sa.update(task_outbox).where(_in(conn, task_outbox.c.id, "ids")).values(taken_until=None)
    return conn.execute(stmt, {"ids": list(ids)}).rowcount

