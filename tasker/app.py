"""`Tasker`: the one object that owns the engine, the broker settings and the registry."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from tasker import brokers, db, defaults, payload, results, when
from tasker.aio import AsyncApi
from tasker.config import Settings
from tasker.msgq import MsgQ, Registry
from tasker.publishing import PublishApi
from tasker.results import Result
from tasker.runtime.embedded import Lifespan, Running
from tasker.runtime.instance import Instance
from tasker.runtime.stats import StatsHook, as_hook

log = logging.getLogger(__name__)

When = when.When


__all__ = ["Result", "Tasker", "When"]


class Tasker(PublishApi, AsyncApi):
    """A tasker app: publish tasks (see `PublishApi`), run instances, read
    results (and their asyncio forms `apublish`, `apublish_many`, `aresult`:
    see `AsyncApi`).

    `Tasker()` reads TASKER_DATABASE_URL and TASKER_BROKER_URL; unset, it
    uses the embedded default (a SQLite file and a folder broker in the
    working directory). Two apps in one process share nothing.
    """

    def __init__(
        self,
        database_url: str | None = None,
        broker: str | None = None,
        *,
        stats: StatsHook | Callable[..., Any] | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings.load(database_url=database_url, broker_url=broker, **settings)
        self.db = db.Database(self.settings.database_url)
        self.database_url = self.db.url
        self.engine = self.db.engine
        self.broker = brokers.Broker(
            self.settings.broker_url,
            reconnect_retries=self.settings.reconnect_retries,
            reconnect_interval_s=self.settings.reconnect_interval_s,
        )
        self.registry = Registry()
        self.stats = as_hook(stats)
        self._running: Instance | None = None
        self._schemas = payload.SchemaChecks()
        # One LISTEN connection for every result waiter, opened on first use.
        self._result_waker = results.Waker(self.db.url)

    def __repr__(self) -> str:
        return f"<Tasker db={db.redact(self.database_url)} broker={self.broker.redacted()}>"

    # --- registry -----------------------------------------------------------

    def register(self, *classes: type[MsgQ]) -> None:
        """Make MsgQ classes known to this app (their topics must be unique)."""
        self.registry.register_all(classes)

    def task(self, cls: type[MsgQ]) -> type[MsgQ]:
        """Class decorator form of `register`."""
        self.registry.register(cls)
        return cls

    # --- database -----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One short database transaction; errors come out as `DatabaseError`."""
        with self.db.transaction() as conn:
            yield conn

    # --- results ------------------------------------------------------------

    def result(self, task_id: int, timeout: float = 30.0) -> Result:
        """Wait for the task to reach `success` or `failed` (a chain: its last
        step, or the failed one) and return its `Result`.

        `timeout` in seconds. Woken by the database on PostgreSQL (LISTEN),
        polled every 50 ms on SQLite (see `tasker.results`). Raises
        `TaskTimeout` when it does not come, `TaskNotFound` for an unknown id.
        """
        return results.wait(self.db, task_id, timeout_s=timeout, poll_s=defaults.RESULT_POLL_S,
                            waker=self._result_waker)  # fmt: skip

    # --- running ------------------------------------------------------------

    @property
    def instance(self) -> Instance | None:
        """The instance `run`, `start` or `running` made in this process, if any."""
        return self._running

    def running(self, master: bool | None = None, *, timeout: float | None = None) -> Running:
        """An instance for the duration of a `with` or `async with` block,
        in background threads of this process, leaving its signal handlers
        alone (the web server's own stop ends the block); on exit, the
        graceful stop (`timeout` overrides the shutdown grace, in seconds).
        `async with` starts and stops it in a thread, so the event loop goes
        on serving meanwhile. `master` as for `run`. The block gets the
        `Instance`; entering raises TaskerError when the database or broker
        cannot be used.
        """
        return Running(lambda: self._instance(master), timeout)

    def lifespan(self, _asgi_app: object = None) -> Lifespan:
        """`running()` in the shape of an ASGI lifespan:
        `FastAPI(lifespan=app.lifespan)` or `Starlette(lifespan=app.lifespan)`."""
        return Lifespan(lambda: self._instance(None))

    def _instance(self, master: bool | None) -> Instance:
        if master is None:
            master = not self.settings.just_worker
        self._running = Instance(
            database=self.db,
            broker=self.broker,
            classes=list(self.registry),
            settings=self.settings,
            stats=self.stats,
            master=master,
        )
        return self._running

    def run(self, master: bool | None = None, *, install_signals: bool = True) -> int:
        """Run this process as an instance until stopped; returns the exit code
        (0 after a graceful stop, 1 when a service gave up, 2 when it could not start).

        It races for master unless `master=False` or TASKER_JUST_WORKER=1,
        and consumes every registered topic.
        """
        return self._instance(master).run(install_signals=install_signals)

    def start(self, master: bool | None = None) -> Instance:
        """Start an instance in background threads (tests, embedding); returns it."""
        instance = self._instance(master)
        instance.start()
        return instance

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: finish or hand back running tasks, resign master, close."""
        if self._running is not None:
            self._running.stop(timeout)

    def close(self) -> None:
        """Stop the instance if one runs, and close every database connection
        (the async engine's too: in async code, prefer `await app.aclose()`)."""
        self.stop()
        self._result_waker.close()
        self.db.dispose()
        self._dispose_async()
