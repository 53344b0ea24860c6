"""Waiting for a task's result: `Tasker.result` (DESIGN 7, goagent's results to the caller).

A task's result is settled when its row is `success` or `failed`; for a
chain step that succeeded with steps after it, when the chain's last step
written so far is `failed`, or `success` with nothing after it
(`store.task_get_settling`).

On PostgreSQL the wait is woken by the database: the waiter LISTENs on the
publish channel, on which every finish statement already NOTIFYs
`free:<topic>` for the dispatcher (and an admin cancel does too), then
reads the row again. Riding on that notification costs the finish path
nothing (no statement, no payload per task id); the price is that a waiter
also wakes for finishes of other tasks, at most once per finishing
transaction, and reads one row. The LISTEN connection is opened only when
the first read finds the task unsettled. SQLite has no notifications: the
row is read every `poll_s`.

`await_result` is the same wait for asyncio (`Tasker.aresult`): the row is
read on the app's async engine (the store's statement through `run_sync`),
and on PostgreSQL it listens on a psycopg `AsyncConnection`, so the caller's
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
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

SAFETY_READ_S = 1.0
"""On PostgreSQL, read the row at least this often even without a notification
(one lost while the listener connection was being opened, say)."""


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


def wait(database: Database, task_id: int, *, timeout_s: float, poll_s: float) -> Result:
    """Wait up to `timeout_s` seconds for `task_id`'s result.

    Raises `TaskTimeout` when it is not settled in time, `TaskNotFound` for
    an unknown id, `DatabaseError` when the database fails.
    """
    deadline = time.monotonic() + timeout_s
    listener: Any = None
    try:
        while True:
            with database.transaction() as conn:
                row = store.task_get_settling(conn, task_id=task_id)
            if settled(row):
                return to_result(row)
            left = deadline - time.monotonic()
            if left <= 0:
                where = (
                    "" if row.id == task_id else f" (chain step {row.chain_step}, task {row.id})"
                )
                raise TaskTimeout(f"task {task_id} is still {row.status}{where} after {timeout_s}s")
            if not database.is_postgres:
                time.sleep(min(poll_s, left))
            elif listener is None:
                listener = _listen(database)  # then read again: nothing is missed
            else:
                _wait_notify(listener, min(left, SAFETY_READ_S))
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()


async def await_result(
    engine: AsyncEngine, url: URL, task_id: int, *, timeout_s: float, poll_s: float
) -> Result:
    """`wait`, awaited: the row read on `engine` (an async engine of the app's
    database at `url`), woken on PostgreSQL by LISTEN on an async connection.

    Raises `TaskTimeout`, `TaskNotFound` and `DatabaseError` as `wait` does.
    """
    deadline = time.monotonic() + timeout_s
    postgres = engine.dialect.name == "postgresql"
    listener: psycopg.AsyncConnection[Any] | None = None
    try:
        while True:
            with wrap_db_errors():
                async with engine.begin() as conn:
                    row = await conn.run_sync(store.task_get_settling, task_id=task_id)
            if settled(row):
                return to_result(row)
            left = deadline - time.monotonic()
            if left <= 0:
                where = (
                    "" if row.id == task_id else f" (chain step {row.chain_step}, task {row.id})"
                )
                raise TaskTimeout(f"task {task_id} is still {row.status}{where} after {timeout_s}s")
            if not postgres:
                await asyncio.sleep(min(poll_s, left))
            elif listener is None:
                listener = await _alisten(url)  # then read again: nothing is missed
                if listener is None:
                    postgres = False  # the listener is only a latency aid: poll
            else:
                await _await_notify(listener, min(left, SAFETY_READ_S))
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()


async def _alisten(url: URL) -> psycopg.AsyncConnection[Any] | None:
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo(url), autocommit=True, connect_timeout=5
        )
        await conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
    except psycopg.Error:
        return None
    return conn


async def _await_notify(conn: psycopg.AsyncConnection[Any], timeout_s: float) -> None:
    """Return at the first finish notification, or after `timeout_s`."""
    try:
        async with contextlib.aclosing(conn.notifies(timeout=timeout_s)) as gen:
            async for n in gen:
                if n.payload.startswith(store.CAPACITY_PREFIX):
                    return
    except psycopg.Error:
        await asyncio.sleep(min(timeout_s, 0.05))


def _listen(database: Database) -> Any:
    try:
        conn = psycopg.connect(conninfo(database.url), autocommit=True, connect_timeout=5)
        conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
    except psycopg.Error:
        return _Polling()  # the listener is only a latency aid
    return conn


def _wait_notify(conn: Any, timeout_s: float) -> None:
    """Return at the first finish notification, or after `timeout_s`."""
    try:
        for n in conn.notifies(timeout=timeout_s):
            if n.payload.startswith(store.CAPACITY_PREFIX):
                return
    except psycopg.Error:
        time.sleep(min(timeout_s, 0.05))


class _Polling:
    """Stands in for a listener that could not connect: waits like a poll."""

    def notifies(self, timeout: float) -> list[Any]:
        time.sleep(min(timeout, 0.05))
        return []

    def close(self) -> None:
        pass
