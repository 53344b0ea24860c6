"""`Tasker`: the one object that owns the engine, the broker settings and the registry."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from tasker import brokers, db, defaults, payload, pipelines, results, store, topics, unique, when
from tasker.config import Settings
from tasker.exceptions import ConfigurationError, PayloadError
from tasker.limits import publish_extras
from tasker.msgq import MsgQ, Registry, check_priority
from tasker.results import Result
from tasker.runtime.instance import Instance
from tasker.runtime.stats import StatsHook, as_hook
from tasker.states import Status

log = logging.getLogger(__name__)

When = when.When


__all__ = ["Result", "Tasker", "When"]


class Tasker:
    """A tasker app: publish tasks, run instances, read results.

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

    # --- publishing ---------------------------------------------------------

    def publish(
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
    ) -> int:
        """Insert one `pending` task and return its id.

        `priority` overrides the class's (higher is claimed first within the
        topic). With `unique_key`, while a task of this topic with that key is
        pending, retry or running, nothing is inserted and that task's id is
        returned, or `DuplicateTask` is raised when `on_conflict="raise"`.
        `expires` (seconds, timedelta or datetime; overrides the class's): not
        started by then, the task never runs and ends `failed`, "expired".
        `lock` (a key; overrides the class's template): tasks sharing it run
        one at a time across the cluster, in (priority, id) order.
        """
        keys = None if unique_key is None else [unique_key]
        return self.publish_many(
            [msg], timeout=timeout, retry=retry, exec_after=exec_after, priority=priority,
            unique_keys=keys, on_conflict=on_conflict, expires=expires, lock=lock,
        )[0]  # fmt: skip

    def publish_many(
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
    ) -> list[int]:
        """Insert many `pending` tasks in one round trip; ids come back in order.

        `unique_keys` (one key or None per message) works as `publish`'s
        `unique_key`; within the batch the first message of a (topic, key)
        wins and later ones get its id. With `on_conflict="raise"` any
        duplicate raises `DuplicateTask` and the whole batch is left out.
        `expires` and `lock` apply to every message, as `publish`'s.
        """
        started = time.monotonic()
        if priority is not None:  # a class's own is checked when it is defined
            check_priority(priority)
        rows = [self._row(m, timeout, retry, exec_after, priority, expires, lock) for m in msgs]
        if unique_keys is not None:
            unique.attach(rows, unique_keys, on_conflict)
        else:
            unique.check_on_conflict(on_conflict)
        ids = self._insert(rows, keyed=unique_keys is not None, on_conflict=on_conflict)
        if self.stats.active:
            now = dt.datetime.now(dt.timezone.utc)
            took = (time.monotonic() - started) / max(1, len(rows))
            for r in rows:
                self.stats(r["topic"], Status.PENDING.value, now, took)
        return ids

    def publish_raw(
        self,
        topic: str,
        payload: str | dict[str, Any],
        *,
        timeout: float | None = None,
        retry: int | None = None,
        exec_after: When | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        on_conflict: str = "return",
    ) -> int:
        """Publish by topic name with a JSON payload (text or decoded); returns the id.

        With a class for `topic` registered here, it is `publish` of
        `from_dict(payload)`. Otherwise the payload is checked against the
        JSON Schema the instances serving `topic` declared, when one is
        known, and the row takes their declared settings (timeout, retry,
        priority, result topic) where not given, else the defaults. Raises
        ConfigurationError for a topic no transport carries, PayloadError
        (naming the field path, e.g. "$.tags[1]") for a payload that is not
        JSON or that the class or schema refuses: then nothing is written.
        """
        problem = topics.topic_problem(topic)
        if problem:
            raise ConfigurationError(f"topic {topic!r} {problem}")
        data = payload
        if isinstance(payload, str):
            try:
                data = json.loads(payload, parse_constant=_not_json)
            except ValueError as exc:
                raise PayloadError(f"{topic}: input is not valid JSON ({exc})") from None
            except RecursionError:
                raise PayloadError(f"{topic}: input nests too deep") from None
        if topic in self.registry:
            return self.publish(
                self.registry.get(topic).from_dict(data),
                timeout=timeout, retry=retry, exec_after=exec_after, priority=priority,
                unique_key=unique_key, on_conflict=on_conflict,
            )  # fmt: skip
        if not isinstance(data, dict):
            raise PayloadError(f"{topic}: input must be a JSON object")
        try:  # RFC 8259 JSON only: NaN and infinities are refused here too
            text = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise PayloadError(f"{topic}: input is not JSON-serialisable: {exc}") from None
        settings_text, schema_text = self._declared([topic]).get(topic, (None, None))
        if schema_text is not None:
            self._schemas.check(topic, schema_text, data)
        spec = pipelines.declared_settings(topic, settings_text)
        row = _row_values(
            topic,
            text,
            timeout if timeout is not None else spec["timeout_s"],
            retry if retry is not None else spec["retry"],
            exec_after,
            spec["priority"] if priority is None else check_priority(priority),
        )
        row["result_topic"] = spec["result_topic"]
        unique.attach([row], None if unique_key is None else [unique_key], on_conflict)
        return self._insert([row], keyed=unique_key is not None, on_conflict=on_conflict)[0]

    def _declared(self, names: list[str]) -> dict[str, tuple[str | None, str | None]]:
        """What the instances declared for `names` (`store.topic_declared`)."""
        autocommit = self.db.autocommit_engine()
        if autocommit is not None:
            with db.wrap_db_errors(), autocommit.connect() as conn:
                return store.topic_declared(conn, names=names)
        with self.transaction() as conn:
            return store.topic_declared(conn, names=names)

    def _insert(self, rows: list[dict[str, Any]], *, keyed: bool, on_conflict: str) -> list[int]:
        """One row on PostgreSQL is one self-committing statement; more are
        one transaction. With unique keys, the insert-or-find path."""
        insert = store.task_insert_many
        if keyed:
            insert = functools.partial(unique.insert, raise_on_duplicate=on_conflict == "raise")
        autocommit = self.db.autocommit_engine() if len(rows) == 1 else None
        if autocommit is not None:
            with db.wrap_db_errors(), autocommit.connect() as conn:
                return insert(conn, rows=rows)
        with self.transaction() as conn:
            return insert(conn, rows=rows)

    def _row(
        self,
        msg: MsgQ,
        timeout: float | None,
        retry: int | None,
        exec_after: When | None,
        priority: int | None = None,
        expires: When | None = None,
        lock: str | None = None,
    ) -> dict[str, Any]:
        if not isinstance(msg, MsgQ):
            raise PayloadError(f"publish takes MsgQ instances, not {type(msg).__name__}")
        cls = type(msg)
        if self.registry.find(cls.topic) is not cls:
            self.registry.register(cls)  # DuplicateTopic if another class has the topic
        row = _row_values(
            cls.topic,
            msg.encode(),
            timeout if timeout is not None else cls.timeout,
            retry if retry is not None else cls.retry,
            exec_after,
            priority if priority is not None else cls.priority,
        )
        row["result_topic"] = cls.result_topic
        if expires is not None or lock is not None or cls.expires is not None or cls.lock:
            row.update(publish_extras(cls, msg.payload, expires, lock))
        return row

    # --- pipelines ------------------------------------------------------------

    def chain(self, steps: list[MsgQ | str | type[MsgQ]], *, exec_after: When | None = None) -> int:
        """Run steps one after another, each with the previous step's result as input.

        `steps`: a MsgQ instance, then topics or MsgQ classes; a topic with no
        class here takes the settings its instances declared, else the
        defaults (see `tasker.pipelines`). Returns the first step's id; `result(first_id)` waits for
        the whole chain. The next step's row is written in the transaction
        that marks the previous one `success`; a `failed` step stops the
        chain; a result that does not decode into the next class fails that
        step as bad input. Raises PayloadError, ConfigurationError, DatabaseError.
        """
        names = pipelines.named_topics(self.registry, steps)
        declared = {t: found[0] for t, found in self._declared(names).items()} if names else {}
        first, rest = pipelines.chain_steps(self.registry, steps, declared)
        row = self._row(first, None, None, exec_after)
        with self.transaction() as conn:
            return store.task_insert_chain(conn, first=row, rest=rest)

    def group(self, members: Iterable[MsgQ], *, then: MsgQ) -> list[int]:
        """Publish `members` and, once every one is `success` or `failed`, `then`.

        `then`'s class needs a field `results` (a list): the callback's input
        gets there each member's {"id", "success", "error", "result"}, in
        member order. It is written once, by the transaction that makes the
        last member terminal (a cancelled or rescued member counts). Returns
        the member ids. Raises PayloadError, ConfigurationError, DatabaseError.
        """
        then_input = pipelines.callback_input(then)
        rows = [self._row(m, None, None, None) for m in members]
        then_row = {**self._row(then, None, None, None), "input": then_input}
        with self.transaction() as conn:
            return store.task_insert_group(conn, members=rows, then=then_row)[1]

    # --- results ------------------------------------------------------------

    def result(self, task_id: int, timeout: float = 30.0) -> Result:
        """Wait for the task to reach `success` or `failed` (a chain: its last
        step, or the failed one) and return its `Result`.

        `timeout` in seconds. Woken by the database on PostgreSQL (LISTEN),
        polled every 50 ms on SQLite (see `tasker.results`). Raises
        `TaskTimeout` when it does not come, `TaskNotFound` for an unknown id.
        """
        return results.wait(self.db, task_id, timeout_s=timeout, poll_s=defaults.RESULT_POLL_S)

    # --- running ------------------------------------------------------------

    @property
    def running(self) -> Instance | None:
        """The instance `run` or `start` made in this process, if any."""
        return self._running

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
        """Stop the instance if one runs, and close every database connection."""
        self.stop()
        self.db.dispose()


def _row_values(
    topic: str, text: str, timeout_s: float, retry: int, exec_after: When | None, priority: int
) -> dict[str, Any]:
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0 < timeout_s <= defaults.MAX_TIMEOUT_S  # NaN fails this too
    ):
        raise ConfigurationError(
            f"timeout must be seconds > 0 and at most {defaults.MAX_TIMEOUT_S:g}, not {timeout_s!r}"
        )
    if type(retry) is not int or not 1 <= retry <= defaults.MAX_RETRY:
        raise ConfigurationError(f"retry must be an int from 1 to {defaults.MAX_RETRY}: {retry!r}")
    at, delay_ms = when.plan(exec_after)
    return {
        "topic": topic,
        "input": text,
        "timeout_s": timeout_s,
        "retry": retry,
        "exec_after": at,
        "delay_s": delay_ms / 1000,
        "priority": priority,
    }


def _not_json(constant: str) -> Any:
    """`json.loads` accepts NaN and Infinity, which JSON (RFC 8259) does not."""
    raise ValueError(f"{constant} is not JSON")
