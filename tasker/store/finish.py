"""Statements that start, end or move an execution: the token-checked start,
the batched finish, and the admin requeue (the rescue's are in `rescue`).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec
import sqlalchemy as sa

from tasker import states, text
from tasker.exceptions import IllegalTransition
from tasker.schema import UTCDateTime, task
from tasker.states import Status
from tasker.store.dialect import (
    CAPACITY_PREFIX,
    PUBLISH_CHANNEL,
    _in,
    _in_for,
    _notify,
    _pair_params,
    _pairs_for,
    _per_dialect,
    _status_guard,
    db_now,
    plus_ms,
    to_ms,
)
from tasker.store.links import LINKED, task_links_on_terminal

# --- task: execution (consumer) ---------------------------------------------

STARTED_COLUMNS = (
    task.c.id,
    task.c.topic,
    task.c.input,
    task.c.timeout,
    task.c.retry,
    task.c.attempts,
    task.c.worker_id,
    task.c.cancel_requested,  # set when an admin cancelled it before this start
    LINKED,
    task.c.chain_step,
    task.c.traceparent,  # the publish's trace context (OpenTelemetry)
    task.c.created,  # with `started`: how long it waited to run
    task.c.started,
)


def _start_stmt(pg: bool) -> sa.Update:
    t = states.transition("start")
    n = db_now()
    return (
        sa.update(task)
        .where(
            _pairs_for(pg, task.c.id, task.c.token),
            _status_guard(t.sources),
            # Past its `expires`: never started; the master's expiry pass ends it.
            sa.or_(task.c.expires_at.is_(None), task.c.expires_at > n),
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
    execution is guarded by it. Rows whose token moved on are left alone, and
    so are rows past their `expires_at` (`store.task_expire_due` ends them).
    """
    if not pairs:
        return []
    params = {**_pair_params(pairs), "p_instance_id": instance_id, "fqdn_line": fqdn + "\n"}
    wanted = set(pairs)
    rows = conn.execute(_START[conn.dialect.name], params).all()
    return [r for r in rows if (r.id, r.worker_id) in wanted]


_FINISH_PARAMS = dict(
    log="", result=None, take=0, err="", at=None, delay_ms=0, ago_ms=None, end_ms=None
)
_FINISH_TYPES: dict[str, Any] = {
    "tid": sa.BigInteger(),
    "wid": sa.BigInteger(),
    "log": sa.Text(),
    "result": sa.Text(),
    "take": sa.Integer(),
    "err": sa.Text(),
    "at": UTCDateTime(),
    "delay_ms": sa.BigInteger(),
    "ago_ms": sa.BigInteger(),  # how long ago exec began (worker's clock); null: never
    "end_ms": sa.BigInteger(),  # how long ago exec ended (worker's clock); null: now
}
FINISH_NAMES = ("succeed", "retry", "fail", "hand_back")
_JSON = msgspec.json.Encoder()


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
        # When exec ended, not when the writer got to it (its batch may wait).
        end = src["end_ms"]
        values["finished"] = sa.case((end.is_(None), n), else_=plus_ms(n, -end))
    # exec's start on the clock of `finished`; unknown (a rescue): kept; handed back unstarted: null
    unknown, ago = (None if t.target == Status.PENDING else task.c.started), src["ago_ms"]
    values["started"] = sa.case((ago.is_(None), unknown), else_=plus_ms(n, -ago))
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


def _finish_recordset(name: str) -> sa.Update:
    # One JSON parameter read back as rows, encoded in C (msgspec) where psycopg
    # dumps arrays element by element in Python. `id = ANY(ids)` besides keeps it
    # pkey-driven: a generic plan made while the table was small joined a scan.
    rows = sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text()), sa.JSON()))
    cols = (sa.column(k, t) for k, t in _FINISH_TYPES.items())
    v = rows.table_valued(*cols).render_derived(name="v", with_types=True)
    by_pkey = _in_for(True, task.c.id, "ids")
    # Each finished row also wakes a master held back by capacity (NOTIFY
    # sends one per distinct payload and transaction), in the same round trip.
    # The same NOTIFY wakes `app.result` waiters (see `tasker.results`).
    freed = sa.func.pg_notify(PUBLISH_CHANNEL, sa.literal(CAPACITY_PREFIX) + task.c.topic)
    return _finish_stmt(name, dict(v.c)).where(by_pkey).returning(task.c.id, freed)


_FINISH_STATEMENTS = {
    "postgresql": {name: _finish_recordset(name) for name in FINISH_NAMES},
    "sqlite": {name: _finish_executemany(name) for name in FINISH_NAMES},
}


def _storable_row(row: dict[str, Any]) -> dict[str, Any]:
    """Whatever text a task produced can be written (see `tasker.text`): a row
    that the database would refuse must not fail the batch it rides in."""
    full = {**_FINISH_PARAMS, **row}
    full.pop("linked", None)
    # Context keeps an attempt's log within LOG_MAX_BYTES, plus its trailer.
    full["log"] = text.storable(full["log"], text.LOG_MAX_BYTES + 1024)
    full["err"] = text.storable(full["err"])
    if full["result"] is not None:
        full["result"] = text.escape(full["result"])
    return full


