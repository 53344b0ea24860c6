"""The instance's event loop (`tasker.runtime.eventloop`): nothing a coroutine
does stops it, and a blocked loop is replaced so new work runs at once."""

from __future__ import annotations

import asyncio
import threading

from tasker import outcome
from tasker.context import Context
from tasker.msgq import MsgQ
from tasker.runtime.eventloop import BLOCKED_S, EventLoop
from tasker.runtime.execute import Started, run_exec
from tests.waiting import wait_for


async def _value(x: int) -> int:
    await asyncio.sleep(0)
    return x


def _submit(loop: EventLoop, x: int, out: list[int]) -> None:
    async def run() -> None:
        out.append(await _value(x))

    loop.submit(run())


def test_a_system_exit_in_a_tasks_own_task_does_not_stop_the_loop() -> None:
    loop = EventLoop()
    out: list[int] = []
    raised = threading.Event()

    async def rogue() -> None:
        async def boom() -> None:
            raised.set()
            raise SystemExit(3)

        asyncio.get_running_loop().create_task(boom())

    try:
        loop.submit(rogue())
        wait_for(raised.is_set, 5, "the SystemExit")  # what runs next needs a restarted loop
        _submit(loop, 7, out)
        wait_for(lambda: out == [7], 5, "a coroutine after the SystemExit")
    finally:
        loop.stop()


def test_a_blocked_loop_is_replaced_and_new_work_runs_at_once() -> None:
    loop = EventLoop()
    out: list[int] = []
    unblock = threading.Event()

    async def blocker() -> None:
        unblock.wait(30)  # blocks the loop's thread, as time.sleep would

    try:
        _submit(loop, 1, out)
        wait_for(lambda: out == [1], 5, "the first coroutine")
        loop.submit(blocker())
        assert not loop.unstick()  # not yet silent for BLOCKED_S
        wait_for(loop.unstick, BLOCKED_S + 5, "the loop to count as blocked")
        assert loop.replaced == 1
        _submit(loop, 2, out)
        wait_for(lambda: out == [1, 2], 5, "a coroutine on the new loop")
        assert not loop.unstick()  # the new loop answers
    finally:
        unblock.set()  # the old loop then ends its coroutines and closes
        loop.stop()


class Raises(MsgQ):
    topic = "el.raises"

    async def exec(self, ctx: Context, worker_id: int) -> object:
        await asyncio.sleep(0)
        raise ValueError("bad answer from the service")


class Unstorable(MsgQ):
    topic = "el.unstorable"

    async def exec(self, ctx: Context, worker_id: int) -> object:
        return object()


def _started(topic: str) -> Started:
    return Started(id=1, topic=topic, input="{}", timeout_ms=5000, retry=3, attempts=1,
                   worker_id=7)  # fmt: skip


def test_what_a_coroutine_raises_is_its_outcome_with_its_traceback() -> None:
    ended = run_exec(Raises, _started(Raises.topic), Context(1, Raises.topic, 1, 7))
    assert ended.kind is outcome.Kind.RAISED
    assert ended.reason == "ValueError: bad answer from the service"
    assert "raise ValueError" in ended.detail


def test_a_coroutines_value_is_checked_like_a_threads() -> None:
    ended = run_exec(Unstorable, _started(Unstorable.topic), Context(1, Unstorable.topic, 1, 7))
    decision = outcome.decide(ended, attempt=1, runs_left=3)
    assert "JSON" in decision.err or "object" in decision.err, decision.err
