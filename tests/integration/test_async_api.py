"""The asyncio API on both databases: `apublish`, `apublish_many`, `aresult`
(woken by NOTIFY on PostgreSQL), the app's async engine and its disposal."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker, outcome, results, store
from tasker.exceptions import DuplicateTask, PayloadError, TaskTimeout
from tasker.schema import task
from tasker.testing import run_until_idle
from tests.fixtures.pipelines import Add
from tests.integration.runner import Runner
from tests.waiting import wait_for


def _rows(app: Tasker, ids: list[int]) -> dict[int, Any]:
    with app.transaction() as conn:
        rows = conn.execute(sa.select(task).where(task.c.id.in_(ids))).all()
    return {r.id: r for r in rows}


def test_apublish_and_apublish_many_write_pending_rows(db_url: str) -> None:
    app = Tasker(db_url, broker="memory://")

    async def main() -> tuple[int, list[int], int]:
        one = await app.apublish(Add(n=1), priority=3)
        many = await app.apublish_many([Add(n=i) for i in range(10, 15)], timeout=7)
        again = await app.apublish(Add(n=2), unique_key="k")
        assert await app.apublish(Add(n=3), unique_key="k") == again  # the first one's id
        with pytest.raises(DuplicateTask):
            await app.apublish(Add(n=3), unique_key="k", on_conflict="raise")
        with pytest.raises(PayloadError):
            await app.apublish("not a message")  # type: ignore[arg-type]
        await app.aclose()
        return one, many, again

    try:
        one, many, again = asyncio.run(main())
        rows = _rows(app, [one, *many, again])
        assert len(rows) == 7 and {r.status for r in rows.values()} == {"pending"}
        assert rows[one].priority == 3 and json.loads(rows[one].input)["n"] == 1
        assert [json.loads(rows[i].input)["n"] for i in many] == [10, 11, 12, 13, 14]
        assert all(rows[i].timeout == 7000 for i in many)
    finally:
        app.close()


def test_aresult_waits_while_the_task_runs_elsewhere(db_url: str) -> None:
    app = Tasker(db_url, broker="memory://")
    app.register(Add)

    async def main() -> results.Result:
        tid = await app.apublish(Add(n=20))
        with pytest.raises(TaskTimeout):
            await app.aresult(tid, timeout=0.2)
        waiter = asyncio.ensure_future(app.aresult(tid, timeout=30))
        ran = await asyncio.to_thread(run_until_idle, app)
        assert ran == {"success": 1}
        return await waiter

    try:
        got = asyncio.run(main())
        assert (got.success, got.result) == (True, {"n": 21})
    finally:
        app.close()  # disposes the async engine made on main()'s loop


def test_the_app_works_from_one_loop_then_another(db_url: str) -> None:
    app = Tasker(db_url, broker="memory://")
    try:
        first = asyncio.run(app.apublish(Add(n=1)))
        second = asyncio.run(app.apublish(Add(n=2)))  # a new loop: a new engine
        assert second == first + 1
    finally:
        app.close()


@pytest.mark.pg
def test_aresult_is_woken_by_notify(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the NOTIFY the waiter would read the row again only after 60 s.
    monkeypatch.setattr(results, "SAFETY_READ_S", 60.0)
    app = Tasker(pg_url, broker="memory://")
    app.register(Add)
    tid = app.publish(Add(n=1))
    (row,) = Runner(app).start(Add.topic)
    finished_at: list[float] = []

    def listening() -> bool:
        with app.transaction() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%'")).scalar())  # fmt: skip

    def finisher() -> None:
        wait_for(listening, 10, "the async waiter to LISTEN")
        decision = outcome.succeeded({"n": 2})
        with app.transaction() as conn:
            store.task_finish_many(conn, [store.Finish(row.id, row.worker_id, decision)])
        finished_at.append(time.monotonic())

    async def main() -> tuple[results.Result, float]:
        t = threading.Thread(target=finisher)
        t.start()
        got = await app.aresult(tid, timeout=30)
        woke = time.monotonic()
        await asyncio.to_thread(t.join, 10)
        await app.aclose()
        return got, woke

    got, woke = asyncio.run(main())
    assert (got.success, got.result) == (True, {"n": 2})
    latency = woke - finished_at[0]
    assert latency < 0.5, f"aresult woke {latency:.2f}s after the finish (safety read is 60 s)"
