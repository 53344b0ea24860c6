"""`app.result` and `app.aresult` waiters of one process share one LISTEN
connection on PostgreSQL: a hundred waiters cost one listener (and the reads
go through the app's bounded pool), they are all woken when their tasks
finish, and a listener whose connection is killed comes back while its
waiters miss nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tasker import Tasker
from tasker.results import Result
from tests.conftest import PG_ADMIN
from tests.fixtures.ops_jobs import Fine
from tests.waiting import wait_for

pytestmark = [pytest.mark.pg]

WAITERS = 100
POOL_MOST = 4 + 16  # the app's engine (or async engine): pool_size + max_overflow


@pytest.fixture
def app(pg_url: str, local_broker: str) -> Iterator[Tasker]:
    a = Tasker(pg_url, broker=local_broker)
    a.register(Fine)
    yield a
    a.close()


def backends(app: Tasker) -> dict[str, int]:
    """This test database's backends: all, and those LISTENing."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (app.db.url.database,),
        ).fetchall()
    listening = sum(1 for (q,) in rows if (q or "").upper().startswith("LISTEN"))
    return {"all": len(rows), "listening": listening}


def test_a_hundred_thread_waiters_cost_one_listener(app: Tasker) -> None:
    ids = app.publish_many([Fine() for _ in range(WAITERS)])  # no instance yet: they wait
    with concurrent.futures.ThreadPoolExecutor(WAITERS) as pool:
        futures = [pool.submit(app.result, tid, 60) for tid in ids]
        wait_for(lambda: app._result_waker.waiting() == WAITERS, 30, "every waiter registered")
        wait_for(lambda: app._result_waker.listening, 10, "the listener connected")
        seen = backends(app)
        assert seen["listening"] == 1, seen
        assert seen["all"] <= POOL_MOST + 1, seen
        app.start()  # now they run, and every waiter is woken with its result
        results = [f.result(60) for f in futures]
    assert [r.success for r in results] == [True] * WAITERS
    assert sorted(r.task_id for r in results) == sorted(ids)
    assert app._result_waker.waiting() == 0


def test_a_hundred_async_waiters_cost_one_listener(app: Tasker) -> None:
    ids = app.publish_many([Fine() for _ in range(WAITERS)])
    out: list[Result] = []

    async def main() -> None:
        out.extend(await asyncio.gather(*(app.aresult(t, timeout=60) for t in ids)))
        await app.aclose()

    runner = threading.Thread(target=asyncio.run, args=(main(),))
    runner.start()
    wait_for(lambda: app._result_waker.waiting() == WAITERS, 30, "every waiter registered")
    wait_for(lambda: app._result_waker.listening, 10, "the listener connected")
    seen = backends(app)
    assert seen["listening"] == 1, seen
    assert seen["all"] <= POOL_MOST + 1, seen
    app.start()
    runner.join(60)
    assert not runner.is_alive()
    assert [r.success for r in out] == [True] * WAITERS


def test_a_killed_listener_comes_back_and_waiters_miss_nothing(app: Tasker) -> None:
    tid = app.publish(Fine())
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(app.result(tid, 60)))
    waiter.start()
    wait_for(lambda: app._result_waker.listening, 10, "the listener connected")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'tasker-result-waker'",
            (app.db.url.database,),
        ).fetchone()
    assert killed == (1,)
    app.start()  # finishes while the listener is down or coming back
    waiter.join(60)
    assert got and got[0].success and got[0].task_id == tid
    wait_for(lambda: backends(app)["listening"] == 1, 20, "a listener again")
