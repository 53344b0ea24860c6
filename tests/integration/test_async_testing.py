"""`async def exec` outside an instance: `tasker.testing.run_until_idle` (the
coroutine on a loop of its own, under its timeout), and `run_exec` itself."""

from __future__ import annotations

import asyncio
import json
import os

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, msgq, outcome
from tasker.runtime.execute import Started, run_exec
from tasker.schema import task
from tasker.testing import run_until_idle
from tests.fixtures.async_jobs import InChild


class Double(MsgQ):
    topic = "ta.double"
    n: int

    async def exec(self, ctx: Context, worker_id: int) -> object:
        await asyncio.sleep(0.01)
        ctx.log(f"doubling {self.n}")
        return self.n * 2


class Late(MsgQ):
    topic = "ta.late"
    timeout = 0.3
    retry = 1

    async def exec(self, ctx: Context, worker_id: int) -> object:
        await asyncio.sleep(30)
        return None


class Plain(MsgQ):
    topic = "ta.plain"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return 1


def test_async_is_decided_when_the_class_is_defined() -> None:
    assert msgq.is_async(Double) and msgq.is_async(Late)
    assert not msgq.is_async(Plain)


def test_run_until_idle_awaits_async_tasks(db_url: str) -> None:
    app = Tasker(db_url, broker="memory://")
    app.register(Double, Late)
    try:
        ids = app.publish_many([Double(n=i) for i in range(3)])
        late = app.publish(Late())
        assert run_until_idle(app) == {"success": 3, "failed": 1}
        with app.transaction() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(task)).all()}
        assert [json.loads(rows[i].result) for i in ids] == [0, 2, 4]
        assert "doubling 2" in rows[ids[2]].log
        assert "timeout" in rows[late].errlog, rows[late].errlog
    finally:
        app.close()


def _started(topic: str, input_: str = "{}", timeout_ms: int = 5000) -> Started:
    return Started(id=1, topic=topic, input=input_, timeout_ms=timeout_ms, retry=3,
                   attempts=1, worker_id=7)  # fmt: skip


def test_run_exec_runs_a_coroutine_to_its_value() -> None:
    ctx = Context(1, Double.topic, 1, 7)
    ended = run_exec(Double, _started(Double.topic, '{"n": 21}'), ctx)
    assert (ended.kind, ended.value) == (outcome.Kind.RETURNED, 42)


def test_run_exec_times_a_coroutine_out() -> None:
    ctx = Context(1, Late.topic, 1, 7)
    ended = run_exec(Late, _started(Late.topic, timeout_ms=100), ctx)
    assert ended.kind is outcome.Kind.TIMED_OUT


def test_run_until_idle_runs_a_process_isolated_coroutine_in_its_child(sqlite_url: str) -> None:
    app = Tasker(sqlite_url, broker="memory://")
    app.register(InChild)
    try:
        tid = app.publish(InChild(seconds=0.05))
        assert run_until_idle(app, timeout=60) == {"success": 1}
        with app.transaction() as conn:
            row = conn.execute(sa.select(task).where(task.c.id == tid)).one()
        assert json.loads(row.result)["pid"] != os.getpid()
        assert "ran in the child" in row.log
    finally:
        app.close()
