"""Statements of what a task's end sets off: the next chain step, a group's
callback, the outbox rows of result topics (taken by `store.outbox`); and
the rows that write them. A step or callback gets its class's settings as a
publish would: timeout, retry, priority, result topic, `expires` (counted
from when it is written) and `lock` (the key formatted from its input).

`task_links_on_terminal` is the one place that logic lives. Every
transaction that makes tasks `success` or `failed` (the consumers' batched
finish, the master's rescue, an admin cancel) calls it with the ids it
just moved, before it commits, so:

- a chain's next row is written in the same transaction that marks the
  previous step `success` (damrey's worker chains); a `failed` step writes
  nothing, which stops the chain. A unique index on (chain_id, chain_step)
  makes a step that succeeds twice (an admin requeue) start its successor once;
- a group's callback is written once, by the transaction that makes its
  last member terminal. The finishing transaction increments the group's
  `done` counter, which row-locks it: two instances ending the last two
  members at once are serialised there (PostgreSQL re-reads the row when
  the lock is granted, and under READ COMMITTED the members' statuses read
  after it include the other's committed finish; SQLite has one writer).
  Only when `done` reaches `size` are the members read, and the callback
  is written only while `callback_id` is null;
- a task whose MsgQ has a `result_topic` gets an outbox row, published to
  that queue after commit by `tasker.runtime.outbox.ResultPublisher` (at least once).

Only rows flagged `linked` (see `LINKED`) are passed in, so a plain task's
finish runs no statement of this module.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states, topics
from tasker.exceptions import TaskNotFound
from tasker.schema import task, task_group, task_outbox
from tasker.states import Status
from tasker.store.dialect import PUBLISH_CHANNEL, _in, _is_pg, _notify, db_now, to_ms
from tasker.store.publish import insert_params, task_insert_stmt

log = logging.getLogger(__name__)

# One coalesce, not `a IS NOT NULL OR ...`: SQLite 3.40 answers `col IS NOT
# NULL` wrongly (always true) in the RETURNING clause of an UPDATE.
LINKED: ColumnElement[bool] = (
    sa.func.coalesce(task.c.chain_next, sa.cast(task.c.group_id, sa.Text), task.c.result_topic)
    .isnot(None)
    .label("linked")
)
"""Whether a task's end sets something off (read with the row at its start)."""

# --- writing linked rows ----------------------------------------------------

_LINK_COLUMNS = ("chain_id", "chain_step", "chain_next", "group_id", "result_topic")


def _insert_stmt(conn: sa.Connection, *, skip_conflicts: bool) -> Any:
    insert = task_insert_stmt(_is_pg(conn))
    if skip_conflicts:
        insert = insert.on_conflict_do_nothing()
    return insert.returning(task.c.id, sort_by_parameter_order=True)


def _stored_step(step: dict[str, Any]) -> dict[str, Any]:
    """A later step as `chain_next` keeps it: its timeout in ms under
    "timeout", its `expires` (when it has one) in ms under "expires"."""
    out = {("timeout" if k == "timeout_s" else k): v for k, v in step.items()}
    out["timeout"] = to_ms(out["timeout"])
    if out.get("expires") is not None:
        out["expires"] = to_ms(out["expires"])
    return out


def _insert_rows(
    conn: sa.Connection, rows: Sequence[dict[str, Any]], *, skip_conflicts: bool = False
) -> list[int]:
    """Insert pending rows with their link columns; ids in input order (a
    row skipped for a conflict returns none). One NOTIFY per topic."""
    if not rows:
        return []
    params = [{**insert_params(r), **{k: r.get(k) for k in _LINK_COLUMNS}} for r in rows]
    ids = list(conn.execute(_insert_stmt(conn, skip_conflicts=skip_conflicts), params).scalars())
    for topic in sorted({r["topic"] for r in rows}):
        _notify(conn, PUBLISH_CHANNEL, topic)
    return ids


def task_insert_chain(
    conn: sa.Connection, *, first: dict[str, Any], rest: list[dict[str, Any]]
) -> int:
    """Insert the first step of a chain; returns its id, which is also the
    chain's id. `first` is a publish row (topic, input, timeout_s, retry,
    exec_after or delay_s, result_topic); `rest` the later steps, each
    {"topic", "timeout_s", "retry", "result_topic", "priority"} and, when
    the step's class sets them, "expires" (s), "lock" (its template) and
    "lock_defaults", stored as `chain_next` with durations in ms, as the
    columns keep them."""
    steps = [_stored_step(s) for s in rest]
    row = {**first, "chain_step": 1, "chain_next": json.dumps(steps) if steps else None}
    (tid,) = _insert_rows(conn, [row])
    conn.execute(sa.update(task).where(task.c.id == tid).values(chain_id=tid))
    return tid


