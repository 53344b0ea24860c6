"""Expiry during a pause, with the real runtime in this process (`app.start()`)
on SQLite and PostgreSQL (DESIGN 1 `expires`, 7 pause): a task that expires
while its topic is paused never runs, ends `failed` "expired", and wakes
its waiter; a task with time left runs after the resume."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tasker import Tasker, admin, outcome
from tasker.schema import task
from tasker.store import dialect
from tests.fixtures.policy import Expiring
from tests.waiting import wait_for


@pytest.fixture
def running(db_url: str, local_broker: str) -> Iterator[Tasker]:
    app = Tasker(db_url, broker=local_broker)
    app.register(Expiring)
    yield app
    app.close()


def test_a_task_that_expires_while_paused_never_runs(running: Tasker) -> None:
    app = running
    admin.pause(app, Expiring.topic)
    app.start()
    late = app.publish(Expiring(code="late"), expires=1)
    kept = app.publish(Expiring(code="kept"), expires=3600)
    with app.transaction() as conn:
        expires_at = conn.execute(sa.select(task.c.expires_at).where(task.c.id == late)).scalar()
    wait_for(lambda: _db_now(app) > expires_at, timeout=10, what="the expiry time to pass")
    # The master's expiry pass ends it while the topic is still paused.
    wait_for(lambda: _status(app, late) == "failed", timeout=10, what="the expiry pass")
    admin.resume(app, Expiring.topic)
    assert app.result(kept, timeout=15).result == "kept"
    res = app.result(late, timeout=1)
    assert res.success is False and outcome.EXPIRED_REASON in (res.error or "")
    with app.transaction() as conn:
        r = conn.execute(sa.select(task).where(task.c.id == late)).one()
    assert (r.status, r.attempts, r.started, r.worker_fqdn) == ("failed", 0, None, "")
    app.stop()


def _status(app: Tasker, tid: int) -> str:
    with app.transaction() as conn:
        return str(conn.execute(sa.select(task.c.status).where(task.c.id == tid)).scalar())


def _db_now(app: Tasker):  # type: ignore[no-untyped-def]
    with app.transaction() as conn:
        return dialect.now(conn)
