"""Admin work as plain functions for scripts: list, show, retry, cancel, purge,
pause and resume, status.

Each function takes a `Tasker` app and returns plain data (dicts, lists of
ids, counts), so scripts and the CLI share one implementation. Every status
change goes through the guarded transitions of `store` (requeue, cancel):
a row another process holds (running, or finished meanwhile) is never
touched. All SQL lives in `store`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasker import defaults, states, store
from tasker.admin import requeue
from tasker.admin.checks import TimeBound as TimeBound
from tasker.admin.checks import aware as _aware
from tasker.admin.checks import check_count as _check_count
from tasker.admin.checks import ids as _ids
from tasker.admin.checks import statuses as _statuses
from tasker.admin.glance import instances as instances
from tasker.admin.glance import status as status
from tasker.admin.pause import pause as pause
from tasker.admin.pause import paused_topics as paused_topics
from tasker.admin.pause import resume as resume
from tasker.admin.requeue import RETRY_NOTE
from tasker.admin.requeue import count_retry_where as count_retry_where
from tasker.admin.requeue import retry_where as retry_where
from tasker.exceptions import ConfigurationError
from tasker.states import Status

if TYPE_CHECKING:
    from tasker.app import Tasker, When


PURGE_BATCH = 1000
"""Rows one purge statement deletes; each batch is its own short transaction."""

CANCEL_NOTE = "admin: cancelled\n"
_SQLITE_IDS_PER_STATEMENT = 10_000  # SQLite caps bound parameters per statement


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


# --- reading ----------------------------------------------------------------


def list_tasks(
    app: Tasker,
    topic: str | None = None,
    status: str | Status | Iterable[str | Status] | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest tasks first, filtered by topic, status and creation time.

    Returns dicts with id, topic, status, retry, attempts, exec_after,
    created, updated, started, finished and term.
    """
    _check_count("limit", limit, 1, defaults.MAX_ROWS)
    with app.transaction() as conn:
        rows = store.task_list(
            conn,
            topic=topic,
            statuses=_statuses(status),
            since=_aware(since),
            until=_aware(until),
            limit=limit,
        )
    return [_row_dict(r) for r in rows]


def get_task(app: Tasker, task_id: int) -> dict[str, Any]:
    """Every column of one task; `TaskNotFound` when there is no such id,
    ConfigurationError for an id that is no 64-bit integer. `worker_fqdn`
    is its hosts one a line, without the newline the column ends each
    attempt's line with ("a.example\nb.example")."""
    (checked,) = _ids([task_id])
    with app.transaction() as conn:
        row = _row_dict(store.task_get(conn, task_id=checked))
    row["worker_fqdn"] = (row["worker_fqdn"] or "").rstrip("\n")
    return row


# --- retry ------------------------------------------------------------------


def _retry_targets(conn: Any, ids: Sequence[int]) -> list[int]:
    found = store.task_status_many(conn, ids=_ids(ids))
    return sorted(i for i, s in found.items() if s in states.TERMINAL)


def _retry_filter(
    ids: Sequence[int] | None,
    status: str | Status | Iterable[str | Status] | None,
    topic: str | None,
    since: TimeBound | None,
) -> dict[str, Any] | None:
    """The filter of a retry by status (None: by `ids`), checked."""
    if ids:
        if status is not None or topic is not None or since is not None:
            raise ConfigurationError("give task ids or --status/--topic/--since, not both")
        return None
    statuses = _statuses(status)
    if not statuses:
        raise ConfigurationError("retry needs task ids or a status (failed or success)")
    if not set(statuses) <= states.TERMINAL:
        raise ConfigurationError("only failed or success tasks can be retried")
    return {"statuses": statuses, "topic": topic, "since": _aware(since), "time_column": "finished"}


def count_retry(
    app: Tasker,
    ids: Sequence[int] | None = None,
    *,
    status: str | Status | Iterable[str | Status] | None = None,
    topic: str | None = None,
    since: TimeBound | None = None,
) -> int:
    """How many tasks `retry` with the same arguments would move now (a dry run)."""
    where = _retry_filter(ids, status, topic, since)
    with app.transaction() as conn:
        if where is not None:
            return requeue.count_matching(conn, **where)
        return len(_retry_targets(conn, ids or []))


def retry(
    app: Tasker,
    ids: Sequence[int] | None = None,
    *,
    status: str | Status | Iterable[str | Status] | None = None,
    topic: str | None = None,
    since: TimeBound | None = None,
    runs: int | None = None,
) -> list[int]:
    """Put finished tasks back to `pending` with `runs` runs left; returns the ids moved.

    Either explicit `ids` (those that are failed or success move) or a
    filter: `status` (failed and/or success), optionally `topic` and `since`
    (finished at or after). The move is one guarded UPDATE per transaction
    (by filter: one statement, whatever the number), so a row that is no
    longer finished is left alone. `runs` defaults to
    `defaults.TASK_RETRY`. A task whose unique key is held is skipped with
    a warning (`retry_blocked`); `DuplicateTask` if a publish took one meanwhile.
    A task whose `expires` passed (it expired, or its deadline went by after
    it failed) gets the span it was published with again, from now: a
    manual retry is a fresh chance (see `store.requeue`).
    """
    runs = requeue.check_runs(runs)
    where = _retry_filter(ids, status, topic, since)
    with requeue.requeue_race(), app.transaction() as conn:
        if where is not None:
            return requeue.requeue_matching(conn, runs=runs, note=RETRY_NOTE, **where)
        targets = _retry_targets(conn, ids or [])
        chunk = _SQLITE_IDS_PER_STATEMENT
        return requeue.requeue(conn, targets, runs=runs, note=RETRY_NOTE, chunk=chunk)


