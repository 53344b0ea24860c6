"""Waiting for a task's result: `Tasker.result` (DESIGN 7, goagent's results to the caller).

A task's result is settled when its row is `success` or `failed`; for a
chain step that succeeded with steps after it, when the chain's last step
written so far is `failed`, or `success` with nothing after it
(`store.task_get_settling`).

On PostgreSQL the wait is woken by the database: every finish statement
already NOTIFYs `free:<topic>` on the publish channel for the dispatcher
(and an admin cancel does too). Riding on that notification costs the
finish path nothing (no statement, no payload per task id); the price is
that a waiter also wakes for finishes of other tasks of its topic, at most
once per finishing transaction, and reads one row.

The waiters of one app share one LISTEN connection: a `Waker` (owned by
the app, closed by `app.close()`) listens in a background thread, opened
when the first waiter registers and closed after `WAKER_IDLE_S` without
any, and wakes the waiters of the topic named (a hundred waiters cost one
connection, not a hundred). The notification is only a latency aid: a
waiter registers, then reads the row, and reads it again at every wake-up,
at least every `SAFETY_READ_S`, and every `FALLBACK_POLL_S` while the
listener is not connected (starting, or reconnecting after a failure), so
no terminal state is ever missed. SQLite has no notifications: the row is
read every `poll_s`.

`await_result` is the same wait for asyncio (`Tasker.aresult`): the row is
read on the app's async engine (the store's statement through `run_sync`)
and the coroutine is woken through the same `Waker`
(`loop.call_soon_threadsafe`), so the caller's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.engine import URL

if TYPE_CHECKING:  # imported by the async API only: a sync app never loads it
    from sqlalchemy.ext.asyncio import AsyncEngine

from tasker import store
from tasker.db import Database, conninfo, wrap_db_errors
from tasker.exceptions import TaskTimeout
from tasker.states import Status

log = logging.getLogger(__name__)

SAFETY_READ_S = 1.0
"""On PostgreSQL, read the row at least this often even without a notification."""
FALLBACK_POLL_S = 0.25
"""How often a waiter reads its row while the shared listener is not connected."""
WAKER_IDLE_S = 10.0
"""The shared listener closes its connection after this long without waiters."""
WAKER_RETRY_S = (0.5, 5.0)
"""First and longest pause (s) before the listener connects again after a failure."""


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of a finished task, as `Tasker.result` returns it: for a
    chain, the last step's, or the failed step's (`task_id` says which)."""

    success: bool
    error: str | None
    result: Any
    status: str
    task_id: int | None = None


def settled(row: Any) -> bool:
    """Whether the settling row (see the module) ends the wait."""
    if row.status == Status.FAILED.value:
        return True
    return row.status == Status.SUCCESS.value and not row.chain_next


def to_result(row: Any) -> Result:
    ok = row.status == Status.SUCCESS.value
    return Result(
        success=ok,
        error=None if ok else (row.errlog or None),
        result=json.loads(row.result) if ok and row.result else None,
        status=row.status,
        task_id=row.id,
    )


def wait(
    database: Database, task_id: int, *, timeout_s: float, poll_s: float, waker: Waker | None = None
) -> Result:
    """Wait up to `timeout_s` seconds for `task_id`'s result, woken by
    `waker` on PostgreSQL (without one, the row is polled every `poll_s`).

    Raises `TaskTimeout` when it is not settled in time, `TaskNotFound` for
    an unknown id, `DatabaseError` when the database fails.
    """
    deadline = time.monotonic() + timeout_s
    waiter: _Waiter | None = None
    try:
        while True:
            if waiter is not None:
                waiter.event.clear()  # before the read: a wake-up during it is kept
            with database.transaction() as conn:
                row = store.task_get_settling(conn, task_id=task_id)
            if settled(row):
                return to_result(row)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskTimeout(_still(task_id, row, timeout_s))
            if waker is None or not database.is_postgres:
                time.sleep(min(poll_s, left))
            elif waiter is None:
                waiter = waker.register(row.topic, threading.Event())  # then read again
            else:
                waiter.topic = row.topic  # a chain's settling step moves on
                assert isinstance(waiter.event, threading.Event)
                waiter.event.wait(min(left, waker.read_every()))
    finally:
        if waiter is not None and waker is not None:
            waker.unregister(waiter)


def _still(task_id: int, row: Any, timeout_s: float) -> str:
    where = "" if row.id == task_id else f" (chain step {row.chain_step}, task {row.id})"
    return f"task {task_id} is still {row.status}{where} after {timeout_s}s"


