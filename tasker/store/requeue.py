"""What an admin retry (`store.task_requeue_if_finished`) sets besides the
transition: a fresh expiry for a task whose `expires` passed.

A manual retry is a fresh chance, as a re-enqueued job is in RQ (which
applies the job's `ttl` again from the requeue): a requeued task whose
`expires_at` has passed (it expired, or failed for another reason and its
deadline went by meanwhile) gets the span it was published with,
`expires_at - created`, counted from now on the database clock. Kept as it
was, the deadline would end the retried task as expired at once. A task
whose deadline is still ahead keeps it, and one with no expiry gets none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker.schema import task
from tasker.store.dialect import db_now, plus_ms, to_ms

CHUNK = 5_000
"""Ids per statement (SQLite caps the bound parameters of one statement)."""

_RENEW = (
    sa.update(task)
    .where(task.c.id == sa.bindparam("p_id", type_=sa.BigInteger()))
    .values(expires_at=plus_ms(db_now(), sa.bindparam("p_span_ms", type_=sa.BigInteger())))
)


def task_renew_expiry_if_passed(conn: sa.Connection, *, ids: Sequence[int]) -> list[int]:
    """For those of `ids` whose `expires_at` has passed (database clock):
    `expires_at = now + (expires_at - created)` (see the module); a span
    that is not positive (a deadline given before the publish) becomes no
    expiry. Returns the ids changed, sorted. Call it in the transaction that
    requeued them."""
    found: list[Any] = []
    stmt = sa.select(task.c.id, task.c.created, task.c.expires_at).where(
        task.c.id.in_(sa.bindparam("ids", expanding=True)),
        task.c.expires_at.isnot(None),
        task.c.expires_at <= db_now(),
    )
    for i in range(0, len(ids), CHUNK):
        found += conn.execute(stmt, {"ids": list(ids[i : i + CHUNK])}).all()
    renew = [
        {"p_id": r.id, "p_span_ms": to_ms((r.expires_at - r.created).total_seconds())}
        for r in found
    ]
    spans = [p for p in renew if p["p_span_ms"] > 0]
    if spans:
        conn.execute(_RENEW, spans)
    cleared = [p["p_id"] for p in renew if p["p_span_ms"] <= 0]
    for i in range(0, len(cleared), CHUNK):
        conn.execute(
            sa.update(task).where(task.c.id.in_(cleared[i : i + CHUNK])).values(expires_at=None)
        )
    return sorted(p["p_id"] for p in renew)
