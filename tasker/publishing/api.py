"""`PublishApi`: publishing tasks, mixed into `Tasker` (`publish`,
`publish_many`, `publish_raw`, `chain`, `group`).

Every form writes rows only (the master dispatches them), in tasker's own
short transaction or, with `connection=`, in the caller's (`adopt`). The
row checks (`_rows`) are shared with the asyncio forms in `tasker.aio`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tasker import db, defaults, payload, pipelines, store, topics, unique, when
from tasker.exceptions import ConfigurationError, PayloadError
from tasker.limits import format_lock, publish_extras
from tasker.msgq import MsgQ, Registry, check_priority
from tasker.publishing.adopt import adopt
from tasker.runtime import tracing
from tasker.states import Status
from tasker.when import When

if TYPE_CHECKING:
    from tasker.runtime.stats import Stats


class PublishApi:
    """The publishing half of a `Tasker` app (see `Tasker`)."""

    if TYPE_CHECKING:  # provided by `Tasker`
        db: db.Database
        registry: Registry
        stats: Stats
        _schemas: payload.SchemaChecks

        def transaction(self) -> contextlib.AbstractContextManager[sa.Connection]: ...

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
        connection: object | None = None,
        expires: When | None = None,
        lock: str | None = None,
    ) -> int:
        """Insert one `pending` task and return its id.

        `priority` overrides the class's (higher is claimed first within the
        topic). With `unique_key`, while a task of this topic with that key is
        pending, retry or running, nothing is inserted and that task's id is
        returned, or `DuplicateTask` is raised when `on_conflict="raise"`.
        `connection`: the caller's SQLAlchemy Connection or Session, or a
        psycopg 3 / sqlite3 connection of this database: the row is written
        in that transaction (never committed here), so it exists, and runs,
        only if the caller commits (see `tasker.publishing.adopt`, which
        raises ConfigurationError for a connection it cannot use).
        `expires` (seconds, timedelta or datetime; overrides the class's): not
        started by then, the task never runs and ends `failed`, "expired".
        `lock` (a key; overrides the class's template): tasks sharing it run
        one at a time across the cluster, in (priority, id) order.
        """
        keys = None if unique_key is None else [unique_key]
        return self.publish_many(
            [msg], timeout=timeout, retry=retry, exec_after=exec_after, priority=priority,
            unique_keys=keys, on_conflict=on_conflict, connection=connection,
            expires=expires, lock=lock,
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
        connection: object | None = None,
        expires: When | None = None,
        lock: str | None = None,
    ) -> list[int]:
        """Insert many `pending` tasks in one round trip; ids come back in order.

        `unique_keys` (one key or None per message) works as `publish`'s
        `unique_key`; within the batch the first message of a (topic, key)
        wins and later ones get its id. With `on_conflict="raise"` any
        duplicate raises `DuplicateTask` and the whole batch is left out.
        `connection` as for `publish`: all rows or none, in the caller's transaction.
        `expires` and `lock` apply to every message, as `publish`'s.
        """
        started = time.monotonic()
        rows = self._rows(msgs, timeout, retry, exec_after, priority, unique_keys, on_conflict,
                          expires=expires, lock=lock)  # fmt: skip
        ids = self._insert(
            rows, keyed=unique_keys is not None, on_conflict=on_conflict, connection=connection
        )
        self._published(rows, started)
        return ids

    def _rows(
        self,
        msgs: Iterable[MsgQ],
        timeout: float | None,
        retry: int | None,
        exec_after: When | None,
        priority: int | None,
        unique_keys: Sequence[str | None] | None,
        on_conflict: str,
        *,
        expires: When | None = None,
        lock: str | None = None,
    ) -> list[dict[str, Any]]:
        """The checked rows of `publish_many` (and `apublish_many`)."""
        if priority is not None:  # a class's own is checked when it is defined
            check_priority(priority)
        rows = [self._row(m, timeout, retry, exec_after, priority, expires, lock) for m in msgs]
        if unique_keys is not None:
            unique.attach(rows, unique_keys, on_conflict)
        else:
            unique.check_on_conflict(on_conflict)
        return rows

    def _published(self, rows: list[dict[str, Any]], started: float) -> None:
        if self.stats.active:
            now = dt.datetime.now(dt.timezone.utc)
            took = (time.monotonic() - started) / max(1, len(rows))
            for r in rows:
                self.stats(r["topic"], Status.PENDING.value, now, took)

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
        expires: When | None = None,
        lock: str | None = None,
    ) -> int:
        """Publish by topic name with a JSON payload (text or decoded); returns the id.

        With a class for `topic` registered here, it is `publish` of
        `from_dict(payload)`. Otherwise the payload is checked against the
        JSON Schema the instances serving `topic` declared, when one is
        known, and the row takes their declared settings (timeout, retry,
        priority, result topic, expires, lock: the key formatted from the
        payload) where not given, else the defaults. Raises
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
                unique_key=unique_key, on_conflict=on_conflict, expires=expires, lock=lock,
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
        expires = expires if expires is not None else spec.get("expires")
        if lock is None and spec.get("lock") is not None:  # as the class would format it
            fields = pipelines.lock_fields_of(spec, data)
            lock = format_lock(spec["lock"], fields, where=f"topic {topic!r}: lock")
        if expires is not None or lock is not None:
            row.update(publish_extras(None, dict, expires, lock))
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

    def _insert(
        self, rows: list[dict[str, Any]], *, keyed: bool, on_conflict: str,
        connection: object | None = None,
    ) -> list[int]:  # fmt: skip
        """One row on PostgreSQL is one self-committing statement; more are
        one transaction, or the caller's. With unique keys, insert-or-find."""
        insert = self._inserter(keyed=keyed, on_conflict=on_conflict)
        single = len(rows) == 1 and connection is None
        autocommit = self.db.autocommit_engine() if single else None
        with tracing.Publishing(rows) as spans:
            if autocommit is not None:
                with db.wrap_db_errors(), autocommit.connect() as conn:
                    ids = insert(conn, rows=rows)
            else:
                with self._writing(connection) as conn:
                    ids = insert(conn, rows=rows)
            spans.inserted(ids)
        return ids

    def _writing(
        self, connection: object | None
    ) -> contextlib.AbstractContextManager[sa.Connection]:
        """tasker's own short transaction, or the caller's (`connection=`)."""
        return self.db.transaction() if connection is None else adopt(connection, self.db)

    def _inserter(self, *, keyed: bool, on_conflict: str) -> Callable[..., list[int]]:
        """The store function that writes publish rows: `fn(conn, rows=...) -> ids`."""
        if keyed:
            return functools.partial(unique.insert, raise_on_duplicate=on_conflict == "raise")
        return store.task_insert_many

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

    # --- chains and groups ----------------------------------------------------

    def chain(
        self, steps: list[MsgQ | str | type[MsgQ]], *, exec_after: When | None = None,
        connection: object | None = None,
    ) -> int:  # fmt: skip
        """Run steps one after another, each with the previous step's result as input.

        `steps`: a MsgQ instance, then topics or MsgQ classes; a topic with no
        class here takes the settings its instances declared, else the
        defaults (see `tasker.pipelines`). Returns the first step's id; `result(first_id)` waits for
        the whole chain. The next step's row is written in the transaction
        that marks the previous one `success`; a `failed` step stops the
        chain; a result that does not decode into the next class fails that
        step as bad input. `connection` as for `publish`. Raises
        PayloadError, ConfigurationError, DatabaseError.
        """
        names = pipelines.named_topics(self.registry, steps)
        declared = {t: found[0] for t, found in self._declared(names).items()} if names else {}
        first, rest = pipelines.chain_steps(self.registry, steps, declared)
        row = self._row(first, None, None, exec_after)
        with tracing.Publishing([row]) as spans, self._writing(connection) as conn:
            first_id = store.task_insert_chain(conn, first=row, rest=rest)
            spans.inserted([first_id])
            return first_id

    def group(
        self, members: Iterable[MsgQ], *, then: MsgQ, connection: object | None = None
    ) -> list[int]:
        """Publish `members` and, once every one is `success` or `failed`, `then`.

        `then`'s class needs a field `results` (a list): the callback's input
        gets there each member's {"id", "success", "error", "result"}, in
        member order. It is written once, by the transaction that makes the
        last member terminal (a cancelled or rescued member counts). Returns
        the member ids. `connection` as for `publish`. Raises PayloadError,
        ConfigurationError, DatabaseError.
        """
        then_input = pipelines.callback_input(then)
        rows = [self._row(m, None, None, None) for m in members]
        then_row = {**self._row(then, None, None, None), "input": then_input}
        with tracing.Publishing(rows) as spans, self._writing(connection) as conn:
            ids = store.task_insert_group(conn, members=rows, then=then_row)[1]
            spans.inserted(ids)
            return ids


def _row_values(
    topic: str, text: str, timeout_s: float, retry: int, exec_after: When | None, priority: int
) -> dict[str, Any]:
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0.001 <= timeout_s <= defaults.MAX_TIMEOUT_S  # NaN fails this too
    ):
        # The column holds whole milliseconds: less than 1 ms would store 0.
        raise ConfigurationError(
            f"timeout must be seconds > 0 (at least 0.001) and at most "
            f"{defaults.MAX_TIMEOUT_S:g}, not {timeout_s!r}"
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