def task_insert_group(
    conn: sa.Connection, *, members: Sequence[dict[str, Any]], then: dict[str, Any]
) -> tuple[int, list[int]]:
    """Insert a group and its members; returns (group id, member ids in order).

    `then` is the callback's publish row without `results` in its input
    (topic, input: JSON object text, timeout_s, retry, result_topic, and
    priority, expires_s, lock_key when it has them: the callback's expiry
    counts from when it is written). An empty group writes its callback at
    once, with no results.
    """
    expires_s = then.get("expires_s")
    gid = conn.execute(
        sa.insert(task_group)
        .values(
            size=len(members),
            then_topic=then["topic"],
            then_input=then["input"],
            then_timeout=to_ms(then["timeout_s"]),
            then_retry=then["retry"],
            then_result_topic=then.get("result_topic"),
            then_priority=then.get("priority", 0),
            then_expires=None if expires_s is None else to_ms(expires_s),
            then_lock_key=then.get("lock_key"),
            created=db_now(),
        )
        .returning(task_group.c.id)
    ).scalar_one()
    ids = _insert_rows(conn, [{**m, "group_id": gid} for m in members])
    if not members:
        _group_complete(conn, gid)
    return int(gid), ids


# --- what a task's end sets off ---------------------------------------------

_ENDED_COLUMNS = (
    task.c.id,
    task.c.topic,
    task.c.status,
    task.c.result,
    task.c.errlog,
    task.c.chain_id,
    task.c.chain_step,
    task.c.chain_next,
    task.c.group_id,
    task.c.result_topic,
)


def task_links_on_terminal(conn: sa.Connection, *, ids: Sequence[int]) -> int:
    """Inside the transaction that just made tasks `ids` terminal: write the
    next chain steps, the callbacks of groups now complete and the outbox
    rows of result topics (see the module). Returns the rows written."""
    if not ids:
        return 0
    terminal = [s.value for s in states.TERMINAL]
    stmt = (
        sa.select(*_ENDED_COLUMNS)
        .where(_in(conn, task.c.id, "ids"), task.c.status.in_(terminal))
        .order_by(task.c.id)
    )
    rows = conn.execute(stmt, {"ids": list(ids)}).all()
    steps = [_next_step(r) for r in rows if _chain_goes_on(r)]
    written = len(_insert_rows(conn, [s for s in steps if s], skip_conflicts=True))
    for gid, n in sorted(collections.Counter(r.group_id for r in rows if r.group_id).items()):
        written += _group_member_ended(conn, gid, n)
    outbox = [
        {"task_id": r.id, "queue": r.result_topic, "body": json.dumps(outcome_message(r))}
        for r in rows
        if r.result_topic
    ]
    if outbox:
        conn.execute(sa.insert(task_outbox).values(created=db_now()), outbox)
    return written + len(outbox)


def _chain_goes_on(row: Any) -> bool:
    return row.status == Status.SUCCESS.value and bool(row.chain_next)


def _next_step(row: Any) -> dict[str, Any] | None:
    """The row of the step after `row`; None (the chain stops, logged) when
    `chain_next` was damaged by hand: a bad value must not fail the finish
    of the task it rides on, nor every retry of it."""
    try:
        head, *rest = json.loads(row.chain_next)
        if not _is_step(head):
            raise ValueError(f"not a step: {head!r:.80}")
    except (TypeError, ValueError) as exc:
        log.error("task %d: chain_next is not a list of steps (%s); its chain stops here",
                  row.id, exc, extra={"action": "chain_broken", "task_id": row.id})  # fmt: skip
        return None
    # The previous result is the next input as it is: a result that does
    # not decode into the next class fails that step as bad input.
    text = row.result if row.result is not None else "null"
    out = {
        "topic": head["topic"],
        "input": text,
        "timeout_s": head["timeout"] / 1000,  # `chain_next` keeps ms
        "retry": head["retry"],
        "result_topic": head.get("result_topic"),
        "priority": head.get("priority", 0),  # absent in chains written before priorities
        "chain_id": row.chain_id,
        "chain_step": row.chain_step + 1,
        "chain_next": json.dumps(rest) if rest else None,
    }
    if head.get("expires") is not None:  # counted from now, when the step is written
        out["expires_s"] = head["expires"] / 1000
    if head.get("lock") is not None:
        out["lock_key"] = _step_lock(row.id, head, text)
    return out