async def await_result(
    engine: AsyncEngine, task_id: int, *, timeout_s: float, poll_s: float,
    waker: Waker | None = None,
) -> Result:  # fmt: skip
    """`wait`, awaited: the row read on `engine` (an async engine of the
    app's database), woken on PostgreSQL by `waker` through the running loop.

    Raises `TaskTimeout`, `TaskNotFound` and `DatabaseError` as `wait` does.
    """
    deadline = time.monotonic() + timeout_s
    postgres = engine.dialect.name == "postgresql"
    waiter: _Waiter | None = None
    try:
        while True:
            if waiter is not None:
                waiter.event.clear()
            with wrap_db_errors():
                async with engine.begin() as conn:
                    row = await conn.run_sync(store.task_get_settling, task_id=task_id)
            if settled(row):
                return to_result(row)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskTimeout(_still(task_id, row, timeout_s))
            if waker is None or not postgres:
                await asyncio.sleep(min(poll_s, left))
            elif waiter is None:
                waiter = waker.register(row.topic, _LoopWake(asyncio.get_running_loop()))
            else:
                waiter.topic = row.topic
                event = waiter.event
                assert isinstance(event, _LoopWake)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.aevent.wait(), min(left, waker.read_every()))
    finally:
        if waiter is not None and waker is not None:
            waker.unregister(waiter)


# --- the shared listener --------------------------------------------------------


class _LoopWake:
    """A waiter's wake-up for a coroutine: set from the listener's thread
    through its loop (`call_soon_threadsafe`), awaited on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.aevent = asyncio.Event()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self.aevent.set)

    def clear(self) -> None:
        self.aevent.clear()


@dataclasses.dataclass(eq=False)
class _Waiter:
    topic: str | None  # None: woken by every finish
    event: threading.Event | _LoopWake


class Waker:
    """One LISTEN connection (PostgreSQL at `url`) shared by every result
    waiter of an app; see the module. Thread-safe; `close` stops it (the
    next waiter starts it again)."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = False  # the LISTEN is in place: notifications arrive

    # --- waiters ----------------------------------------------------------------

    def register(self, topic: str | None, event: threading.Event | _LoopWake) -> _Waiter:
        """Wake `event` at each finish on `topic` until `unregister`; starts
        the listener if it is not running."""
        waiter = _Waiter(topic, event)
        with self._lock:
            self._waiters.add(waiter)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="tasker-result-waker", daemon=True
                )
                self._thread.start()
        return waiter

    def unregister(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def read_every(self) -> float:
        """How long (s) a waiter may wait before reading its row again."""
        return SAFETY_READ_S if self.listening else FALLBACK_POLL_S

    def waiting(self) -> int:
        """Waiters registered now."""
        with self._lock:
            return len(self._waiters)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the listener and close its connection (waiters fall back to polling)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the listener thread ---------------------------------------------------------

    def _open(self) -> Any:
        conn = psycopg.connect(
            conninfo(self.url), autocommit=True, connect_timeout=5,
            application_name="tasker-result-waker",
        )  # fmt: skip
        try:
            conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
        except BaseException:  # e.g. the server restarting: never leave it open
            conn.close()
            raise
        return conn

    def _wake(self, topic: str | None) -> None:
        with self._lock:
            waiters = [w for w in self._waiters if topic is None or w.topic in (None, topic)]
        for w in waiters:
            w.event.set()

    def _idle_done(self, stop: threading.Event, idle_since: float) -> bool:
        """Whether the thread ends now: stopped, or idle long enough (decided
        under the lock `register` takes, so a new waiter always has a thread)."""
        with self._lock:
            if not stop.is_set():
                if self._waiters or time.monotonic() - idle_since < WAKER_IDLE_S:
                    return False
                self._thread = None  # ours: `close` did not take it
            return True

    def _run(self, stop: threading.Event) -> None:
        pause = WAKER_RETRY_S[0]
        idle_since = time.monotonic()
        while not self._idle_done(stop, idle_since):
            try:
                conn = self._open()
            except Exception as exc:  # the waiters poll meanwhile
                log.warning("result listener cannot connect (%s); waiters poll meanwhile", exc,
                            extra={"action": "result_listener_failed"})  # fmt: skip
                stop.wait(pause)
                pause = min(pause * 2, WAKER_RETRY_S[1])
                continue
            pause = WAKER_RETRY_S[0]
            try:
                if self._listen(conn, stop, idle_since):
                    return
            except Exception as exc:  # the connection broke: connect again
                log.warning("result listener lost its connection (%s); reconnecting", exc,
                            extra={"action": "result_listener_failed"})  # fmt: skip
            finally:
                self.listening = False
                self._wake(None)  # they poll until it is back
                with contextlib.suppress(Exception):
                    conn.close()
            idle_since = time.monotonic()

    def _listen(self, conn: Any, stop: threading.Event, idle_since: float) -> bool:
        """Hand notifications to waiters until the thread must end (True)."""
        self.listening = True
        self._wake(None)  # a finish just before the LISTEN: read again
        while not self._idle_done(stop, idle_since):
            for n in conn.notifies(timeout=0.5):
                if n.payload.startswith(store.CAPACITY_PREFIX):
                    self._wake(n.payload[len(store.CAPACITY_PREFIX):])
            if self.waiting():
                idle_since = time.monotonic()
        return True
