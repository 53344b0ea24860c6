"""Statements that write new task rows (publish, COPY, periodic) and read them by id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import REGCLASS

from tasker import text
from tasker.exceptions import DatabaseError, TaskNotFound
from tasker.schema import UTCDateTime, task
from tasker.states import Status
from tasker.store.dialect import (
    PUBLISH_CHANNEL,
    _in,
    _is_pg,
    _notify,
    _per_dialect,
    db_now,
    plus_ms,
    to_ms,
)
from tasker.store.leases import core_fence

# --- task: publish and read -------------------------------------------------


COPY_MIN_ROWS = 50
"""From this many rows, `task_insert_many` on PostgreSQL (psycopg) uses COPY."""

_COPY_COLUMNS = (
    ("id", "int8"),
    ("topic", "varchar"),
    ("status", "varchar"),
    ("input", "text"),
    ("timeout", "int4"),
    ("retry", "int4"),
    ("exec_after", "timestamptz"),
    ("created", "timestamptz"),
    ("updated", "timestamptz"),
    ("periodic_at", "timestamptz"),
    ("result_topic", "varchar"),
)
"""What COPY writes, with PostgreSQL types for the binary format; every other
column takes its server default, as on INSERT. `priority` is added only when
a row of the batch has one other than 0 (the default), so a batch that does
not use priorities writes what it wrote before they existed."""
_PRIORITY_COLUMN = (("priority", "int4"),)
_TRACE_COLUMN = (("traceparent", "varchar"),)
"""Added, like `priority`, only when a row of the batch has one (it was traced)."""


def task_insert_many(conn: sa.Connection, *, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `pending` rows and return their ids in input order.

    Each row: topic, input (JSON text), timeout_s (seconds), retry, and either
    exec_after (datetime) or delay_s (seconds from the database clock; 0 = now),
    periodic_at (datetime or None), result_topic (or None), priority (int,
    default 0), and only when used: expires_at (datetime) or expires_s
    (seconds from the database clock), lock_key (text). Rows with a unique
    key go through `task_insert_unique_many` instead. A small batch,
    or any batch on SQLite, is one INSERT .. RETURNING; a large one on PostgreSQL is a COPY (see
    `_task_copy_pg`). Either way one NOTIFY goes out per distinct topic.
    """
    if not rows:
        return []
    if (
        len(rows) >= COPY_MIN_ROWS
        and _is_pg(conn)
        and conn.dialect.driver == "psycopg"
        and _plain(rows)
    ):
        ids = _task_copy_pg(conn, rows)
        for topic in sorted({r["topic"] for r in rows}):
            _notify(conn, PUBLISH_CHANNEL, topic)
        return ids
    return _task_insert_returning(conn, rows)


def _plain(rows: Sequence[dict[str, Any]]) -> bool:
    """No row expires or holds a lock: COPY writes neither column, so such a
    batch goes through INSERT (whose expiry is computed on the database clock).
    The app adds these keys only to rows that use them."""
    return not any("lock_key" in r or "expires_s" in r or "expires_at" in r for r in rows)


def task_insert_stmt(pg: bool) -> Any:
    """The one INSERT of a `pending` task row, for the dialect (`pg`): its
    bound values are `insert_params` (plus whatever columns the caller adds),
    exec_after is the given time or the database clock plus `delay_ms`, and
    created/updated are the database clock. Callers add their ON CONFLICT
    and RETURNING (publish, unique keys, chain steps, group callbacks)."""
    insert = (postgresql.insert if pg else sqlite.insert)(task)
    return insert.values(
        exec_after=sa.func.coalesce(
            sa.bindparam("exec_after", type_=UTCDateTime()),
            plus_ms(db_now(), sa.bindparam("delay_ms", type_=sa.BigInteger())),
        ),
        created=db_now(),
        updated=db_now(),
        # NULL unless the task expires (SQLite's date arithmetic turns a NULL
        # delay into 0, so the NULL is tested, not propagated).
        expires_at=sa.case(
            (
                sa.bindparam("expires_ms", type_=sa.BigInteger()).isnot(None),
                plus_ms(db_now(), sa.bindparam("expires_ms", type_=sa.BigInteger())),
            ),
            else_=sa.bindparam("expires_at", type_=UTCDateTime()),
        ),
    )


def _insert_returning_stmt(pg: bool) -> Any:
    if pg:
        # The NOTIFY rides on the INSERT, saving a round trip: pg_notify runs
        # per row, and PostgreSQL delivers the identical notifications of one
        # transaction once, so each distinct topic is signalled once, at commit.
        notify = sa.func.pg_notify(PUBLISH_CHANNEL, task.c.topic)
        return task_insert_stmt(pg).returning(task.c.id, notify, sort_by_parameter_order=True)
    return task_insert_stmt(pg).returning(task.c.id, sort_by_parameter_order=True)


_INSERT_RETURNING = _per_dialect(_insert_returning_stmt)


