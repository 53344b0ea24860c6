"""Engines for PostgreSQL and SQLite, and the one place driver errors become tasker errors."""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from tasker.exceptions import ConfigurationError, DatabaseError, SchemaMissing

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_IDLE_IN_TX_TIMEOUT_MS = 5_000
"""A paused process cannot hold a lock on `core` or `task` longer than this."""


def parse_url(url: str) -> URL:
    """Parse a database URL; `postgresql://` means psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigurationError(f"not a database URL: {redact(url)!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"tasker supports postgresql and sqlite, not {parsed.get_backend_name()!r}"
        )
    return parsed


def redact(url: str | URL) -> str:
    """The URL with its password hidden, for logs and error messages."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def conninfo(url: URL) -> str:
    """A libpq URL for psycopg from the app's SQLAlchemy URL (password kept: never log it)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str | URL, *, autocommit: bool = False, flush_wait: bool = True) -> Engine:
    """An engine tuned for tasker's short transactions on either database.

    `autocommit` (PostgreSQL) serves one-statement writes such as a single
    publish: the statement commits itself, saving the BEGIN and COMMIT
    round trips. `flush_wait=False` (PostgreSQL) commits without waiting
    for the WAL flush (`synchronous_commit = off`): only for writes whose
    loss in a database crash loses nothing (the master's claims, see
    `Database.held`).
    """
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    extra = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    options = pg_engine_options(flush_wait=flush_wait)
    options["pool_pre_ping"] = False  # a local check instead: see `_check_idle_socket`
    engine = sa.create_engine(parsed, **extra, **options)
    event.listen(engine, "checkout", _check_idle_socket)
    return engine


def _check_idle_socket(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection's liveness, checked without a round trip.

    An idle connection that never LISTENs receives nothing; its socket is
    readable only when the server ended it (a restart sends a FATAL notice,
    then closes), so a zero-timeout poll tells what `pool_pre_ping`'s
    `SELECT 1` told, for a fraction of a single publish's cost (a profile:
    the ping was a third of tasker's Python per publish). A readable or
    broken connection is dropped and the pool checks out a fresh one
    (SQLAlchemy's pessimistic disconnect handling).
    """
    if getattr(dbapi_conn, "closed", False) or getattr(dbapi_conn, "broken", False):
        raise sa.exc.DisconnectionError("connection closed")
    pgconn = getattr(dbapi_conn, "pgconn", None)
    if pgconn is None:
        return
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError) as exc:  # no socket any more
        raise sa.exc.DisconnectionError(str(exc)) from exc
    if readable:
        raise sa.exc.DisconnectionError("the server sent on an idle connection (it ended it)")


def pg_engine_options(*, flush_wait: bool = True) -> dict[str, Any]:
    """The pool and connection settings of every PostgreSQL engine tasker
    makes, sync or async: a small pool, pre-ping, recycled connections, a
    5 s connect timeout and `PG_IDLE_IN_TX_TIMEOUT_MS`."""
    options = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TX_TIMEOUT_MS}"
    if not flush_wait:
        options += " -c synchronous_commit=off"
    return {
        "pool_size": 4,
        "max_overflow": 16,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5, "options": options},
    }


def _sqlite_engine(url: URL) -> Engine:
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    tune_sqlite(engine, url)
    return engine