def task_finish_if_running_many(
    conn: sa.Connection, *, transition: str, rows: Sequence[dict[str, Any]]
) -> int:
    """Move executions out of `running`, each guarded by its worker_id: one
    statement for the batch on PostgreSQL (arrays, unnest), an executemany on
    SQLite. Each row: tid, wid and, as the transition needs, log, result,
    take (runs to charge), err (errlog entry), at (datetime) or delay_ms,
    ago_ms and end_ms (exec began and ended that long ago); `linked` (the `linked` column read at
    its start) when the task is in a chain or group or has a result topic:
    those that end here set off `task_links_on_terminal` in this transaction.
    Returns how many rows changed (not one rescued or finished meanwhile)."""
    if not rows:
        return 0
    try:
        stmt = _FINISH_STATEMENTS[conn.dialect.name][transition]
    except KeyError:
        raise IllegalTransition(f"{transition!r} is not a way out of running") from None
    ends = states.transition(transition).target in states.TERMINAL
    linked = {r["tid"] for r in rows if r.get("linked")} if ends else set()
    full = [_storable_row(r) for r in rows]
    if conn.dialect.name == "sqlite":
        changed, ended = _finish_sqlite(conn, stmt, full, linked)
    else:
        batch = [{k: r[k] for k in _FINISH_TYPES} for r in full]
        params = {"rows": _JSON.encode(batch).decode(), "ids": [r["tid"] for r in full]}
        ids = [r.id for r in conn.execute(stmt, params)]
        changed, ended = len(ids), [i for i in ids if i in linked]
    if ended:
        task_links_on_terminal(conn, ids=ended)
    return changed


class Decided(Protocol):
    """What `tasker.outcome.Decision` carries (store sits below it, so it is
    read by shape): a way out of running and what it writes."""

    @property
    def transition(self) -> str: ...  # succeed | retry | fail | hand_back
    @property
    def take(self) -> int: ...  # runs charged
    @property
    def err(self) -> str: ...  # errlog entry
    @property
    def result(self) -> str | None: ...  # JSON text
    @property
    def at(self) -> dt.datetime | None: ...  # next run, absolute
    @property
    def delay_s(self) -> float: ...  # next run, relative to the database clock (s)


class Finish(NamedTuple):
    """One execution to end: its task id, worker id (the guard), its decision,
    its attempt's log, whether it is linked (`linked` read at its start: in a
    chain or group, or has a result topic), how long ago exec began and
    ended (s; None: never began, or ended as it is written)."""

    task_id: int
    worker_id: int
    decision: Decided
    log: str = ""
    linked: bool = False
    began_s_ago: float | None = None
    ended_s_ago: float | None = None


def finish_row(item: Finish) -> dict[str, Any]:
    """The row of `task_finish_if_running_many` for one decision; its delay
    (s) becomes the statement's milliseconds here."""
    d = item.decision
    return {
        "tid": item.task_id,
        "wid": item.worker_id,
        "log": item.log,
        "result": d.result,
        "take": d.take,
        "err": d.err,
        "at": d.at,
        "delay_ms": int(d.delay_s * 1000),
        "linked": item.linked,
        "ago_ms": None if item.began_s_ago is None else to_ms(max(0.0, item.began_s_ago)),
        "end_ms": None if item.ended_s_ago is None else to_ms(max(0.0, item.ended_s_ago)),
    }


def task_finish_many(conn: sa.Connection, items: Iterable[Finish]) -> int:
    """End executions by their decisions: one `task_finish_if_running_many`
    per transition, in the order succeed, retry, fail, hand_back. Returns how
    many rows changed (one rescued or finished meanwhile is not touched).
    Raises `IllegalTransition` for a decision that does not leave running."""
    by_name = {
        name: [finish_row(i) for i in group]
        for name, group in itertools.groupby(
            sorted(items, key=lambda i: _order(i.decision)), key=lambda i: _name(i.decision)
        )
    }
    return sum(
        task_finish_if_running_many(conn, transition=name, rows=rows)
        for name, rows in by_name.items()
    )


def _name(d: Decided) -> str:
    return str(d.transition)  # an `outcome.Transition` says its plain name


def _order(d: Decided) -> int:
    try:
        return FINISH_NAMES.index(_name(d))
    except ValueError:
        raise IllegalTransition(f"{_name(d)!r} is not a way out of running") from None


def _finish_sqlite(
    conn: sa.Connection, stmt: sa.Update, rows: list[dict[str, Any]], linked: set[int]
) -> tuple[int, list[int]]:
    """executemany for the batch; a linked row alone, to learn whether it
    changed (an executemany reports only the total)."""
    if not linked:
        return conn.execute(stmt, rows).rowcount, []
    plain = [r for r in rows if r["tid"] not in linked]
    changed = conn.execute(stmt, plain).rowcount if plain else 0
    ended = [r["tid"] for r in rows if r["tid"] in linked and conn.execute(stmt, r).rowcount == 1]
    return changed + len(ended), ended


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
            cancel_requested=None,
            errlog=task.c.errlog + sa.literal(note),
        )
        .returning(task.c.id, task.c.topic)
    )
    moved = conn.execute(stmt, {"ids": list(ids)}).all()
    for topic in sorted({r.topic for r in moved}):
        _notify(conn, PUBLISH_CHANNEL, topic)
    return sorted(r.id for r in moved)
