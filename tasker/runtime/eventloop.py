"""The instance's event loop for `async def exec`: one loop, in its own thread.

Started on the first async execution (an instance without an async topic
never has one). Nothing else of the instance runs on it: the heartbeat,
election, dispatch, the intake and the status writer keep their own
threads, so a coroutine that blocks the loop (`time.sleep(10)` where
`await asyncio.sleep(10)` was meant, a CPU-bound loop) stalls only the
coroutines on it.

Watchdog. The loop stamps `beat` every `BEAT_S`. The consumer's own
deadline check (outside the loop) records a task past its timeout as
`timeout` whether or not the loop answers, and then calls `unstick`: when
the loop has not beaten for `BLOCKED_S`, it is retired and the next
execution starts a new loop in a new thread. The retired loop keeps its
thread: when the blocking call returns, the coroutines on it (each already
cancelled or recorded) finish, the loop stops and closes itself. A loop
blocked for ever keeps one daemon thread, as an abandoned thread execution
does; it never holds a slot or the instance's stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tasker.context import Context

log = logging.getLogger(__name__)

BEAT_S = 0.1
"""How often the loop stamps that it is responsive (s)."""

BLOCKED_S = 1.0
"""A loop that has not stamped for this long while one of its executions is
past its timeout is blocked: it is replaced (s)."""


class LoopThread:
    """One asyncio loop running for ever in a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.beat = time.monotonic()
        self._retired = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Schedule `coro` on this loop from another thread; cancelling the
        returned future cancels the coroutine (at its next await)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def blocked(self) -> bool:
        """Whether the loop has not answered for `BLOCKED_S` (a coroutine blocks it)."""
        return time.monotonic() - self.beat > BLOCKED_S

    def retire(self) -> None:
        """Stop once every coroutine on it has ended (it may be blocked now:
        this takes effect whenever it runs again). Callable from any thread."""
        self._retired = True
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self._stop_when_idle)

    def stop(self, timeout_s: float) -> None:
        """Cancel every coroutine and end the thread (waits up to `timeout_s`)."""
        self._retired = True
        try:
            self.loop.call_soon_threadsafe(self._cancel_all)
        except RuntimeError:
            return
        self._thread.join(timeout_s)

    # --- on the loop's thread ------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._beat)
        while True:
            try:
                self.loop.run_forever()
            except BaseException:  # SystemExit in a task's own task: the loop goes on
                log.exception("the async loop stopped on an error; restarting it",
                              extra={"action": "async_loop_error"})  # fmt: skip
            if self._retired:
                break
        try:
            for t in _pending(self.loop):
                t.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        except BaseException:  # a coroutine that refuses to end: closing anyway
            log.warning("the async loop closed with coroutines still running",
                        extra={"action": "async_loop_closed"})  # fmt: skip
        finally:
            self.loop.close()

    def _beat(self) -> None:
        self.beat = time.monotonic()
        self.loop.call_later(BEAT_S, self._beat)

    def _stop_when_idle(self) -> None:
        if _pending(self.loop):
            self.loop.call_later(BEAT_S, self._stop_when_idle)
        else:
            self.loop.stop()

    def _cancel_all(self) -> None:
        for t in _pending(self.loop):
            t.cancel()
        self.loop.call_later(BEAT_S, self._stop_when_idle)


def _pending(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks(loop) if not t.done()]


class EventLoop:
    """The instance's loop for async executions: started on first use,
    replaced when blocked (`unstick`), stopped with the instance."""

    def __init__(self, name: str = "tasker-async") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._current: LoopThread | None = None
        self._retired: list[LoopThread] = []
        self.replaced = 0  # loops retired as blocked (tests and logs read it)
        self._stopped = False

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run `coro` on the current loop (starting one if needed); RuntimeError
        once stopped (the coroutine is closed unrun)."""
        with self._lock:
            if self._stopped:
                coro.close()
                raise RuntimeError("the instance's event loop is stopped")
            if self._current is None:
                self._current = LoopThread(self.name)
            current = self._current
        return current.submit(coro)

    def unstick(self) -> bool:
        """An execution on the loop is past its timeout: when the loop does not
        answer, retire it (new executions get a new loop). True when replaced."""
        with self._lock:
            current = self._current
            if current is None or not current.blocked():
                return False
            self._current = None
            self._retired.append(current)
            self.replaced += 1
        current.retire()
        log.warning("the async loop has been blocked for over %.1fs by a task; "
                    "new async executions run on a new loop", BLOCKED_S,
                    extra={"action": "async_loop_replaced"})  # fmt: skip
        return True

    def stop(self, timeout_s: float = 2.0) -> None:
        """Cancel every coroutine and end the loop threads (a blocked one is left)."""
        with self._lock:
            loops = [lp for lp in [self._current, *self._retired] if lp is not None]
            self._current, self._retired = None, []
            self._stopped = True
        deadline = time.monotonic() + timeout_s
        for lp in loops:
            lp.stop(max(0.0, deadline - time.monotonic()))


@dataclass
class LoopContext(Context):
    """The `Context` of an execution on the loop: an admin's cancel also
    cancels the coroutine (`asyncio.CancelledError` at its next await)."""

    _task: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    def bind(self) -> None:
        """On the loop, in the coroutine that awaits `exec`: the task to cancel.
        Check `cancelled` after this call: a cancel that came just before is seen."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()

    def mark_cancelled(self) -> None:
        super().mark_cancelled()
        task, loop = self._task, self._loop
        if task is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
