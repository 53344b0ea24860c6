"""An instance inside someone else's process: a web server's, a notebook's.

`Running` starts an instance in background threads without touching the
process's signal handlers (the host owns them: uvicorn, gunicorn, Django)
and stops it gracefully on exit, in the order of DESIGN 6 (stop taking,
resign, drain within the grace, hand back, close). The async form runs the
blocking start and stop in a thread of their own, so the host's event loop
goes on serving while tasker connects or drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from tasker.runtime.instance import Instance


class Running:
    """`with` / `async with`: an instance that runs for the block's duration.

    `make` builds the instance (the app's `_instance`); `timeout` overrides
    the shutdown grace on exit (seconds). Entering raises TaskerError when
    the database or broker cannot be used (nothing is left running then).
    """

    def __init__(self, make: Callable[[], Instance], timeout: float | None = None) -> None:
        self._make = make
        self._timeout = timeout
        self.instance: Instance | None = None

    def _start(self) -> Instance:
        instance = self._make()
        instance.start()
        self.instance = instance
        return instance

    def _stop(self) -> None:
        if self.instance is not None:
            self.instance.stop(self._timeout)

    def __enter__(self) -> Instance:
        return self._start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._stop()

    async def __aenter__(self) -> Instance:
        return await asyncio.to_thread(self._start)

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self._stop)


class Lifespan(Running):
    """`Running` as an ASGI lifespan: the block gets nothing (Starlette takes
    what a lifespan yields for its request state, which an Instance is not)."""

    async def __aenter__(self) -> None:  # type: ignore[override]
        await super().__aenter__()
