"""`AsyncApi`: publish and wait for results from asyncio code without blocking its loop.

SQLAlchemy's asyncio extension on an async driver: psycopg 3's
`AsyncConnection` on PostgreSQL (`postgresql+psycopg`), `aiosqlite` on the
embedded SQLite default. The statements are the store's, run on the async
connection with `run_sync` (one definition of every SQL statement), and the
rows are checked exactly as `publish_many` checks them. Publishing writes
rows only: the master dispatches them, so nothing here touches the broker.

The async engine belongs to the app: made on the first awaited call,
disposed by `await app.aclose()` (or `app.close()`). A pool's connections
belong to the event loop that opened them, so when the app is used from
another loop (a new `asyncio.run`, a test's own loop), the old engine is
dropped and a new one made for that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tasker import db, defaults, results
from tasker.exceptions import ConfigurationError
from tasker.publishing.adopt import adopt
from tasker.results import Result
from tasker.runtime import tracing

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from tasker.msgq import MsgQ
    from tasker.when import When

ASYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite+aiosqlite"}


class AsyncApi:
    """The awaitable forms of `publish`, `publish_many` and `result` (mixed into `Tasker`)."""

    if TYPE_CHECKING:  # provided by `Tasker`
        db: db.Database
        _rows: Callable[..., list[dict[str, Any]]]
        _inserter: Callable[..., Callable[..., list[int]]]
        _published: Callable[[list[dict[str, Any]], float], None]
        _result_waker: results.Waker

    _aengine: AsyncEngine | None = None
    _aengine_loop: asyncio.AbstractEventLoop | None = None

    async def apublish(
        self,
        msg: MsgQ,
        *,
        timeout: float | None = None,
        retry: int | None = None,
        exec_after: When | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        on_conflict: str = "return",
        expires: When | None = None,
        lock: str | None = None,
        connection: object | None = None,
    ) -> int:
        """`publish`, awaited: insert one `pending` task, return its id.

        Same arguments, checks and errors (`PayloadError`,
        `ConfigurationError`, `DuplicateTask`, `DatabaseError`).
        `connection`: the caller's `AsyncConnection` or `AsyncSession`: the
        row is written in its transaction, which tasker never commits.
        """
        keys = None if unique_key is None else [unique_key]
        ids = await self.apublish_many(
            [msg], timeout=timeout, retry=retry, exec_after=exec_after, priority=priority,
            unique_keys=keys, on_conflict=on_conflict, connection=connection,
            expires=expires, lock=lock,
        )  # fmt: skip
        return ids[0]

    async def apublish_many(
        self,
        msgs: Iterable[MsgQ],
        *,
        timeout: float | None = None,
        retry: int | None = None,
        exec_after: When | None = None,
        priority: int | None = None,
        unique_keys: Sequence[str | None] | None = None,
        on_conflict: str = "return",
        expires: When | None = None,
        lock: str | None = None,
        connection: object | None = None,
    ) -> list[int]:
        """`publish_many`, awaited: insert the tasks in one transaction, ids in
        order; with `connection` (an `AsyncConnection` or `AsyncSession`) in
        the caller's, all rows or none, visible only once the caller commits
        (`adopt` runs on its sync facade). Raises as `publish_many` does, and
        `ConfigurationError` for a `connection` that is neither."""
        started = time.monotonic()
        rows = self._rows(msgs, timeout, retry, exec_after, priority, unique_keys, on_conflict,
                          expires=expires, lock=lock)  # fmt: skip
        insert = self._inserter(keyed=unique_keys is not None, on_conflict=on_conflict)
        with tracing.Publishing(rows) as spans:
            if connection is not None:
                callers = await _async_connection(connection)

                def write(sync_conn: Any) -> list[int]:
                    with adopt(sync_conn, self.db) as conn:
                        return insert(conn, rows=rows)

                with db.wrap_db_errors():
                    ids = await callers.run_sync(write)
            else:
                with db.wrap_db_errors():
                    async with self._async_engine().begin() as conn:
                        ids = await conn.run_sync(insert, rows=rows)
            spans.inserted(ids)
        self._published(rows, started)
        return ids

    async def aresult(self, task_id: int, timeout: float = 30.0) -> Result:
        """`result`, awaited: the task's `Result` once `success` or `failed`.

        `timeout` in seconds. Woken by the app's shared LISTEN connection
        (`results.Waker`) on PostgreSQL, polled
        every `defaults.RESULT_POLL_S` on SQLite. Raises `TaskTimeout`,
        `TaskNotFound`, `DatabaseError`.
        """
        return await results.await_result(
            self._async_engine(), task_id, timeout_s=timeout, poll_s=defaults.RESULT_POLL_S,
            waker=self._result_waker,
        )  # fmt: skip

    async def aclose(self) -> None:
        """`close`, awaited: the async engine's connections are closed on this
        loop, then the rest of `close` (stopping an instance started here,
        which may wait for its grace) runs in a thread, not on the loop."""
        engine, self._aengine, self._aengine_loop = self._aengine, None, None
        if engine is not None:
            await engine.dispose()
        close: Callable[[], None] | None = getattr(self, "close", None)
        if close is not None:
            await asyncio.to_thread(close)

    # --- the engine -------------------------------------------------------------

    def _async_engine(self) -> AsyncEngine:
        """The app's async engine for the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        if self._aengine is not None and self._aengine_loop is not loop:
            self._dispose_async()  # its connections belong to another loop
        if self._aengine is None:
            self._aengine, self._aengine_loop = make_async_engine(self.db.url), loop
        return self._aengine

    def _dispose_async(self) -> None:
        """Close the async engine from synchronous code (`close`), on a loop
        of its own in a helper thread: the caller's loop may be running."""
        engine, self._aengine, self._aengine_loop = self._aengine, None, None
        if engine is None:
            return

        def dispose() -> None:
            with contextlib.suppress(Exception):  # closing: a dead connection is closed
                asyncio.run(engine.dispose())

        t = threading.Thread(target=dispose, name="tasker-async-dispose", daemon=True)
        t.start()
        t.join(10)


async def _async_connection(connection: object) -> AsyncConnection:
    """The `AsyncConnection` of `connection` (an AsyncSession's: begun if need be)."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncSession):
        return await connection.connection()
    if isinstance(connection, AsyncConnection):
        return connection
    kind = f"{type(connection).__module__}.{type(connection).__qualname__}"
    raise ConfigurationError(
        f"apublish's connection= takes a SQLAlchemy AsyncConnection or AsyncSession, not {kind}"
    )


def make_async_engine(url: Any) -> AsyncEngine:
    """An async engine on the app's database (`url`: its SQLAlchemy URL), with
    the sync engine's settings: psycopg 3 async on PostgreSQL, aiosqlite on SQLite."""
    from sqlalchemy.ext.asyncio import create_async_engine

    backend = url.get_backend_name()
    async_url = url.set(drivername=ASYNC_DRIVERS[backend])
    if backend == "sqlite":
        engine = create_async_engine(
            async_url, connect_args={"timeout": db.SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        db.tune_sqlite(engine.sync_engine, url)
        return engine
    return create_async_engine(async_url, **db.pg_engine_options())