def tune_sqlite(engine: Engine, url: URL) -> None:
    """tasker's SQLite settings on every connection of `engine` (sync, or the
    `sync_engine` of an async one): WAL, busy timeout, BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, open transactions, and take the
        # write lock up front: tasker's transactions are short and a
        # deferred one that upgrades later can fail with SQLITE_BUSY.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if url.database and url.database != ":memory:":
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine_or_conn: Engine | sa.Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


@contextlib.contextmanager
def wrap_db_errors() -> Iterator[None]:
    """Translate driver errors into `DatabaseError`, keeping the cause:
    `SchemaMissing` (a DatabaseError) when a tasker table does not exist."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if _names_missing_table(detail):
            raise SchemaMissing(f"database error: {detail} {SCHEMA_HINT}") from exc
        raise DatabaseError(f"database error: {detail}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"database error: {exc}") from exc


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[sa.Connection]:
    """One short transaction; driver errors come out as `DatabaseError`."""
    with wrap_db_errors(), engine.begin() as conn:
        yield conn


class HeldConnection:
    """One connection kept by a hot loop (consumer writes, dispatch), so a
    transaction costs no pool checkout and no pre-ping round trip. After a
    failed transaction the connection is dropped and the next one reconnects."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: sa.Connection | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with wrap_db_errors():
            if self._conn is None:
                self._conn = self.engine.connect()
            try:
                with self._conn.begin():
                    yield self._conn
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class Database:
    """The database handle an app owns and hands to its services: the
    engine, an autocommit engine for one-statement writes on PostgreSQL,
    short transactions, and held connections for hot loops."""

    def __init__(self, url: str | URL) -> None:
        self.url = parse_url(url) if isinstance(url, str) else url
        self.engine = make_engine(self.url)
        self._autocommit: Engine | None = None
        self._no_flush_wait: Engine | None = None  # the dispatcher's claims (see `held`)
        self._lock = threading.Lock()
        self.adopted_cache: dict[Any, Any] = {}
        """Statements compiled for callers' DB-API connections (see
        `tasker.publishing.adopt`), keyed by shape and dialect: bounded by
        the store's fixed set of statements."""

    @property
    def is_postgres(self) -> bool:
        return is_postgres(self.engine)

    def transaction(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """One short transaction; driver errors come out as `DatabaseError`."""
        return transaction(self.engine)

    def autocommit_engine(self) -> Engine | None:
        """On PostgreSQL, an engine whose statements commit themselves (a
        single publish, the dispatcher's sweeps); None on SQLite."""
        if not self.is_postgres:
            return None
        with self._lock:
            if self._autocommit is None:
                self._autocommit = make_engine(self.url, autocommit=True)
            return self._autocommit

    def held(self, *, autocommit: bool = False, flush_wait: bool = True) -> HeldConnection:
        """A connection kept by one hot loop (see `HeldConnection`).

        `flush_wait=False` (PostgreSQL, with `autocommit`): its commits do
        not wait for the WAL flush, a round trip to the disk saved on every
        claim. Only for the dispatcher's claims: one lost in a database
        crash is claimed again (its message, if sent, is dropped by the
        token check), and any later synchronous commit, such as the
        consumer's start of that task, flushes it first (the WAL is one
        sequence). Its own engine, so no other write shares the setting."""
        if autocommit and not flush_wait and self.is_postgres:
            with self._lock:
                if self._no_flush_wait is None:
                    self._no_flush_wait = make_engine(self.url, autocommit=True, flush_wait=False)
            return HeldConnection(self._no_flush_wait)
        engine = self.autocommit_engine() if autocommit else None
        return HeldConnection(engine or self.engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        for extra in (self._autocommit, self._no_flush_wait):
            if extra is not None:
                extra.dispose()


def is_transient(exc: BaseException) -> bool:
    """Whether a failed statement may succeed when tried again as it is: the
    connection or server went away or was busy, as opposed to a statement
    the database refuses for its data (a value out of range, bad text).

    SQLAlchemy classifies DBAPI errors by PEP 249 class: OperationalError and
    InterfaceError (and any error that invalidated the connection) pass.
    """
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    if isinstance(cause, sa.exc.DBAPIError):
        return bool(cause.connection_invalidated) or isinstance(
            cause, (sa.exc.OperationalError, sa.exc.InterfaceError)
        )
    return isinstance(cause, (sa.exc.DisconnectionError, sa.exc.TimeoutError, ConnectionError))


SCHEMA_HINT = "(is the schema there? run: tasker db upgrade)"


def _names_missing_table(message: str) -> bool:
    return "no such table" in message or ('relation "' in message and "does not exist" in message)


def with_schema_hint(message: str) -> str:
    """An error message, plus what to run when it says tasker's tables are
    missing (once: a `SchemaMissing` message carries the hint already)."""
    if _names_missing_table(message) and SCHEMA_HINT not in message:
        return f"{message} {SCHEMA_HINT}"
    return message
