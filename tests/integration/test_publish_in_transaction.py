"""`connection=`: publish, publish_many, chain and group in the caller's
transaction, on SQLite and PostgreSQL, for each kind of connection a caller
holds (SQLAlchemy Connection, ORM Session, the driver's own: psycopg 3 or
sqlite3). Commit: the tasks exist and run. Rollback, or the caller's
transaction failing after the publish: nothing at all. Open: invisible to
others and not run."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tasker import Context, MsgQ, Tasker, testing
from tasker.exceptions import ConfigurationError, DatabaseError, DuplicateTask

KINDS = ("sa", "session", "dbapi")
FORMS = ("publish", "publish_many", "chain", "group")
RUNS = {"publish": 1, "publish_many": 3, "chain": 3, "group": 3}
"""Executions each form ends in once committed (a group: 2 members and its callback)."""


class Step(MsgQ):
    topic = "tx.step"
    n: int

    def exec(self, ctx: Context, worker_id: int) -> object:
        return {"n": self.n + 1}


class Tally(MsgQ):
    topic = "tx.tally"
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def exec(self, ctx: Context, worker_id: int) -> object:
        return sum(1 for r in self.results if r["success"])


@pytest.fixture
def txapp(app: Tasker) -> Tasker:
    app.register(Step, Tally)
    return app


def is_pg(app: Tasker) -> bool:
    return app.db.is_postgres


def libpq(app: Tasker) -> str:
    return app.db.url.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(app: Tasker) -> str:
    assert app.db.url.database
    return app.db.url.database


class Caller:
    """One connection of the caller's kind, with its commit and rollback."""

    def __init__(self, app: Tasker, kind: str) -> None:
        self.kind = kind
        self.engine: sa.Engine | None = None
        self.conn: Any
        if kind in ("sa", "session"):
            self.engine = sa.create_engine(app.db.url)
            self.conn = self.engine.connect() if kind == "sa" else Session(self.engine)
        elif is_pg(app):
            self.conn = psycopg.connect(libpq(app))
        else:
            self.conn = sqlite3.connect(sqlite_path(app))

    def execute(self, sql: str) -> None:
        if self.kind == "dbapi":
            self.conn.execute(sql)
        else:
            self.conn.execute(sa.text(sql))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
        if self.engine is not None:
            self.engine.dispose()


@pytest.fixture
def caller(txapp: Tasker) -> Iterator[Callable[[str], Caller]]:
    made: list[Caller] = []

    def make(kind: str) -> Caller:
        made.append(Caller(txapp, kind))
        return made[-1]

    yield make
    for c in made:
        c.close()


def publish_form(app: Tasker, form: str, connection: Any) -> None:
    if form == "publish":
        app.publish(Step(n=1), connection=connection)
    elif form == "publish_many":
        app.publish_many([Step(n=i) for i in range(3)], connection=connection)
    elif form == "chain":
        app.chain([Step(n=1), Step, "tx.step"], connection=connection)
    else:
        app.group([Step(n=1), Step(n=2)], then=Tally(), connection=connection)


@contextlib.contextmanager
def reader(app: Tasker) -> Iterator[Callable[[str], Any]]:
    """Another connection, in autocommit: it sees only what is committed
    (and, on SQLite, reads beside a writer's open transaction under WAL)."""
    if is_pg(app):
        with psycopg.connect(libpq(app), autocommit=True) as conn:
            yield lambda sql: conn.execute(sql).fetchone()[0]  # type: ignore[index]
    else:
        conn = sqlite3.connect(sqlite_path(app), isolation_level=None)
        try:
            yield lambda sql: conn.execute(sql).fetchone()[0]
        finally:
            conn.close()


def rows(app: Tasker) -> tuple[int, int]:
    """(task rows, task_group rows) as another connection sees them."""
    with reader(app) as one:
        return one("SELECT count(*) FROM task"), one("SELECT count(*) FROM task_group")


