"""Adopting the caller's connection: tasker's statements in the caller's
transaction, never committing, rolling back or closing it.

The peers' shape: River's `InsertTx`, procrastinate's and oban-py's
connection argument, Celery's `delay_on_commit` (which only delays the
send; here the row itself is in the transaction, so a rollback leaves
nothing and a commit cannot lose the task).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from tasker.db import Database, wrap_db_errors
from tasker.exceptions import ConfigurationError


@contextlib.contextmanager
def adopt(conn_like: object, database: Database) -> Iterator[sa.Connection]:
    """Run tasker's statements in the caller's open transaction.

    `conn_like`: a SQLAlchemy `Connection` or ORM `Session` (its
    transaction's connection), or a DB-API connection of `database`'s dialect
    and driver (psycopg 3 `psycopg.Connection`, `sqlite3.Connection`). Yields
    a `sa.Connection` in that transaction, inside a SAVEPOINT: a failed
    publish writes none of its rows and leaves the caller's transaction
    usable. tasker never commits, rolls back (beyond its savepoint) or
    closes the caller's transaction; it may begin it (as SQLAlchemy's
    autobegin would) so the savepoint cannot become the outermost
    transaction. Driver errors come out as `DatabaseError`. Raises
    `ConfigurationError` for a closed connection, one of another dialect or
    driver, one that commits each statement itself (autocommit outside a
    transaction: nothing could wait for the caller's commit), or an object
    that is none of these.
    """
    conn = conn_like if isinstance(conn_like, sa.Connection) else None
    if conn is None and _is_session(conn_like):
        try:  # the Connection of the Session's transaction, begun if need be
            conn = conn_like.connection()  # type: ignore[attr-defined]
        except sa.exc.InvalidRequestError as exc:  # no bind, or a closed transaction
            raise ConfigurationError(f"connection= (a Session) is not usable: {exc}") from exc
    with wrap_db_errors():
        if conn is not None:
            _check_sa(conn, database.engine)
            yield from _in_savepoint(conn)
            return
        kind = _dbapi_kind(conn_like)
        if kind is None:
            raise ConfigurationError(
                "connection= takes a SQLAlchemy Connection or Session, a psycopg 3 or sqlite3 "
                f"connection; not {type(conn_like).__module__}.{type(conn_like).__qualname__}"
            )
        engine = database.engine
        _check_dbapi(conn_like, kind, engine)
        if "default_isolation_level" not in vars(engine.dialect):
            # The borrowed dialect learns the server's version and settings
            # on its engine's first connect: make sure that happened.
            with engine.connect():
                pass
        # SQLAlchemy cannot adopt a foreign DB-API connection into an
        # Engine, and compiling the statements to run on a bare cursor would
        # redo its parameter, RETURNING and type handling. So a one-off
        # Engine over a StaticPool whose only connection is the caller's,
        # behind `_Borrowed`, which swallows commit, rollback and close:
        # whatever SQLAlchemy does on the way out (rolling back the
        # transaction it thinks it began, resetting the connection on
        # return to the pool, closing a garbage-collected one) never
        # reaches the caller's connection. It shares `engine`'s initialised
        # dialect (no version queries on each adoption; its on-connect hooks,
        # which would change the caller's settings, are not run) and a
        # compiled-statement cache.
        borrowed = _Borrowed(conn_like, kind)
        pool = StaticPool(lambda: borrowed, reset_on_return=None, dialect=engine.dialect)
        options = {"compiled_cache": database.adopted_cache}
        wrapper = sa.Engine(pool, engine.dialect, engine.url, execution_options=options)
        with wrapper.connect() as conn:
            yield from _in_savepoint(conn)


def _in_savepoint(conn: sa.Connection) -> Iterator[sa.Connection]:
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite" and not _raw_of(raw).in_transaction:
        # A SAVEPOINT outside a transaction would be the transaction, and
        # its RELEASE a commit: open the caller's transaction first.
        conn.exec_driver_sql("BEGIN")
    with conn.begin_nested():
        yield conn


def _raw_of(raw: Any) -> Any:
    return raw._raw if isinstance(raw, _Borrowed) else raw


def _is_session(obj: object) -> bool:
    orm = sys.modules.get("sqlalchemy.orm")  # not imported: it cannot be a Session
    return orm is not None and isinstance(obj, orm.Session)


def _dbapi_kind(obj: object) -> str | None:
    """"psycopg" or "sqlite3" for a DB-API connection tasker can adopt, else None."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(obj, psycopg.Connection):
        return "psycopg"
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(obj, sqlite3.Connection):
        return "sqlite3"
    return None


_DRIVERS = {"psycopg": ("postgresql", "psycopg"), "sqlite3": ("sqlite", "pysqlite")}


def _check_sa(conn: sa.Connection, engine: Engine) -> None:
    if conn.closed or conn.invalidated:
        raise ConfigurationError("connection= is closed; pass an open connection in a transaction")
    if conn.dialect.name != engine.dialect.name:
        raise ConfigurationError(
            f"connection= is a {conn.dialect.name} connection; this app's database "
            f"is {engine.dialect.name}"
        )
    if not conn.in_transaction():
        conn.begin()  # as autobegin would; the caller commits it
    raw = _raw_of(conn.connection.driver_connection)
    kind = _dbapi_kind(raw)
    if kind is not None and _autocommits(raw, kind):
        raise ConfigurationError(
            "connection= commits each statement itself (isolation_level AUTOCOMMIT): "
            "tasks would be visible before your transaction ends; use a transactional connection"
        )


def _check_dbapi(raw: Any, kind: str, engine: Engine) -> None:
    name, driver = _DRIVERS[kind]
    if engine.dialect.name != name:
        raise ConfigurationError(
            f"connection= is a {name} ({kind}) connection; this app's database "
            f"is {engine.dialect.name}"
        )
    if engine.dialect.driver != driver:
        raise ConfigurationError(
            f"connection= is a {kind} connection; this app's engine uses the "
            f"{engine.dialect.driver} driver: pass a SQLAlchemy connection instead"
        )
    if _closed(raw, kind):
        raise ConfigurationError("connection= is closed; pass an open connection in a transaction")
    if _autocommits(raw, kind):
        raise ConfigurationError(
            f"connection= is a {kind} connection in autocommit mode outside a transaction: "
            "tasks would be visible at once; open a transaction on it first"
        )


def _closed(raw: Any, kind: str) -> bool:
    if kind == "psycopg":
        return bool(raw.closed)
    try:
        raw.in_transaction  # noqa: B018  (sqlite3 has no `closed`; a closed one raises)
    except sys.modules["sqlite3"].ProgrammingError:
        return True
    return False


def _autocommits(raw: Any, kind: str) -> bool:
    """Whether a statement on `raw` now would commit on its own."""
    if kind == "psycopg":
        idle = raw.info.transaction_status == sys.modules["psycopg"].pq.TransactionStatus.IDLE
        return bool(raw.autocommit) and idle
    if getattr(raw, "autocommit", None) is True:  # Python 3.12's PEP 249 mode
        return True
    return raw.isolation_level is None and not raw.in_transaction


class _Borrowed:
    """The caller's DB-API connection as tasker's wrapper engine sees it:
    commit, rollback and close do nothing (the caller owns them), and cursors
    return plain tuples whatever row factory the caller set (SQLAlchemy
    reads rows by position). Anything else goes to the connection."""

    __slots__ = ("_kind", "_raw")

    def __init__(self, raw: Any, kind: str) -> None:
        self._raw = raw
        self._kind = kind

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cur = self._raw.cursor(*args, **kwargs)
        if self._kind == "psycopg":
            cur.row_factory = sys.modules["psycopg.rows"].tuple_row
        else:
            cur.row_factory = None
        return cur

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)
