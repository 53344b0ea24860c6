"""SQL building blocks: the only places PostgreSQL and SQLite differ, the
NOTIFY channels, and the database clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from tasker.schema import UTCDateTime, task
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


def to_ms(seconds: float) -> int:
    """A duration in seconds as the whole milliseconds the columns and
    statements use: store functions take seconds and convert here."""
    return round(seconds * 1000)


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


def _in(conn: sa.Connection, col: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`col = ANY(:name)` on PostgreSQL (one plan whatever the size), IN on SQLite."""
    return _in_for(_is_pg(conn), col, name)


def _in_for(pg: bool, col: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    if pg:
        return col == sa.any_(sa.bindparam(name, type_=ARRAY(sa.BigInteger())))
    return col.in_(sa.bindparam(name, expanding=True))


def _pairs_for(pg: bool, id_col: Any, token_col: Any) -> ColumnElement[bool]:
    """Rows whose (id, token) is exactly one of the pairs bound as `ids` and
    `tokens` (parallel lists, see `_pair_params`): `id IN .. AND token IN ..`
    would also match the id of one pair with the token of another. The id
    test is kept first so the rows are still found by primary key."""
    if pg:
        zipped = sa.select(
            sa.func.unnest(sa.bindparam("ids", type_=ARRAY(sa.BigInteger()))),
            sa.func.unnest(sa.bindparam("tokens", type_=ARRAY(sa.BigInteger()))),
        )
        return sa.and_(_in_for(pg, id_col, "ids"), sa.tuple_(id_col, token_col).in_(zipped))
    pairs = sa.tuple_(id_col, token_col).in_(sa.bindparam("pairs", expanding=True))
    return sa.and_(_in_for(pg, id_col, "ids"), pairs)


def _pair_params(pairs: Iterable[tuple[int, int]]) -> dict[str, Any]:
    """The bound values of `_pairs_for`, for either dialect."""
    pairs = [(int(i), int(t)) for i, t in pairs]
    return {"ids": [p[0] for p in pairs], "tokens": [p[1] for p in pairs], "pairs": pairs}


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