def statuses(app: Tasker) -> list[str]:
    with app.transaction() as conn:
        return list(conn.execute(sa.text("SELECT status FROM task ORDER BY id")).scalars())


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_commit_makes_the_tasks_exist_and_run(
    txapp: Tasker, caller: Callable[[str], Caller], kind: str, form: str
) -> None:
    c = caller(kind)
    publish_form(txapp, form, c.conn)
    assert rows(txapp) == (0, 0)  # the open transaction's rows are invisible to others
    c.commit()
    assert rows(txapp)[0] >= 1
    assert testing.run_until_idle(txapp) == {"success": RUNS[form]}
    assert statuses(txapp) == ["success"] * RUNS[form]
    c.execute("SELECT 1")  # still the caller's, open and usable
    c.rollback()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_rollback_leaves_no_row(
    txapp: Tasker, caller: Callable[[str], Caller], kind: str, form: str
) -> None:
    c = caller(kind)
    publish_form(txapp, form, c.conn)
    c.rollback()
    assert rows(txapp) == (0, 0)
    assert testing.run_until_idle(txapp) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_caller_transaction_leaves_nothing(
    txapp: Tasker, caller: Callable[[str], Caller], kind: str
) -> None:
    """The order and its email: the caller's own insert fails after the
    publish (a duplicate primary key), the caller rolls back, no task."""
    with txapp.transaction() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id integer PRIMARY KEY)"))
    c = caller(kind)
    c.execute("INSERT INTO orders (id) VALUES (1)")
    txapp.group([Step(n=1)], then=Tally(), connection=c.conn)
    txapp.publish(Step(n=1), connection=c.conn)
    with pytest.raises((sa.exc.IntegrityError, psycopg.IntegrityError, sqlite3.IntegrityError)):
        c.execute("INSERT INTO orders (id) VALUES (1)")
    c.rollback()
    assert rows(txapp) == (0, 0)
    with reader(txapp) as one:
        assert one("SELECT count(*) FROM orders") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_unique_keys_inside_the_transaction(
    txapp: Tasker, caller: Callable[[str], Caller], kind: str
) -> None:
    c = caller(kind)
    first = txapp.publish(Step(n=1), unique_key="order:1", connection=c.conn)
    assert txapp.publish(Step(n=2), unique_key="order:1", connection=c.conn) == first
    # A failed publish writes none of its rows and leaves the transaction usable:
    with pytest.raises(DuplicateTask):
        txapp.publish_many(
            [Step(n=3), Step(n=4)], unique_keys=[None, "order:1"], on_conflict="raise",
            connection=c.conn,
        )  # fmt: skip
    c.execute("SELECT 1")
    c.commit()
    assert rows(txapp) == (1, 0)
    assert txapp.publish(Step(n=5), unique_key="order:1") == first  # committed: it holds the key
    assert testing.run_until_idle(txapp) == {"success": 1}


def test_a_rolled_back_key_is_free_again(txapp: Tasker, caller: Callable[[str], Caller]) -> None:
    c = caller("sa")
    txapp.publish(Step(n=1), unique_key="k", connection=c.conn)
    c.rollback()
    txapp.publish(Step(n=1), unique_key="k", on_conflict="raise")  # no DuplicateTask
    assert rows(txapp) == (1, 0)


@pytest.mark.parametrize("kind", ["sa", "dbapi"])
def test_copy_and_notify_wait_for_the_commit(pg_url: str, local_broker: str, kind: str) -> None:
    app = Tasker(pg_url, broker=local_broker)
    c = Caller(app, kind)
    try:
        with psycopg.connect(libpq(app), autocommit=True) as listener:
            listener.execute("LISTEN tasker_publish")
            ids = app.publish_many([Step(n=i) for i in range(60)], connection=c.conn)  # COPY
            assert list(listener.notifies(timeout=0.3)) == []
            assert rows(app) == (0, 0)
            c.commit()
            got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
            assert got == ["tx.step"]
        assert rows(app) == (60, 0) and ids == sorted(ids)
        app.publish_many([Step(n=i) for i in range(60)], connection=c.conn)
        c.rollback()
        assert rows(app) == (60, 0)
    finally:
        c.close()
        app.close()


def test_a_sqlite3_connection_keeps_its_settings(sqlite_url: str, local_broker: str) -> None:
    app = Tasker(sqlite_url, broker=local_broker)
    conn = sqlite3.connect(sqlite_path(app))
    conn.row_factory = sqlite3.Row
    try:
        ids = app.publish_many([Step(n=1), Step(n=2)], connection=conn)
        assert (conn.isolation_level, conn.row_factory, conn.in_transaction) == (
            "", sqlite3.Row, True
        )
        conn.commit()
        assert conn.execute("SELECT count(*) AS n FROM task").fetchone()["n"] == 2
        assert len(ids) == 2
    finally:
        conn.close()
        app.close()


def test_the_caller_connection_is_never_committed_or_closed(
    txapp: Tasker, caller: Callable[[str], Caller]
) -> None:
    """A DB-API connection behind tasker's wrapper engine: SQLAlchemy's
    rollback, reset and close on the way out reach none of it."""
    c = caller("dbapi")
    c.execute("CREATE TABLE mine (id integer)")
    c.execute("INSERT INTO mine (id) VALUES (7)")
    for _ in range(3):
        txapp.publish(Step(n=1), connection=c.conn)
    c.execute("INSERT INTO mine (id) VALUES (8)")
    assert rows(txapp) == (0, 0)
    c.commit()
    assert rows(txapp) == (3, 0)
    with reader(txapp) as one:
        assert one("SELECT count(*) FROM mine") == 2


