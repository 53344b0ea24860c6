"""Statements of unique keys: insert-or-find a keyed task, and the keys an
admin requeue would collide with.

At most one task per (topic, unique_key) is pending, retry or running: the
partial unique index `uq_task_unique_key` says so, not a read-then-write.
A keyed insert is `INSERT .. ON CONFLICT (topic, unique_key) WHERE <live>
DO NOTHING` (PostgreSQL and SQLite both infer the partial index from the
predicate); a row that met a conflict is then found by its key. The peers'
pain this answers: procrastinate's queueing_lock, RQ's unique jobs,
Celery's third-party locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker.exceptions import DatabaseError
from tasker.schema import LIVE_STATUSES, task
from tasker.states import Status
from tasker.store.dialect import PUBLISH_CHANNEL, _is_pg, _per_dialect, _status_in
from tasker.store.publish import insert_params, task_insert_stmt

LIVE = [Status(s) for s in LIVE_STATUSES]
LOOKUP_CHUNK = 500
"""(topic, key) pairs looked up per statement (SQLite caps bound parameters)."""
INSERT_TRIES = 5
"""A key whose live task ended between the insert and the lookup is inserted
again; this many rounds, then a DatabaseError (a key that flips that often
is a bug in the caller)."""

Key = tuple[str, str]


def _insert_unique_stmt(pg: bool) -> Any:
    stmt = task_insert_stmt(pg)
    # The predicate of uq_task_unique_key, so both databases infer it.
    stmt = stmt.on_conflict_do_nothing(
        index_elements=[task.c.topic, task.c.unique_key],
        index_where=sa.and_(task.c.unique_key.isnot(None), _status_in(LIVE)),
    )
    if pg:  # the NOTIFY rides on the INSERT, as on the keyless path
        return stmt.returning(
            task.c.id,
            task.c.topic,
            task.c.unique_key,
            sa.func.pg_notify(PUBLISH_CHANNEL, task.c.topic),
        )
    return stmt.returning(task.c.id, task.c.topic, task.c.unique_key)


_INSERT_UNIQUE = _per_dialect(_insert_unique_stmt)


def task_insert_unique_many(
    conn: sa.Connection, *, rows: Sequence[dict[str, Any]]
) -> list[tuple[int, bool]]:
    """Insert keyed `pending` rows; returns (id, inserted) in input order.

    Each row as for `task_insert_many`, plus `unique_key` (text). A row
    whose key is held by a live task of its topic inserts nothing and gets
    that task's id with inserted=False; within the batch the first row of
    a key wins and later ones get its id (inserted=False).
    """
    first: dict[Key, dict[str, Any]] = {}
    for r in rows:
        first.setdefault((r["topic"], r["unique_key"]), r)
    found: dict[Key, tuple[int, bool]] = {}
    todo = list(first.values())
    for _ in range(INSERT_TRIES):
        for r in _insert(conn, todo):
            found[(r.topic, r.unique_key)] = (r.id, True)
        missing = [k for k in ((r["topic"], r["unique_key"]) for r in todo) if k not in found]
        for key, task_id in task_live_by_key(conn, keys=missing).items():
            found[key] = (task_id, False)
        todo = [first[k] for k in missing if k not in found]
        if not todo:
            break
    else:
        raise DatabaseError(
            f"unique keys kept changing hands while publishing: {todo[0]['unique_key']!r}"
        )
    out: list[tuple[int, bool]] = []
    seen: set[Key] = set()
    for r in rows:
        key = (r["topic"], r["unique_key"])
        task_id, inserted = found[key]
        out.append((task_id, inserted and key not in seen))
        seen.add(key)
    return out


def _insert(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
    if not rows:
        return []
    params = [
        {**insert_params(r), "unique_key": r["unique_key"]}
        for r in rows
    ]
    stmt = _INSERT_UNIQUE["postgresql" if _is_pg(conn) else "sqlite"]
    return list(conn.execute(stmt, params).all())


def task_live_by_key(conn: sa.Connection, *, keys: Sequence[Key]) -> dict[Key, int]:
    """The live (pending, retry, running) task holding each (topic, key), if any."""
    out: dict[Key, int] = {}
    for i in range(0, len(keys), LOOKUP_CHUNK):
        chunk = list(keys[i : i + LOOKUP_CHUNK])
        stmt = sa.select(task.c.id, task.c.topic, task.c.unique_key).where(
            sa.tuple_(task.c.topic, task.c.unique_key).in_(chunk),
            task.c.unique_key.isnot(None),
            _status_in(LIVE),
        )
        for r in conn.execute(stmt):
            out[(r.topic, r.unique_key)] = r.id
    return out


def task_requeue_conflicts(conn: sa.Connection, *, ids: Sequence[int]) -> dict[int, int]:
    """For finished tasks among `ids` whose unique key is now held by another
    live task, that task's id: {finished id: live id}. Keyless ids, and all
    but the newest of several finished tasks sharing a key, are left to the
    caller (see `admin.retry`)."""
    if not ids:
        return {}
    held = sa.alias(task, "held")
    stmt = (
        sa.select(task.c.id, held.c.id.label("live"))
        .select_from(task)
        .join(
            held,
            sa.and_(
                held.c.topic == task.c.topic,
                held.c.unique_key == task.c.unique_key,
                held.c.id != task.c.id,
                held.c.status.in_([sa.literal_column(f"'{s.value}'") for s in LIVE]),
            ),
        )
        .where(task.c.id.in_(sa.bindparam("ids", expanding=True)), task.c.unique_key.isnot(None))
    )
    out: dict[int, int] = {}
    for i in range(0, len(ids), LOOKUP_CHUNK):
        for r in conn.execute(stmt, {"ids": list(ids[i : i + LOOKUP_CHUNK])}):
            out[r.id] = r.live
    return out


def task_keys_of(conn: sa.Connection, *, ids: Sequence[int]) -> dict[int, Key]:
    """(topic, unique_key) of those of `ids` that have a key."""
    stmt = sa.select(task.c.id, task.c.topic, task.c.unique_key).where(
        task.c.id.in_(sa.bindparam("ids", expanding=True)), task.c.unique_key.isnot(None)
    )
    out: dict[int, Key] = {}
    for i in range(0, len(ids), LOOKUP_CHUNK):
        for r in conn.execute(stmt, {"ids": list(ids[i : i + LOOKUP_CHUNK])}):
            out[r.id] = (r.topic, r.unique_key)
    return out
