"""An instance inside a host process (`app.running()`, `app.lifespan`): it
runs tasks, leaves the host's signal handlers alone, and its graceful stop
drains while the host's event loop goes on, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tasker.web
from tasker import Context, MsgQ, Tasker, admin
from tests.asgi_thread import serving
from tests.waiting import wait_for


class Nap(MsgQ):
    topic = "embedded.nap"
    spec = 0.1
    seconds: float = 0.0

    def exec(self, ctx: Context, worker_id: int) -> object:
        time.sleep(self.seconds)
        return {"slept": self.seconds}


def _status(app: Tasker, task_id: int) -> str:
    return str(admin.get_task(app, task_id)["status"])


def test_with_running_runs_tasks_and_keeps_signal_handlers(app: Tasker) -> None:
    app.register(Nap)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with app.running() as instance:
        assert app.instance is instance
        assert {s: signal.getsignal(s) for s in before} == before
        task_id = app.publish(Nap())
        assert app.result(task_id, timeout=20).result == {"slept": 0.0}
        assert len(admin.instances(app)) == 1
    assert admin.instances(app) == []  # unregistered by the graceful stop
    assert {s: signal.getsignal(s) for s in before} == before


def test_async_running_drains_without_blocking_the_loop(app: Tasker) -> None:
    app.register(Nap)

    async def main() -> tuple[int, str]:
        ticks = 0
        stop = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async with app.running():
            task_id = await app.apublish(Nap(seconds=1.0))
            await asyncio.to_thread(
                wait_for, lambda: _status(app, task_id) == "running", 20, "the nap to start"
            )
            at_exit = ticks
        during_stop = ticks - at_exit
        stop.set()
        await ticker
        return during_stop, _status(app, task_id)

    during_stop, status = asyncio.run(main())
    assert status == "success"  # drained within the grace, not handed back
    assert during_stop >= 20  # the loop went on while the nap finished (about 1 s)


def test_lifespan_runs_an_instance_for_the_servers_lifetime(app: Tasker) -> None:
    app.register(Nap)

    def publish(_request: object) -> PlainTextResponse:
        return PlainTextResponse(str(app.publish(Nap())))

    routes = [Route("/publish", publish, methods=["POST"])]
    for lifespan in (app.lifespan, tasker.web.lifespan(app, master=True)):
        with serving(Starlette(routes=routes, lifespan=lifespan)) as base:
            assert len(admin.instances(app)) == 1
            task_id = int(httpx.post(f"{base}/publish").text)
            assert app.result(task_id, timeout=20).result == {"slept": 0.0}
        assert admin.instances(app) == []  # the server's shutdown stopped it
