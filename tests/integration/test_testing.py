"""`tasker.testing` as a user's test suite would use it: schema, then every due task run here.

The outcomes are the production state machine's: runs charged, errlog
entries, back-off leaving a task in `retry`, delayed tasks left alone.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker
from tasker.schema import task
from tasker.testing import create_schema, run_until_idle
from tests.integration import test_cli_db
from tests.integration.test_cli_db import tables

empty_pg_url = test_cli_db.empty_pg_url  # the fixture


class Add(MsgQ):
    topic = "tt.add"
    a: int
    b: int

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.log(f"adding {self.a} and {self.b}")
        return {"sum": self.a + self.b}


class SecondTime(MsgQ):
    """Fails its first run and asks for an immediate retry."""

    topic = "tt.second"

    def exec(self, ctx: Context, worker_id: int) -> object:
        if ctx.attempt == 1:
            ctx.exec_after(0)
            raise RuntimeError("first run fails")
        return ctx.attempt


class Doomed(MsgQ):
    topic = "tt.doomed"
    retry = 2

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.exec_after(0)
        raise ValueError("never works")


class BackOff(MsgQ):
    """Fails with the default back-off: the retry is in the future, so not due."""

    topic = "tt.backoff"

    def exec(self, ctx: Context, worker_id: int) -> object:
        raise RuntimeError("try later")


class Fanout(MsgQ):
    """Publishes `n` Add tasks through the app it was given."""

    topic = "tt.fanout"
    n: int
    url: str

    def exec(self, ctx: Context, worker_id: int) -> object:
        app = Tasker(self.url, broker="memory://")
        try:
            return app.publish_many([Add(a=i, b=i) for i in range(self.n)])
        finally:
            app.close()


class Sleepy(MsgQ):
    topic = "tt.sleepy"
    timeout = 0.2
    retry = 1

    def exec(self, ctx: Context, worker_id: int) -> object:
        time.sleep(2)
        return None


class InChild(MsgQ):
    topic = "tt.child"
    isolation = "process"

    def exec(self, ctx: Context, worker_id: int) -> object:
        import os

        return os.getpid()


class Slow(MsgQ):
    topic = "tt.slow"

    def exec(self, ctx: Context, worker_id: int) -> object:
        time.sleep(0.3)
        return None


def rows(app: Tasker, topic: str) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.topic == topic).order_by(task.c.id)).all()


@pytest.fixture
def tapp(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    a = Tasker(db_url, broker=f"filesystem://{tmp_path / 'never-used'}")
    a.register(Add, SecondTime, Doomed, BackOff, Fanout, Sleepy, InChild, Slow)
    yield a
    a.close()


def test_create_schema_on_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    app = Tasker(url, broker="memory://")
    try:
        create_schema(app)
        create_schema(app)  # idempotent
        assert {"task", "core", "instance", "alembic_version"} <= tables(url)
        app.register(Add)
        app.publish(Add(a=1, b=2))
        assert run_until_idle(app) == {"success": 1}
    finally:
        app.close()


def test_create_schema_on_postgresql(empty_pg_url: str) -> None:
    app = Tasker(empty_pg_url, broker="memory://")
    try:
        create_schema(app)
        assert {"task", "core", "instance"} <= tables(empty_pg_url)
    finally:
        app.close()


def test_outcomes_follow_the_state_machine(tapp: Tasker, db_url: str) -> None:
    tapp.publish_many([Add(a=1, b=2), Add(a=3, b=4)])
    tapp.publish(SecondTime())
    tapp.publish(Doomed())
    tapp.publish(BackOff())
    tapp.publish(Fanout(n=3, url=db_url))
    later = tapp.publish(Add(a=9, b=9), exec_after=dt.timedelta(hours=1))
    other = Tasker(db_url, broker="memory://")  # knows no classes: input goes unchecked
    other.publish_raw("tt.add", {"a": "not a number", "b": 1})
    other.publish_raw("tt.unregistered", {})
    other.close()

    counts = run_until_idle(tapp)
    assert counts == {"success": 7, "failed": 2, "retry": 1}

    adds = rows(tapp, "tt.add")
    done = [r for r in adds if r.status == "success"]
    assert sorted(r.result for r in done) == sorted(
        ['{"sum": 3}', '{"sum": 7}', '{"sum": 0}', '{"sum": 2}', '{"sum": 4}']
    )
    assert all("adding" in r.log and r.attempts == 1 and r.instance_id == 0 for r in done)
    bad = next(r for r in adds if r.status == "failed")
    assert (bad.attempts, bad.retry) == (1, 3)  # bad input burns no run
    assert "bad input" in bad.errlog
    delayed = next(r for r in adds if r.id == later)
    assert (delayed.status, delayed.attempts, delayed.dispatched) == ("pending", 0, None)

    (second,) = rows(tapp, "tt.second")
    assert (second.status, second.attempts, second.retry, second.result) == ("success", 2, 2, "2")
    assert second.errlog.count("[attempt 1 on ") == 1 and "first run fails" in second.errlog
    (doomed,) = rows(tapp, "tt.doomed")
    assert (doomed.status, doomed.attempts, doomed.retry) == ("failed", 2, 0)
    assert doomed.errlog.count("] ValueError: never works") == 2
    (backoff,) = rows(tapp, "tt.backoff")
    assert (backoff.status, backoff.attempts, backoff.retry) == ("retry", 1, 2)
    assert backoff.exec_after > backoff.finished
    (unknown,) = rows(tapp, "tt.unregistered")
    assert (unknown.status, unknown.attempts) == ("pending", 0)

    assert run_until_idle(tapp) == {}  # nothing due: returns at once


def test_timeouts_and_process_isolation(tapp: Tasker) -> None:
    import os

    tapp.publish(Sleepy())
    tapp.publish(InChild())
    started = time.monotonic()
    assert run_until_idle(tapp, timeout=30) == {"failed": 1, "success": 1}
    assert time.monotonic() - started < 15  # the sleeper's thread was abandoned at 0.2s
    (sleepy,) = rows(tapp, "tt.sleepy")
    assert (sleepy.status, sleepy.retry) == ("failed", 0)
    assert "timeout: exec ran longer than 0.2s" in sleepy.errlog
    (child,) = rows(tapp, "tt.child")
    assert child.status == "success" and int(child.result) != os.getpid()


def test_stops_at_its_timeout_and_hands_back_the_rest(tapp: Tasker) -> None:
    ids = tapp.publish_many([Slow() for _ in range(10)])
    started = time.monotonic()
    counts = run_until_idle(tapp, timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert 1 <= counts["success"] < 10
    left = [r for r in rows(tapp, "tt.slow") if r.status == "pending"]
    assert len(left) == 10 - counts["success"]
    assert all(r.dispatched is None and r.token is None for r in left)  # free to run again
    assert run_until_idle(tapp) == {"success": len(left)}
    assert {r.status for r in rows(tapp, "tt.slow")} == {"success"}
    assert len(ids) == 10


def test_tasker_fqdn_names_the_host_in_every_field(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_FQDN", "box-1.example")
    app = Tasker(db_url, broker="memory://")
    app.register(SecondTime)
    try:
        app.publish(SecondTime())
        assert run_until_idle(app) == {"success": 1}
        (row,) = rows(app, "tt.second")
        assert row.worker_fqdn == "box-1.example\nbox-1.example\n"
        assert row.errlog.startswith("[attempt 1 on box-1.example at ")
    finally:
        app.close()
