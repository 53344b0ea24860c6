"""Statements on `core` (election, resign, fence, timings) and `instance`
(register, heartbeat, live list, forget dead).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import db
from tasker.exceptions import LeadershipLost, SchemaMissing
from tasker.schema import UTCDateTime, core, instance
from tasker.store.dialect import (
    CORE_CHANNEL,
    FENCE_IDLE_TIMEOUT_MS,
    PUBLISH_CHANNEL,
    _notify,
    _per_dialect,
    db_clock,
    db_now,
    plus_ms,
    to_ms,
)

INSTANCE_PREFIX = "instance:"
"""Payload prefix on PUBLISH_CHANNEL when an instance registers: the master
learns its topics and capacity at once (see `runtime.quiet`)."""

# --- core: election ---------------------------------------------------------


def _lease_held(term: Any, instance_id: Any) -> ColumnElement[bool]:
    """The core row says `term` is still `instance_id`'s, with a live lease."""
    return sa.and_(
        core.c.id == 1,
        core.c.term == term,
        core.c.master_instance_id == instance_id,
        core.c.updated >= plus_ms(db_clock(), -core.c.master_out_of_date),
    )


def core_get(conn: sa.Connection) -> sa.Row[Any]:
    """The core row (lease, timings in ms) with the database clock as `db_now`.

    SchemaMissing when the row is not there: `tasker db upgrade` writes it,
    and without it no instance can be elected (a missing table raises the
    same, from `db.wrap_db_errors`)."""
    row = conn.execute(sa.select(core, db_now().label("db_now")).where(core.c.id == 1)).first()
    if row is None:
        raise SchemaMissing(f"the core row is missing {db.SCHEMA_HINT}")
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
    new_id = int(conn.execute(stmt).scalar_one())
    _notify(conn, PUBLISH_CHANNEL, f"{INSTANCE_PREFIX}{new_id}")
    return new_id


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


def instance_live(conn: sa.Connection, *, out_of_date_s: float) -> Sequence[sa.Row[Any]]:
    """Instance rows that beat within the last `out_of_date_s` seconds, by id."""
    n = db_now()
    stmt = (
        sa.select(instance)
        .where(instance.c.heartbeat >= plus_ms(n, -to_ms(out_of_date_s)))
        .order_by(instance.c.id)
    )
    return conn.execute(stmt).all()


def instance_list(conn: sa.Connection) -> Sequence[sa.Row[Any]]:
    n = db_now()
    return conn.execute(sa.select(instance, n.label("db_now")).order_by(instance.c.id)).all()


def instance_delete(conn: sa.Connection, *, instance_id: int) -> None:
    conn.execute(sa.delete(instance).where(instance.c.id == instance_id))


def instance_forget_dead(conn: sa.Connection, *, older_than_s: float) -> int:
    """Delete rows of instances silent for longer than `older_than_s` seconds."""
    n = db_now()
    stmt = sa.delete(instance).where(instance.c.heartbeat < plus_ms(n, -to_ms(older_than_s)))
    return conn.execute(stmt).rowcount


def topics_of(row: sa.Row[Any]) -> dict[str, dict[str, int]]:
    """The decoded `topics` column of an instance row: {topic: {"concurrency",
    "prefetch"}}. A row damaged by hand counts as serving nothing rather than
    failing every sweep of the master that reads it."""
    try:
        data = json.loads(row.topics or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        t: cfg
        for t, cfg in data.items()
        if isinstance(cfg, dict) and all(type(v) is int for v in cfg.values())
    }
