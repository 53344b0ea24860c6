"""Statements of the `topic` table: pause and resume, the paused set the
master reads, the rate limit's state it keeps, and what the
instances declare per topic they serve (settings, payload schema).

A topic without a row is not paused and has claimed nothing; rows are made
on first use (an upsert), so a topic can be paused before any instance or
task of it exists.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tasker.schema import UTCDateTime, topic
from tasker.store.dialect import PUBLISH_CHANNEL, _is_pg, _notify, db_now

TOPIC_PREFIX = "topic:"
"""Payload prefix on PUBLISH_CHANNEL when a topic was paused or resumed."""


def _upsert(conn: sa.Connection, values: dict[str, Any], update: dict[str, Any]) -> None:
    insert = postgresql.insert if _is_pg(conn) else sqlite.insert
    stmt = insert(topic).values(**values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=[topic.c.name], set_=update)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=[topic.c.name])
    conn.execute(stmt)


def topic_set_paused(conn: sa.Connection, *, name: str, paused: bool) -> None:
    """Pause or resume a topic (made if missing), and signal the master."""
    _upsert(
        conn,
        {"name": name, "paused": paused, "updated": db_now()},
        {"paused": paused, "updated": db_now()},
    )
    _notify(conn, PUBLISH_CHANNEL, TOPIC_PREFIX + name)


_PAUSED = sa.select(topic.c.name).where(topic.c.paused)


def topic_paused(conn: sa.Connection) -> set[str]:
    """The names of the paused topics."""
    return set(conn.execute(_PAUSED).scalars())


# --- the rate limit's state (GCRA: one theoretical arrival time) ------------------
# The old `rate_window`/`rate_count` columns (calendar windows) are neither read
# nor written any more; an old master of a rolling deploy may still write them.
# SQLite has no FOR UPDATE (SQLAlchemy leaves it out): its BEGIN IMMEDIATE
# already holds the write lock.
_RATE_READ = (
    sa.select(topic.c.rate_tat, db_now().label("now"))
    .where(topic.c.name == sa.bindparam("name", type_=sa.String()))
    .with_for_update()
)


def topic_rate_read(conn: sa.Connection, *, name: str) -> tuple[dt.datetime | None, dt.datetime]:
    """(theoretical arrival time or None, database now) of a topic's rate
    limit, its row locked until the transaction ends (made if missing)."""
    stmt = _RATE_READ
    row = conn.execute(stmt, {"name": name}).first()
    if row is None:
        _upsert(conn, {"name": name, "updated": db_now()}, {})
        row = conn.execute(stmt, {"name": name}).one()
    return row.rate_tat, row.now


_RATE_WRITE = (
    sa.update(topic)
    .where(topic.c.name == sa.bindparam("p_name", type_=sa.String()))
    .values(rate_tat=sa.bindparam("p_tat", type_=UTCDateTime()))
)


def topic_rate_write(conn: sa.Connection, *, name: str, tat: dt.datetime) -> None:
    """Store the rate limit's theoretical arrival time after a claim."""
    conn.execute(_RATE_WRITE, {"p_name": name, "p_tat": tat})


# --- what instances declare (DESIGN 7: chains by topic name, payload schemas) ---------
# Each instance writes, at start, per topic it serves, its class's settings and
# payload schema (JSON text). Instances of different versions may disagree: the
# last one to start wins. The upsert writes only when the text differs, so a
# restart of an unchanged fleet leaves the rows (and PostgreSQL's heap) alone.


def _declare_statement(conn: sa.Connection) -> Any:
    insert = postgresql.insert if _is_pg(conn) else sqlite.insert
    stmt = insert(topic).values(
        name=sa.bindparam("p_name", type_=sa.String()),
        settings=sa.bindparam("p_settings", type_=sa.Text()),
        payload_schema=sa.bindparam("p_schema", type_=sa.Text()),
    )
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[topic.c.name],
        set_={"settings": new.settings, "payload_schema": new.payload_schema},
        where=sa.or_(
            topic.c.settings.is_distinct_from(new.settings),
            topic.c.payload_schema.is_distinct_from(new.payload_schema),
        ),
    )


def topic_declare_many(conn: sa.Connection, *, rows: list[dict[str, str | None]]) -> None:
    """Record what an instance serves: rows of {"name", "settings": JSON text,
    "payload_schema": JSON text or None}; a topic's row is made if missing,
    its other columns (pause, rate limit, periodic) left alone."""
    if rows:
        conn.execute(
            _declare_statement(conn),
            [{"p_name": r["name"], "p_settings": r["settings"],
              "p_schema": r["payload_schema"]} for r in rows],
        )  # fmt: skip


_DECLARED = sa.select(topic.c.name, topic.c.settings, topic.c.payload_schema).where(
    topic.c.name.in_(sa.bindparam("names", expanding=True))
)


def topic_declared(
    conn: sa.Connection, *, names: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """{name: (settings JSON text, payload schema JSON text)} of those of
    `names` that have a row (either may be None: nothing declared)."""
    if not names:
        return {}
    rows = conn.execute(_DECLARED, {"names": sorted(set(names))})
    return {r.name: (r.settings, r.payload_schema) for r in rows}


# --- periodic: the newest fire time handled (DESIGN 7) -------------------------
# Kept here, not derived from `task`, so a purge of old rows never makes a fire
# time run again. Read and written in the transaction that inserts the rows.
# One master writes it (fenced by its term) and the write only moves it forward,
# so the read takes no lock (a claim holds the row's lock for the rate limit).
_PERIODIC_LAST = sa.select(topic.c.periodic_last).where(
    topic.c.name == sa.bindparam("name", type_=sa.String())
)


def topic_periodic_last(conn: sa.Connection, *, name: str) -> dt.datetime | None:
    """The newest fire time remembered for a periodic topic (aware UTC); None
    when none is remembered (a new topic, or one from before migration 0008)."""
    value: dt.datetime | None = conn.execute(_PERIODIC_LAST, {"name": name}).scalar()
    return value


def topic_set_periodic_last(conn: sa.Connection, *, name: str, at: dt.datetime) -> None:
    """Remember `at` (aware UTC) as a periodic topic's newest fire time (the row
    made if missing); an older `at` than the one remembered changes nothing."""
    insert = postgresql.insert if _is_pg(conn) else sqlite.insert
    stmt = insert(topic).values(name=name, periodic_last=at, updated=db_now())
    new = stmt.excluded.periodic_last
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[topic.c.name],
            set_={"periodic_last": new},
            where=topic.c.periodic_last.is_(None) | (topic.c.periodic_last < new),
        )
    )