def retry_blocked(app: Tasker, ids: Sequence[int]) -> dict[int, int]:
    """{finished task id: the task holding its unique key} for those of `ids`
    that `retry` would skip (see `requeue.blocked`)."""
    with app.transaction() as conn:
        return requeue.blocked(conn, _retry_targets(conn, ids))


# --- cancel -----------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    """What `cancel_tasks` did: ids failed at once (pending/retry) and ids of
    running tasks asked to stop (they end failed, cancelled, within two
    heartbeats); each sorted."""

    cancelled: list[int]
    requested: list[int]

    @property
    def ids(self) -> list[int]:
        return sorted(self.cancelled + self.requested)


def count_cancel(app: Tasker, ids: Sequence[int]) -> int:
    """How many of `ids` are pending, retry or running now (what `cancel` would touch)."""
    with app.transaction() as conn:
        found = store.task_status_many(conn, ids=_ids(ids))
    return sum(1 for s in found.values() if s in states.DUE or s == Status.RUNNING)


def cancel_tasks(app: Tasker, ids: Sequence[int]) -> Cancelled:
    """Cancel tasks (DESIGN 7): pending/retry -> failed at once, with
    "cancelled" in errlog; a running task is asked to stop (abort): its
    `ctx.cancelled` turns true and `ctx.check()` raises `TaskCancelled`, a
    process-isolated execution is killed, and the row ends `failed` with
    "cancelled" in errlog and no retry. Finished and unknown ids are left
    alone. ConfigurationError for ids that are not integers."""
    ids = _ids(ids)
    cancelled: list[int] = []
    requested: list[int] = []
    for i in range(0, len(ids), _SQLITE_IDS_PER_STATEMENT):
        with app.transaction() as conn:
            rows = store.task_cancel_or_stop(
                conn, ids=ids[i : i + _SQLITE_IDS_PER_STATEMENT], note=CANCEL_NOTE
            )
        for r in rows:
            (requested if r.status == Status.RUNNING.value else cancelled).append(r.id)
    return Cancelled(sorted(cancelled), sorted(requested))


def cancel(app: Tasker, ids: Sequence[int]) -> list[int]:
    """`cancel_tasks`, as one sorted list of the ids cancelled or asked to stop."""
    return cancel_tasks(app, ids).ids


# --- purge ------------------------------------------------------------------


def _purge_args(
    older_than: dt.timedelta, status: str | Status | Iterable[str | Status]
) -> tuple[list[Status], float]:
    if not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0):
        raise ConfigurationError(f"older_than must be a timedelta >= 0, not {older_than!r}")
    statuses = _statuses(status) or []
    if not statuses or not set(statuses) <= states.TERMINAL:
        raise ConfigurationError("only success and failed tasks can be purged")
    return statuses, older_than.total_seconds()


def count_purge(
    app: Tasker,
    older_than: dt.timedelta,
    status: str | Status | Iterable[str | Status] = (Status.SUCCESS,),
) -> int:
    """How many tasks `purge` with the same arguments would delete now (the
    same condition, so rows something live still needs are not counted);
    ConfigurationError for a negative age or a status that is not terminal."""
    statuses, secs = _purge_args(older_than, status)
    with app.transaction() as conn:
        return store.task_count_purgeable(conn, statuses=statuses, older_than_s=secs)


def purge(
    app: Tasker,
    older_than: dt.timedelta,
    status: str | Status | Iterable[str | Status] = (Status.SUCCESS,),
    batch: int = PURGE_BATCH,
) -> int:
    """Delete finished tasks (success/failed only) finished longer than `older_than` ago.

    Works in batches of `batch` rows, each its own short transaction, so no
    lock is held for long; returns how many rows were deleted. Never deletes a
    row something live still needs (DESIGN 2): a member of a group whose
    callback is not written, a step of a chain not yet ended, a row whose
    result-topic message is unsent. ConfigurationError for bad arguments.
    """
    statuses, secs = _purge_args(older_than, status)
    _check_count("batch", batch, 1, defaults.MAX_ROWS)
    total = 0
    while True:
        with app.transaction() as conn:
            n = store.task_purge_batch(conn, statuses=statuses, older_than_s=secs, limit=batch)
        total += n
        if n < batch:
            return total


# --- cluster ----------------------------------------------------------------


# --- publishing -------------------------------------------------------------


def publish(
    app: Tasker,
    topic: str,
    json_text: str | dict[str, Any],
    timeout: float | None = None,
    retry: int | None = None,
    exec_after: When | None = None,
    priority: int | None = None,
    unique_key: str | None = None,
    on_conflict: str = "return",
) -> int:
    """Publish one task by topic name with a JSON payload; returns its id
    (with `unique_key`, that of the live task holding it: see `Tasker.publish`)."""
    return app.publish_raw(
        topic, json_text, timeout=timeout, retry=retry, exec_after=exec_after,
        priority=priority, unique_key=unique_key, on_conflict=on_conflict,
    )  # fmt: skip


def to_jsonable(value: Any) -> Any:
    """Datetimes as ISO strings, recursively: what `json.dumps` of admin results needs."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=True)
