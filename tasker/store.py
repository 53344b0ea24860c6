"""Every SQL statement tasker runs, one named function each.

Nothing outside this module builds SQL. Names read entity_verb[_qualifier]:
`_many` works on a batch, `_if_<guard>` is a guarded transition that returns
what it changed (zero rows is a normal answer: a lost race or a stale token).
Status changes are built from `states.TRANSITIONS`, so the state machine has
one source. Durations arrive here as milliseconds; "now" is the database
clock, or a pinned `now` in tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCLASS
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from tasker import states
from tasker.exceptions import IllegalTransition, LeadershipLost, TaskNotFound
from tasker.schema import UTCDateTime, core, instance, task
from tasker.states import Status

# --- dialect helpers: the only places PostgreSQL and SQLite differ ----------


class db_now(FunctionElement[dt.datetime]):
    """The database clock (transaction time on PostgreSQL)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _now_pg(_el: Any, _compiler: Any, **_kw: Any) -> str:
    return "now()"


@compiles(db_now, "sqlite")
def _now_sqlite(_el: Any, _compiler: Any, **_kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


class db_clock(FunctionElement[dt.datetime]):
    """The database clock at this very moment (the lease: a transaction that
    waited on a lock must not stamp the time it began)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(db_clock, "postgresql")
def _clock_pg(_el: Any, _compiler: Any, **_kw: Any) -> str:
    return "clock_timestamp()"


# SQLite's 'now' is the moment of the call already.
compiles(db_clock, "sqlite")(_now_sqlite)


FENCE_IDLE_TIMEOUT_MS = 500
"""A master paused inside a fenced transaction holds a share lock on the core
row; PostgreSQL ends its session after this long idle, so it cannot hold
up the election of its successor."""


class plus_ms(FunctionElement[dt.datetime]):
    """A timestamp moved by a (possibly negative) number of milliseconds."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(plus_ms, "postgresql")
def _plus_pg(el: Any, compiler: Any, **kw: Any) -> str:
    ts, ms = list(el.clauses)
    return (
        f"({compiler.process(ts, **kw)} + make_interval(secs => "
        f"({compiler.process(ms, **kw)}) / 1000.0))"
    )


@compiles(plus_ms, "sqlite")
def _plus_sqlite(el: Any, compiler: Any, **kw: Any) -> str:
    ts, ms = list(el.clauses)
    return (
        f"strftime('%Y-%m-%d %H:%M:%f000', {compiler.process(ts, **kw)}, "
        f"printf('%+.3f seconds', ({compiler.process(ms, **kw)}) / 1000.0))"
    )


class random_token(FunctionElement[int]):
    """A fresh random 53-bit dispatch token per row."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(random_token, "postgresql")
def _token_pg(_el: Any, _compiler: Any, **_kw: Any) -> str:
    return "(floor(random() * 9007199254740991))::bigint"


@compiles(random_token, "sqlite")
def _token_sqlite(_el: Any, _compiler: Any, **_kw: Any) -> str:
    return "(random() & 9007199254740991)"


def _is_pg(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _now(now: dt.datetime | None) -> ColumnElement[dt.datetime]:
    return sa.literal(now, UTCDateTime()) if now is not None else db_now()


def _in(conn: sa.Connection, col: Any, name: str) -> ColumnElement[bool]:
    """`col = ANY(:name)` on PostgreSQL (one plan whatever the size), IN on SQLite."""
    return _in_for(_is_pg(conn), col, name)


def _in_for(pg: bool, col: Any, name: str) -> ColumnElement[bool]:
    if pg:
        return col == sa.any_(sa.bindparam(name, type_=ARRAY(sa.BigInteger())))
    return col.in_(sa.bindparam(name, expanding=True))


def _per_dialect(build: Callable[[bool], Any]) -> dict[str, Any]:
    """A hot statement built once per dialect at import, not on every call:
    building and cache-keying a statement costs more than its round trip."""
    return {"postgresql": build(True), "sqlite": build(False)}


def _now_param() -> ColumnElement[dt.datetime]:
    """The database clock, unless a test passes `now`."""
    return sa.func.coalesce(sa.bindparam("now", type_=UTCDateTime()), db_now())


def _status_in(statuses: Iterable[Status]) -> ColumnElement[bool]:
    # Literals, not parameters, so PostgreSQL can match the partial indexes.
    return task.c.status.in_([sa.literal_column(f"'{s.value}'") for s in statuses])


def _status_guard(statuses: Iterable[Status]) -> ColumnElement[bool]:
    """The status check of a statement that finds its rows by primary key.

    Written so it cannot match a partial index predicate: otherwise, with
    statistics taken while the queue was quiet (the normal state of a large
    history), PostgreSQL walks `ix_task_due` / `ix_task_running` and filters
    every in-flight row by id, which turns into a scan under a burst.
    """
    guarded = task.c.status.concat(sa.literal_column("''"))
    return guarded.in_([sa.literal_column(f"'{s.value}'") for s in statuses])


def _notify(conn: sa.Connection, channel: str, payload: str) -> None:
    if _is_pg(conn):
        conn.execute(sa.select(sa.func.pg_notify(channel, payload)))


PUBLISH_CHANNEL = "tasker_publish"
CORE_CHANNEL = "tasker_core"


CAPACITY_PREFIX = "free:"
"""Payload prefix on PUBLISH_CHANNEL when executions ended (capacity freed);
sent by the finish statement itself."""


def now(conn: sa.Connection) -> dt.datetime:
    """The database clock as an aware UTC datetime."""
    return conn.execute(sa.select(db_now())).scalar_one()


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
)
"""What COPY writes, with PostgreSQL types for the binary format; every other
column takes its server default, as on INSERT."""


def task_insert_many(conn: sa.Connection, *, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `pending` rows and return their ids in input order.

    Each row: topic, input (JSON text), timeout (ms), retry, and either
    exec_after (datetime) or delay_ms (from the database clock; 0 = now),
    periodic_at (datetime or None). A small batch, or any batch on SQLite, is
    one INSERT .. RETURNING; a large one on PostgreSQL is a COPY (see
    `_task_copy_pg`). Either way one NOTIFY goes out per distinct topic.
    """
    if not rows:
        return []
    if len(rows) >= COPY_MIN_ROWS and _is_pg(conn) and conn.dialect.driver == "psycopg":
        ids = _task_copy_pg(conn, rows)
        for topic in sorted({r["topic"] for r in rows}):
            _notify(conn, PUBLISH_CHANNEL, topic)
        return ids
    return _task_insert_returning(conn, rows)


_TASK_INSERT = sa.insert(task).values(
    exec_after=sa.func.coalesce(
        sa.bindparam("exec_after", type_=UTCDateTime()),
        plus_ms(db_now(), sa.bindparam("delay_ms", type_=sa.Integer())),
    ),
    created=db_now(),
    updated=db_now(),
)
_TASK_INSERT_RETURNING = _TASK_INSERT.returning(task.c.id, sort_by_parameter_order=True)
# On PostgreSQL the NOTIFY rides on the INSERT, saving a round trip: pg_notify
# runs per row, and PostgreSQL delivers the identical notifications of one
# transaction once, so each distinct topic is signalled once, at commit.
_TASK_INSERT_RETURNING_NOTIFY = _TASK_INSERT.returning(
    task.c.id, sa.func.pg_notify(PUBLISH_CHANNEL, task.c.topic), sort_by_parameter_order=True
)


def _task_insert_returning(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    stmt = _TASK_INSERT_RETURNING_NOTIFY if _is_pg(conn) else _TASK_INSERT_RETURNING
    params = [
        {
            "topic": r["topic"],
            "input": r["input"],
            "timeout": r["timeout"],
            "retry": r["retry"],
            "exec_after": r.get("exec_after"),
            "delay_ms": r.get("delay_ms", 0),
            "periodic_at": r.get("periodic_at"),
            "status": Status.PENDING.value,
        }
        for r in rows
    ]
    return list(conn.execute(stmt, params).scalars())


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
    columns = ", ".join(name for name, _ in _COPY_COLUMNS)
    sql = f"COPY {task.name} ({columns}) FROM STDIN (FORMAT BINARY)"
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types([pg_type for _, pg_type in _COPY_COLUMNS])
            write = copy.write_row
            for task_id, r in zip(ids, rows, strict=True):
                exec_after = r.get("exec_after")
                if exec_after is None:
                    delay_ms = r.get("delay_ms", 0)
                    exec_after = at_now.get(delay_ms)
                    if exec_after is None:
                        exec_after = base + dt.timedelta(milliseconds=delay_ms)
                else:
                    exec_after = to_utc(exec_after, dialect)
                periodic_at = r.get("periodic_at")
                if periodic_at is not None:
                    periodic_at = to_utc(periodic_at, dialect)
                write((task_id, r["topic"], pending, r["input"], r["timeout"], r["retry"],
                       exec_after, base, base, periodic_at))  # fmt: skip
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
    """The latest fire time that has a task, for a periodic topic."""
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
    conn: sa.Connection, *, topic: str, window_ms: int, now: dt.datetime | None = None
) -> int:
    """Tasks of a topic running or sent to the broker within the redelivery window."""
    params = {"topic": topic, "window_ms": window_ms, "now": now}
    return int(conn.execute(_COUNT_INFLIGHT, params).scalar_one())


_ANY_DUE = sa.select(
    sa.select(task.c.id)
    .where(
        task.c.topic == sa.bindparam("topic", type_=sa.String()),
        _status_in(states.DUE),
        task.c.exec_after <= _now_param(),
    )
    .limit(1)
    .exists()
)


def task_any_due(conn: sa.Connection, *, topic: str, now: dt.datetime | None = None) -> bool:
    """Whether the topic has a due task (one index probe, not a count)."""
    return bool(conn.execute(_ANY_DUE, {"topic": topic, "now": now}).scalar())


def _lease_held(term: Any, instance_id: Any) -> ColumnElement[bool]:
    """The core row says `term` is still `instance_id`'s, with a live lease."""
    return sa.and_(
        core.c.id == 1,
        core.c.term == term,
        core.c.master_instance_id == instance_id,
        core.c.updated >= plus_ms(db_clock(), -core.c.master_out_of_date),
    )


def _claim_stmt(pg: bool) -> sa.Update:
    n = _now_param()
    term = sa.bindparam("p_term", type_=sa.BigInteger())
    due = (
        sa.select(task.c.id)
        .where(
            task.c.topic == sa.bindparam("p_topic", type_=sa.String()),
            _status_in(states.DUE),
            task.c.exec_after <= n,
            sa.or_(
                task.c.dispatched.is_(None),
                task.c.dispatched
                < plus_ms(n, -(sa.bindparam("window_ms", type_=sa.Integer()) + task.c.timeout)),
                # claimed by an earlier master, which may have died before publishing
                task.c.term < term,
            ),
        )
        .order_by(task.c.exec_after, task.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    if pg:
        # id = ANY(ARRAY(...)): the claimed ids are found first, then each row by
        # primary key; `id IN (...)` let PostgreSQL hash-join a scan of the table.
        due = due.with_for_update(skip_locked=True)
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
        .returning(task.c.id, task.c.token)
    )


_CLAIM = _per_dialect(_claim_stmt)


def task_claim_due(
    conn: sa.Connection,
    *,
    topic: str,
    limit: int,
    term: int,
    instance_id: int,
    window_ms: int,
    now: dt.datetime | None = None,
) -> list[tuple[int, int]]:
    """Stamp up to `limit` due tasks with a fresh token and our term (fenced).

    A task is due when pending or retry, its exec_after has passed, and it is
    not already in flight (never sent, sent longer ago than the redelivery
    window plus its timeout, or sent by an earlier master, whose messages may
    never have left: its stale messages are dropped by the token check).
    Returns (id, token) pairs.
    """
    pg = _is_pg(conn)
    if not pg:
        core_fence(conn, term=term, instance_id=instance_id)
    params = {
        "p_topic": topic,
        "limit": limit,
        "p_term": term,
        "p_instance_id": instance_id,
        "window_ms": window_ms,
        "now": now,
    }
    claimed = sorted((r.id, r.token) for r in conn.execute(_CLAIM[conn.dialect.name], params))
    if pg and not claimed:  # nothing due, or the fence refused: say which
        core_fence(conn, term=term, instance_id=instance_id)
    return claimed


def task_unclaim_many(conn: sa.Connection, *, pairs: Sequence[tuple[int, int]]) -> int:
    """Forget a claim whose message never reached the broker, so the next sweep
    dispatches it again at once instead of after the redelivery window."""
    if not pairs:
        return 0
    stmt = (
        sa.update(task)
        .where(
            _in(conn, task.c.id, "ids"),
            _in(conn, task.c.token, "tokens"),
            _status_guard(states.DUE),
        )
        .values(dispatched=None, token=None)
    )
    params = {"ids": [p[0] for p in pairs], "tokens": [p[1] for p in pairs]}
    return conn.execute(stmt, params).rowcount


# --- task: execution (consumer) ---------------------------------------------

STARTED_COLUMNS = (
    task.c.id,
    task.c.topic,
    task.c.input,
    task.c.timeout,
    task.c.retry,
    task.c.attempts,
    task.c.worker_id,
)


def _start_stmt(pg: bool) -> sa.Update:
    t = states.transition("start")
    n = db_now()
    return (
        sa.update(task)
        .where(
            _in_for(pg, task.c.id, "ids"),
            _in_for(pg, task.c.token, "tokens"),
            _status_guard(t.sources),
        )
        .values(
            status=t.target.value,
            worker_id=task.c.token,
            instance_id=sa.bindparam("p_instance_id", type_=sa.BigInteger()),
            started=n,
            updated=n,
            finished=None,
            dispatched=None,
            attempts=task.c.attempts + 1,
            worker_fqdn=task.c.worker_fqdn + sa.bindparam("fqdn_line", type_=sa.Text()),
        )
        .returning(*STARTED_COLUMNS)
    )


_START = _per_dialect(_start_stmt)


def task_start_if_token(
    conn: sa.Connection,
    *,
    pairs: Sequence[tuple[int, int]],
    instance_id: int,
    fqdn: str,
) -> list[sa.Row[Any]]:
    """pending/retry -> running for each (id, token) whose token still matches.

    The token becomes the execution's worker_id, so every later write of this
    execution is guarded by it. Rows whose token moved on are left alone.
    """
    if not pairs:
        return []
    params = {
        "ids": [p[0] for p in pairs],
        "tokens": [p[1] for p in pairs],
        "p_instance_id": instance_id,
        "fqdn_line": fqdn + "\n",
    }
    wanted = set(pairs)
    rows = conn.execute(_START[conn.dialect.name], params).all()
    return [r for r in rows if (r.id, r.worker_id) in wanted]


_FINISH_PARAMS = {"log": "", "result": None, "take": 0, "err": "", "at": None, "delay_ms": 0}
_FINISH_TYPES: dict[str, Any] = {
    "tid": sa.BigInteger(),
    "wid": sa.BigInteger(),
    "log": sa.Text(),
    "result": sa.Text(),
    "take": sa.Integer(),
    "err": sa.Text(),
    "at": UTCDateTime(),
    "delay_ms": sa.Integer(),
}
FINISH_NAMES = ("succeed", "retry", "fail", "hand_back")


def _finish_stmt(name: str, src: dict[str, Any]) -> sa.Update:
    """One way out of `running`, reading its per-row values from `src`:
    bind parameters (executemany) or the columns of an unnest (one statement)."""
    t = states.transition(name)
    if t.sources != {Status.RUNNING}:
        raise IllegalTransition(f"{name} does not leave running")
    n = db_now()
    values: dict[str, Any] = {
        "status": t.target.value,
        "worker_id": 0,
        "updated": n,
        "token": None,
        "log": task.c.log + src["log"],
    }
    if t.target in states.TERMINAL or t.target == Status.RETRY:
        values["finished"] = n
    if t.target == Status.SUCCESS:
        values["result"] = src["result"]
    if t.target in (Status.RETRY, Status.FAILED):
        values["retry"] = task.c.retry - src["take"]
        values["errlog"] = task.c.errlog + src["err"]
    if t.target in (Status.RETRY, Status.PENDING):
        values["exec_after"] = sa.func.coalesce(src["at"], plus_ms(n, src["delay_ms"]))
    return (
        sa.update(task)
        .where(
            task.c.id == src["tid"],
            task.c.worker_id == src["wid"],
            _status_guard(t.sources),
        )
        .values(**values)
    )


def _finish_executemany(name: str) -> sa.Update:
    return _finish_stmt(name, {k: sa.bindparam(k, type_=v) for k, v in _FINISH_TYPES.items()})


def _finish_unnest(name: str) -> sa.Update:
    # Zipped unnest of one array per column; found by primary key (see
    # `_status_guard`), so the plan does not depend on the queue's statistics.
    cols = [
        sa.func.unnest(sa.bindparam(k + "s", type_=ARRAY(v))).label(k)
        for k, v in _FINISH_TYPES.items()
    ]
    v = sa.select(*cols).subquery("v")
    # Each finished row also wakes a master held back by capacity (NOTIFY
    # sends one per distinct payload and transaction), in the same round trip.
    freed = sa.func.pg_notify(PUBLISH_CHANNEL, sa.literal(CAPACITY_PREFIX) + task.c.topic)
    return _finish_stmt(name, dict(v.c)).returning(freed)


_FINISH_STATEMENTS = {
    "postgresql": {name: _finish_unnest(name) for name in FINISH_NAMES},
    "sqlite": {name: _finish_executemany(name) for name in FINISH_NAMES},
}


def task_finish_if_running_many(
    conn: sa.Connection, *, transition: str, rows: Sequence[dict[str, Any]]
) -> int:
    """Move executions out of `running`, each guarded by its worker_id.

    One statement for the whole batch on PostgreSQL (arrays, unnest), an
    executemany on SQLite. Each row: tid, wid and, as the transition needs,
    log, result, take (runs to charge), err (errlog entry), at (datetime)
    or delay_ms. Returns how many rows changed; a row that was rescued or
    finished meanwhile is not touched.
    """
    if not rows:
        return 0
    try:
        stmt = _FINISH_STATEMENTS[conn.dialect.name][transition]
    except KeyError:
        raise IllegalTransition(f"{transition!r} is not a way out of running") from None
    full = [{**_FINISH_PARAMS, **r} for r in rows]
    if conn.dialect.name == "sqlite":
        return conn.execute(stmt, full).rowcount
    params = {k + "s": [r[k] for r in full] for k in _FINISH_TYPES}
    return len(conn.execute(stmt, params).all())


# --- task: rescue (master) --------------------------------------------------


def task_find_stuck(
    conn: sa.Connection,
    *,
    grace_ms: int,
    out_of_date_ms: int,
    limit: int,
    now: dt.datetime | None = None,
) -> list[sa.Row[Any]]:
    """Running tasks past timeout + grace, or whose instance stopped beating."""
    n = _now(now)
    live = sa.select(instance.c.id).where(instance.c.heartbeat >= plus_ms(n, -out_of_date_ms))
    overdue = task.c.started < plus_ms(n, -(task.c.timeout + grace_ms))
    orphan = sa.or_(task.c.instance_id.is_(None), task.c.instance_id.not_in(live))
    stmt = (
        sa.select(
            task.c.id,
            task.c.topic,
            task.c.worker_id,
            task.c.retry,
            task.c.attempts,
            task.c.instance_id,
            overdue.label("overdue"),
        )
        .where(_status_in([Status.RUNNING]), sa.or_(overdue, orphan))
        .order_by(task.c.id)
        .limit(limit)
    )
    return conn.execute(stmt).all()


def task_rescue_many(
    conn: sa.Connection,
    *,
    term: int,
    instance_id: int,
    retry_rows: Sequence[dict[str, Any]],
    fail_rows: Sequence[dict[str, Any]],
) -> int:
    """Write the master's rescue decisions, fenced by its term."""
    core_fence(conn, term=term, instance_id=instance_id)
    changed = task_finish_if_running_many(conn, transition="retry", rows=retry_rows)
    return changed + task_finish_if_running_many(conn, transition="fail", rows=fail_rows)


# --- task: admin ------------------------------------------------------------


def task_requeue_if_finished(
    conn: sa.Connection, *, ids: Sequence[int], runs: int, note: str
) -> list[int]:
    """failed/success -> pending with `runs` runs left; returns the ids moved."""
    t = states.transition("requeue")
    n = db_now()
    stmt = (
        sa.update(task)
        .where(_in(conn, task.c.id, "ids"), _status_guard(t.sources))
        .values(
            status=t.target.value,
            retry=runs,
            exec_after=n,
            updated=n,
            finished=None,
            worker_id=0,
            token=None,
            dispatched=None,
            errlog=task.c.errlog + sa.literal(note),
        )
        .returning(task.c.id, task.c.topic)
    )
    moved = conn.execute(stmt, {"ids": list(ids)}).all()
    for topic in sorted({r.topic for r in moved}):
        _notify(conn, PUBLISH_CHANNEL, topic)
    return sorted(r.id for r in moved)


def task_cancel_if_due(conn: sa.Connection, *, ids: Sequence[int], note: str) -> list[int]:
    """pending/retry -> failed, with `note` in errlog; returns the ids moved."""
    t = states.transition("cancel")
    n = db_now()
    stmt = (
        sa.update(task)
        .where(_in(conn, task.c.id, "ids"), _status_guard(t.sources))
        .values(
            status=t.target.value,
            updated=n,
            finished=n,
            token=None,
            dispatched=None,
            errlog=task.c.errlog + sa.literal(note),
        )
        .returning(task.c.id)
    )
    return sorted(conn.execute(stmt, {"ids": list(ids)}).scalars())


# --- core: election ---------------------------------------------------------


def core_get(conn: sa.Connection) -> sa.Row[Any]:
    row = conn.execute(sa.select(core, db_now().label("db_now")).where(core.c.id == 1)).first()
    if row is None:
        raise LeadershipLost("the core row is missing: run `alembic upgrade head`")
    return row


def core_attempt_elect(
    conn: sa.Connection, *, instance_id: int, fqdn: str, now: dt.datetime | None = None
) -> sa.Row[Any] | None:
    """Take or keep the lease in one conditional UPDATE; None when another holds it.

    Judged by the database clock: the lease is ours to keep while our last
    renewal is younger than `master_out_of_date`; anyone may take it once it
    is older (or resigned). `term` grows by one whenever a new lease begins.
    """
    n = sa.literal(now, UTCDateTime()) if now is not None else db_clock()
    expired = core.c.updated < plus_ms(n, -core.c.master_out_of_date)
    kept = sa.and_(core.c.master_instance_id == instance_id, sa.not_(expired))
    stmt = (
        sa.update(core)
        .where(
            core.c.id == 1,
            sa.or_(
                core.c.master_instance_id == instance_id,
                core.c.master_instance_id.is_(None),
                expired,
            ),
        )
        .values(
            term=sa.case((kept, core.c.term), else_=core.c.term + 1),
            master_instance_id=instance_id,
            master_fqdn=fqdn,
            updated=n,
        )
        .returning(core.c.term, core.c.master_out_of_date, core.c.instance_heartbeat)
    )
    return conn.execute(stmt).first()


def core_resign(conn: sa.Connection, *, instance_id: int, term: int) -> bool:
    """Give the lease up so a follower takes it at its next beat (or at once on NOTIFY)."""
    stmt = (
        sa.update(core)
        .where(core.c.id == 1, core.c.master_instance_id == instance_id, core.c.term == term)
        .values(master_instance_id=None, master_fqdn="", updated=db_now())
    )
    done = conn.execute(stmt).rowcount == 1
    if done:
        _notify(conn, CORE_CHANNEL, "resigned")
    return done


def _fence_stmt(pg: bool) -> sa.Select[Any]:
    cols: list[Any] = [core.c.term]
    if pg:
        idle = sa.func.set_config(
            "idle_in_transaction_session_timeout", str(FENCE_IDLE_TIMEOUT_MS), True
        )
        cols.append(idle)
    stmt = sa.select(*cols).where(
        _lease_held(
            sa.bindparam("term", type_=sa.BigInteger()),
            sa.bindparam("instance_id", type_=sa.BigInteger()),
        )
    )
    return stmt.with_for_update(read=True) if pg else stmt


_FENCE = _per_dialect(_fence_stmt)


def core_fence(conn: sa.Connection, *, term: int, instance_id: int) -> None:
    """Refuse a master-only write unless `term` is still ours and our lease is live.

    On PostgreSQL the core row is share-locked until commit, so a new
    election cannot slip in between this check and the write it guards; the
    same statement caps how long the transaction may then sit idle
    (`FENCE_IDLE_TIMEOUT_MS`), so a paused master cannot hold the lock.
    """
    params = {"term": term, "instance_id": instance_id}
    if conn.execute(_FENCE[conn.dialect.name], params).first() is None:
        raise LeadershipLost(f"term {term} is over for instance {instance_id}")


def core_set_timings(
    conn: sa.Connection, *, master_out_of_date_ms: int, instance_heartbeat_ms: int
) -> None:
    conn.execute(
        sa.update(core)
        .where(core.c.id == 1)
        .values(master_out_of_date=master_out_of_date_ms, instance_heartbeat=instance_heartbeat_ms)
    )


# --- instance ---------------------------------------------------------------


def instance_register(
    conn: sa.Connection,
    *,
    fqdn: str,
    pid: int,
    topics: dict[str, dict[str, int]],
    master_eligible: bool,
) -> int:
    n = db_now()
    stmt = (
        sa.insert(instance)
        .values(
            fqdn=fqdn,
            pid=pid,
            topics=json.dumps(topics, sort_keys=True),
            master_eligible=master_eligible,
            started=n,
            heartbeat=n,
        )
        .returning(instance.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def instance_beat(
    conn: sa.Connection, *, instance_id: int, topics: dict[str, dict[str, int]] | None = None
) -> bool:
    """Renew our heartbeat (and, when given, what we advertise per topic);
    False when the row is gone (we were forgotten)."""
    values: dict[str, Any] = {"heartbeat": db_clock()}
    if topics is not None:
        values["topics"] = json.dumps(topics, sort_keys=True)
    stmt = sa.update(instance).where(instance.c.id == instance_id).values(**values)
    return conn.execute(stmt).rowcount == 1


def instance_live(conn: sa.Connection, *, out_of_date_ms: int) -> list[sa.Row[Any]]:
    n = db_now()
    stmt = (
        sa.select(instance)
        .where(instance.c.heartbeat >= plus_ms(n, -out_of_date_ms))
        .order_by(instance.c.id)
    )
    return conn.execute(stmt).all()


def instance_list(conn: sa.Connection) -> list[sa.Row[Any]]:
    n = db_now()
    return conn.execute(sa.select(instance, n.label("db_now")).order_by(instance.c.id)).all()


def instance_delete(conn: sa.Connection, *, instance_id: int) -> None:
    conn.execute(sa.delete(instance).where(instance.c.id == instance_id))


def instance_forget_dead(conn: sa.Connection, *, older_than_ms: int) -> int:
    """Delete rows of instances silent for longer than `older_than_ms`."""
    n = db_now()
    stmt = sa.delete(instance).where(instance.c.heartbeat < plus_ms(n, -older_than_ms))
    return conn.execute(stmt).rowcount


def topics_of(row: sa.Row[Any]) -> dict[str, dict[str, int]]:
    """The decoded `topics` column of an instance row."""
    return json.loads(row.topics or "{}")


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
) -> list[ColumnElement[bool]]:
    col = task.c[time_column]
    where: list[ColumnElement[bool]] = []
    if topic is not None:
        where.append(task.c.topic == topic)
    if statuses is not None:
        where.append(_status_in(statuses))
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
) -> list[sa.Row[Any]]:
    """The newest tasks (by id) matching the filters; since/until bound `created`."""
    stmt = (
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
) -> list[int]:
    """Ids of tasks in `statuses` (of a topic, within a time window), oldest first."""
    stmt = (
        sa.select(task.c.id)
        .where(
            *_filters(
                topic=topic, statuses=statuses, since=since, until=until, time_column=time_column
            )
        )
        .order_by(task.c.id)
    )
    return list(conn.execute(stmt).scalars())


def task_count_by_topic_status(
    conn: sa.Connection, *, statuses: Iterable[Status] | None = None
) -> list[sa.Row[Any]]:
    """(topic, status, n) for every pair present, optionally only some statuses."""
    stmt = sa.select(task.c.topic, task.c.status, sa.func.count().label("n"))
    if statuses is not None:
        stmt = stmt.where(_status_in(statuses))
    stmt = stmt.group_by(task.c.topic, task.c.status).order_by(task.c.topic, task.c.status)
    return conn.execute(stmt).all()


def task_oldest_due(conn: sa.Connection, *, now: dt.datetime | None = None) -> list[sa.Row[Any]]:
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


def _purgeable(
    statuses: Iterable[Status], older_than_ms: int, now: dt.datetime | None
) -> list[ColumnElement[bool]]:
    statuses = set(statuses)
    if not statuses or not statuses <= states.TERMINAL:
        raise IllegalTransition("only success and failed tasks can be purged")
    return [_status_in(statuses), task.c.finished < plus_ms(_now(now), -older_than_ms)]


def task_count_purgeable(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    older_than_ms: int,
    now: dt.datetime | None = None,
) -> int:
    """How many finished tasks in `statuses` finished more than `older_than_ms` ago."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(task)
        .where(*_purgeable(statuses, older_than_ms, now))
    )
    return int(conn.execute(stmt).scalar_one())


def task_purge_batch(
    conn: sa.Connection,
    *,
    statuses: Iterable[Status],
    older_than_ms: int,
    limit: int,
    now: dt.datetime | None = None,
) -> int:
    """Delete up to `limit` terminal tasks finished more than `older_than_ms` ago.

    Only `success`/`failed` rows qualify (a running or due row is never
    touched); on PostgreSQL rows another transaction holds are skipped, so a
    batch never waits on a lock and holds its own only briefly.
    """
    victims = (
        sa.select(task.c.id)
        .where(*_purgeable(statuses, older_than_ms, now))
        .order_by(task.c.id)
        .limit(limit)
    )
    if _is_pg(conn):
        victims = victims.with_for_update(skip_locked=True)
    stmt = sa.delete(task).where(task.c.id.in_(victims.scalar_subquery()))
    return conn.execute(stmt).rowcount