def test_an_aborted_transaction_gets_a_database_error(pg_url: str, local_broker: str) -> None:
    app = Tasker(pg_url, broker=local_broker)
    try:
        with psycopg.connect(libpq(app)) as conn:
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / 0")
            with pytest.raises(DatabaseError, match="aborted"):
                app.publish(Step(n=1), connection=conn)
            conn.rollback()
            app.publish(Step(n=1), connection=conn)  # usable again once the caller rolled back
        assert rows(app) == (1, 0)
    finally:
        app.close()


def test_a_dict_row_factory_is_no_obstacle(pg_url: str, local_broker: str) -> None:
    from psycopg.rows import dict_row

    app = Tasker(pg_url, broker=local_broker)
    try:
        with psycopg.connect(libpq(app), row_factory=dict_row) as conn:
            ids = app.publish_many([Step(n=1), Step(n=2)], connection=conn)
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # untouched
        assert len(ids) == 2 and rows(app) == (2, 0)
    finally:
        app.close()


# --- refusals -------------------------------------------------------------------


def test_another_dialect_is_refused(txapp: Tasker, tmp_path: Any) -> None:
    if is_pg(txapp):
        other: Any = sqlite3.connect(tmp_path / "other.db")
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
        expect = "sqlite"
    else:
        other = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
        expect = "postgresql"
    try:
        with engine.connect() as sa_conn, Session(engine) as session:
            for conn in (other, sa_conn, session):
                with pytest.raises(ConfigurationError, match=f"is a {expect}"):
                    txapp.publish(Step(n=1), connection=conn)
    finally:
        other.close()
        engine.dispose()
    assert rows(txapp) == (0, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_connection_is_refused(
    txapp: Tasker, caller: Callable[[str], Caller], kind: str
) -> None:
    c = caller(kind)
    if kind == "session":
        c.conn.connection().close()  # the Session's transaction lost its connection
    else:
        c.conn.close()
    with pytest.raises((ConfigurationError, DatabaseError), match="closed"):
        txapp.chain([Step(n=1), Step], connection=c.conn)
    assert rows(txapp) == (0, 0)


@pytest.mark.parametrize("what", [object(), "postgresql://x", 42])
def test_something_else_is_refused(txapp: Tasker, what: object) -> None:
    with pytest.raises(ConfigurationError, match="connection= takes a SQLAlchemy Connection"):
        txapp.publish(Step(n=1), connection=what)
    assert rows(txapp) == (0, 0)


def test_an_autocommit_connection_is_refused(txapp: Tasker) -> None:
    if is_pg(txapp):
        raw: Any = psycopg.connect(libpq(txapp), autocommit=True)
    else:
        raw = sqlite3.connect(sqlite_path(txapp), isolation_level=None)
    engine = sa.create_engine(txapp.db.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as sa_conn:
            for conn in (raw, sa_conn):
                with pytest.raises(ConfigurationError, match=r"autocommit|AUTOCOMMIT"):
                    txapp.publish(Step(n=1), connection=conn)
        # Inside a transaction it opened itself, such a connection is fine.
        raw.execute("BEGIN")
        txapp.publish(Step(n=1), connection=raw)
        assert rows(txapp) == (0, 0)
        raw.execute("COMMIT")
        assert rows(txapp) == (1, 0)
    finally:
        raw.close()
        engine.dispose()


# --- a running instance ------------------------------------------------------------


def test_a_running_instance_starts_nothing_before_the_commit(
    db_url: str, local_broker: str, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import core_set_timings
    from tests.integration.test_runtime_inprocess import FAST_HEARTBEAT_MS, FAST_LEASE_MS
    from tests.waiting import stays, wait_for

    pg = db_url.startswith("postgresql")
    broker = request.getfixturevalue("amqp_url") if pg else local_broker
    # A topic of this test's own: other runs share the RabbitMQ server.
    topic = f"tx.run.{uuid.uuid4().hex[:8]}"
    cls = type("Run", (Step,), {"topic": topic})
    app = Tasker(db_url, broker=broker)
    app.register(cls)
    with app.transaction() as conn:
        core_set_timings(
            conn, master_out_of_date_ms=FAST_LEASE_MS, instance_heartbeat_ms=FAST_HEARTBEAT_MS
        )
    instance = app.start()
    engine = sa.create_engine(app.db.url)
    try:
        wait_for(lambda: instance.is_master, timeout=15, what="the instance to be master")
        with engine.connect() as conn:
            tid = app.publish(cls(n=1), connection=conn)
            # On SQLite the instance waits for the write lock meanwhile; on
            # PostgreSQL it sweeps and finds nothing.
            stays(lambda: rows(app) == (0, 0), 1.0, "the uncommitted task stayed unseen")
            conn.commit()

        def done() -> bool:
            with app.transaction() as c:
                got = c.execute(sa.text(f"SELECT status FROM task WHERE id = {tid}")).scalar()
            return bool(got == "success")

        wait_for(done, timeout=20, what="the committed task to run")
    finally:
        engine.dispose()
        app.close()