def _step_lock(prev_id: int, head: dict[str, Any], text: str) -> str | None:
    """The lock key of a later step: its class's template formatted over its
    input (the previous result, a JSON object), with the class's defaults of
    the fields the input leaves out, as a direct publish formats it over the
    payload. None when the input is no object or lacks a field the class
    requires: the step then fails as bad input, never running. A template
    the input does not format with, or a key no key may be (control
    characters, longer than 255), gives a key that still serialises the
    step with every task of the same input: the template itself, or the
    SHA-256 of the key (logged; a direct publish would have refused it)."""
    template: str = head["lock"]
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    fields = {**(head.get("lock_defaults") or {}), **data}
    try:
        key: str = template.format_map(fields)
    except KeyError:
        return None  # a required field is missing: bad input
    except (AttributeError, IndexError, ValueError, TypeError) as exc:
        log.warning("task %d: the next step's lock %r does not format with its input (%s); "
                    "it takes the template as its key", prev_id, template[:60], exc,
                    extra={"action": "chain_lock_unformatted", "task_id": prev_id})  # fmt: skip
        key = template
    problem = topics.key_problem(key)
    if problem is not None:
        log.warning("task %d: the next step's lock key %s; it takes the key's SHA-256", prev_id,
                    problem, extra={"action": "chain_lock_hashed", "task_id": prev_id})  # fmt: skip
        key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def _is_step(step: Any) -> bool:
    return (
        isinstance(step, dict)
        and isinstance(step.get("topic"), str)
        and 0 < len(step["topic"]) <= 200
        and all(type(step.get(k)) is int and 0 < step[k] < 2**31 for k in ("timeout", "retry"))
        and (step.get("result_topic") is None or isinstance(step["result_topic"], str))
        and type(step.get("priority", 0)) is int
        and -(2**31) < step.get("priority", 0) < 2**31
        and (step.get("expires") is None or (type(step["expires"]) is int and step["expires"] > 0))
        and (step.get("lock") is None or isinstance(step["lock"], str))
        and isinstance(step.get("lock_defaults") or {}, dict)
    )


def _json(text: str | None, what: str) -> Any:
    """Decoded JSON text; the text itself when a hand-made row holds no JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("%s is not JSON; passed on as text", what, extra={"action": "not_json"})
        return text


def outcome_message(row: Any) -> dict[str, Any]:
    """{"id", "topic", "success", "error", "result"} of a terminal row: what a
    result topic receives and a group callback's `results` hold."""
    ok = row.status == Status.SUCCESS.value
    return {
        "id": row.id,
        "topic": row.topic,
        "success": ok,
        "error": None if ok else (row.errlog or None),
        "result": _json(row.result, f"the result of task {row.id}") if ok else None,
    }


def _group_member_ended(conn: sa.Connection, gid: int, n: int) -> int:
    # The UPDATE row-locks the group until commit: see the module docstring.
    stmt = (
        sa.update(task_group)
        .where(task_group.c.id == gid, task_group.c.callback_id.is_(None))
        .values(done=task_group.c.done + n)
        .returning(task_group.c.done, task_group.c.size)
    )
    counted = conn.execute(stmt).first()
    if counted is None or counted.done < counted.size:
        return 0
    return 1 if _group_complete(conn, gid) else 0


def _group_complete(conn: sa.Connection, gid: int) -> int | None:
    """Write the callback if every member is terminal (the group row is
    locked by the caller's transaction); returns its id, or None."""
    members = conn.execute(
        sa.select(*_ENDED_COLUMNS).where(task.c.group_id == gid).order_by(task.c.id)
    ).all()
    if any(m.status not in (Status.SUCCESS.value, Status.FAILED.value) for m in members):
        return None  # a member counted twice (requeued meanwhile): wait for the rest
    g = conn.execute(sa.select(task_group).where(task_group.c.id == gid)).one()
    payload = _json(g.then_input, f"then_input of group {gid}")
    if not isinstance(payload, dict):
        payload = {}  # the callback then fails as bad input, saying what is missing
    payload["results"] = [
        {k: v for k, v in outcome_message(m).items() if k != "topic"} for m in members
    ]
    row = {
        "topic": g.then_topic,
        "input": json.dumps(payload),
        "timeout_s": g.then_timeout / 1000,
        "retry": g.then_retry,
        "result_topic": g.then_result_topic,
        "priority": g.then_priority,
        "lock_key": g.then_lock_key,
    }
    if g.then_expires is not None:  # counted from now, when the callback is written
        row["expires_s"] = g.then_expires / 1000
    (cid,) = _insert_rows(conn, [row])
    conn.execute(sa.update(task_group).where(task_group.c.id == gid).values(callback_id=cid))
    return cid


# --- reading a result -------------------------------------------------------


def task_get_settling(conn: sa.Connection, *, task_id: int) -> sa.Row[Any]:
    """The row that settles `task_id`'s result: the task itself, or for a
    chain step that succeeded and had steps after it, the chain's last
    step written so far. The chain is over when this row is `failed`, or
    `success` with no `chain_next`. TaskNotFound for an unknown id."""
    row = conn.execute(sa.select(task).where(task.c.id == task_id)).first()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}")
    if row.chain_id is None or not _chain_goes_on(row):
        return row
    tail = (
        sa.select(task)
        .where(task.c.chain_id == row.chain_id, task.c.chain_step > row.chain_step)
        .order_by(task.c.chain_step.desc())
        .limit(1)
    )
    return conn.execute(tail).first() or row