def _task_insert_returning(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    stmt = _INSERT_RETURNING[conn.dialect.name]
    if len(rows) == 1:  # a plain execute: the batch path (insertmanyvalues) costs more
        return [conn.execute(stmt, insert_params(rows[0])).scalar_one()]
    params = [insert_params(r) for r in rows]
    return list(conn.execute(stmt, params).scalars())


def insert_params(row: dict[str, Any]) -> dict[str, Any]:
    """The bound values of one new `pending` row (a row as `task_insert_many`
    takes it, durations in seconds), as every INSERT of a task takes them
    (publish, unique keys, chain steps and group callbacks add their own
    columns to these); the timeout and the delay become ms here."""
    return {
        "topic": row["topic"],
        "input": text.escape(row["input"]),
        "timeout": to_ms(row["timeout_s"]),
        "retry": row["retry"],
        "exec_after": row.get("exec_after"),
        "delay_ms": to_ms(row.get("delay_s", 0)),
        "periodic_at": row.get("periodic_at"),
        "result_topic": row.get("result_topic"),
        "priority": row.get("priority", 0),
        "status": Status.PENDING.value,
        "expires_at": row.get("expires_at"),
        "expires_ms": None if row.get("expires_s") is None else to_ms(row["expires_s"]),
        "lock_key": row.get("lock_key"),
        "traceparent": row.get("traceparent"),
    }


def _task_copy_pg(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """COPY `rows` into `task` inside the caller's transaction; ids in input order.

    One statement reserves the ids (nextval of the id sequence, n times) and
    reads now(), the transaction timestamp that `db_now()` also compiles to,
    so created/updated are the database clock and exec_after is
    now() + delay_ms exactly as the INSERT path computes it. The binary COPY
    runs on the psycopg connection under the SQLAlchemy one and does not commit.
    """
    import psycopg

    # A scalar subquery, so the sequence is looked up once, not once per row.
    seq = sa.select(sa.func.pg_get_serial_sequence(task.name, task.c.id.name)).scalar_subquery()
    next_id = sa.func.nextval(sa.cast(seq, REGCLASS))
    base, reserved = conn.execute(
        sa.select(db_now(), sa.func.array_agg(next_id)).select_from(
            sa.func.generate_series(1, len(rows))
        )
    ).one()
    # nextval only grows within a session, so sorting puts the ids in call order.
    ids: list[int] = sorted(reserved)
    at_now = {0: base}
    to_utc = UTCDateTime().process_bind_param
    dialect = conn.dialect
    pending = Status.PENDING.value
    with_priority = any(r.get("priority") for r in rows)
    traced = any(r.get("traceparent") for r in rows)
    copied = _COPY_COLUMNS + (_PRIORITY_COLUMN if with_priority else ())
    copied += _TRACE_COLUMN if traced else ()
    columns = ", ".join(name for name, _ in copied)
    sql = f"COPY {task.name} ({columns}) FROM STDIN (FORMAT BINARY)"
    raw = conn.connection.driver_connection
    if raw is None:  # SQLAlchemy detached it: nothing to COPY on
        raise DatabaseError("the database connection is closed")
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types([pg_type for _, pg_type in copied])
            write = copy.write_row

            for task_id, r in zip(ids, rows, strict=True):
                exec_after = r.get("exec_after")
                if exec_after is None:
                    delay_ms = to_ms(r.get("delay_s", 0))
                    exec_after = at_now.get(delay_ms)
                    if exec_after is None:
                        exec_after = base + dt.timedelta(milliseconds=delay_ms)
                else:
                    exec_after = to_utc(exec_after, dialect)
                periodic_at = r.get("periodic_at")
                if periodic_at is not None:
                    periodic_at = to_utc(periodic_at, dialect)
                body = text.escape(r["input"])
                timeout_ms = to_ms(r["timeout_s"])
                values: tuple[Any, ...] = (
                    task_id, r["topic"], pending, body, timeout_ms, r["retry"],
                    exec_after, base, base, periodic_at, r.get("result_topic"),
                )  # fmt: skip
                if with_priority:
                    values = (*values, r.get("priority", 0))
                write((*values, r.get("traceparent")) if traced else values)
    except psycopg.Error as exc:
        # Raise what SQLAlchemy would have, so `wrap_db_errors` translates it.
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error, dialect=dialect) from exc
    return ids


def task_insert_periodic(
    conn: sa.Connection, *, row: dict[str, Any], term: int, instance_id: int
) -> int | None:
    """Insert the task of one periodic fire time unless it exists (fenced)."""
    core_fence(conn, term=term, instance_id=instance_id)
    exists = conn.execute(
        sa.select(task.c.id).where(
            task.c.topic == row["topic"], task.c.periodic_at == row["periodic_at"]
        )
    ).first()
    if exists:
        return None
    with conn.begin_nested():
        try:
            return task_insert_many(conn, rows=[row])[0]
        except sa.exc.IntegrityError:
            return None


def task_last_periodic(conn: sa.Connection, *, topic: str) -> dt.datetime | None:
    """The latest fire time that has a task, for a periodic topic: read only
    once per topic after an upgrade, before `topic.periodic_last` holds it."""
    stmt = sa.select(sa.func.max(task.c.periodic_at)).where(task.c.topic == topic)
    return conn.execute(stmt).scalar()


def task_get(conn: sa.Connection, *, task_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(task).where(task.c.id == task_id)).first()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return row


def task_status_many(conn: sa.Connection, *, ids: Sequence[int]) -> dict[int, str]:
    rows = conn.execute(
        sa.select(task.c.id, task.c.status).where(_in(conn, task.c.id, "ids")), {"ids": list(ids)}
    )
    return {r.id: r.status for r in rows}
