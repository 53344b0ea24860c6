"""Requeue finished tasks (admin retry) without breaking unique keys: a task
whose (topic, unique_key) is held by a live task, or by a newer target, is
skipped with a warning. The guarantee is the database's partial unique index
(see `store.unique`); this module only says which targets would hit it. A
requeued task whose `expires` passed gets a fresh one (a manual retry is a
fresh chance: see `store.requeue`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tasker import db, defaults, states, store
from tasker.admin.checks import check_count
from tasker.exceptions import ConfigurationError, DatabaseError, DuplicateTask
from tasker.states import Status

if TYPE_CHECKING:
    from tasker.app import Tasker

log = logging.getLogger(__name__)

RETRY_NOTE = "admin: retried\n"


def blocked(conn: sa.Connection, targets: list[int]) -> dict[int, int]:
    """Which finished `targets` a requeue must skip for their unique key:
    {task id: the task holding the key}, either a live task of the same
    (topic, key) or, among several targets sharing a key, the newest."""
    keys = store.task_keys_of(conn, ids=targets)
    if not keys:
        return {}
    out = store.task_requeue_conflicts(conn, ids=sorted(keys))
    newest: dict[tuple[str, str], int] = {}
    for i in sorted(keys):
        if i not in out:
            newest[keys[i]] = i
    for i in keys:
        if i not in out and newest[keys[i]] != i:
            out[i] = newest[keys[i]]
    return out


@contextlib.contextmanager
def requeue_race() -> Iterator[None]:
    """A publish that took a key between `blocked` and the requeue makes the
    unique index refuse the requeue: say so, instead of an IntegrityError."""
    try:
        yield
    except DatabaseError as exc:
        if isinstance(exc.__cause__, sa.exc.IntegrityError):
            raise DuplicateTask(
                "a publish took the unique key of a task being retried meanwhile; "
                "nothing was retried (run the retry again)"
            ) from exc
        raise


def requeue_matching(conn: sa.Connection, *, runs: int, note: str, **filters: Any) -> list[int]:
    """Requeue every finished task `filters` match (statuses, topic, since,
    until, time_column: see `store.task_requeue_matching`) in one statement,
    whatever their number; those it skipped for their unique key are named
    in a warning, as `requeue` does. Returns the ids moved."""
    moved = store.task_requeue_matching(conn, runs=runs, note=note, **filters)
    left = store.task_ids_matching(conn, keyed=True, **filters)  # moved ones no longer match
    _warn(blocked(conn, left) if left else {})
    return sorted(moved)


def count_matching(conn: sa.Connection, **filters: Any) -> int:
    """How many tasks `requeue_matching` with the same filters would move now."""
    return int(store.task_count_requeue_matching(conn, **filters))


def check_runs(runs: int | None) -> int:
    """`runs` of a retry (default `defaults.TASK_RETRY`), checked."""
    runs = defaults.TASK_RETRY if runs is None else runs
    check_count("runs", runs, 1, defaults.MAX_RETRY)
    return runs


def _terminal(statuses: Iterable[Status]) -> list[Status]:
    checked = [Status(s) for s in statuses]
    if not checked or not set(checked) <= states.TERMINAL:
        raise ConfigurationError("only failed or success tasks can be retried")
    return checked


def retry_where(
    app: Tasker, *, statuses: Iterable[Status], runs: int | None = None, **filters: Any
) -> list[int]:
    """`admin.retry` of every finished task in `statuses` that `filters`
    match (topic, since, until, time_column: see `store.task_requeue_matching`),
    in one statement whatever their number (the dashboard's bulk retry).
    Returns the ids moved."""
    runs, checked = check_runs(runs), _terminal(statuses)
    with requeue_race(), app.transaction() as conn:
        return requeue_matching(conn, runs=runs, note=RETRY_NOTE, statuses=checked, **filters)


def count_retry_where(app: Tasker, *, statuses: Iterable[Status], **filters: Any) -> int:
    """How many tasks `retry_where` with the same arguments would move now."""
    checked = _terminal(statuses)
    with app.transaction() as conn:
        return count_matching(conn, statuses=checked, **filters)


def _warn(held: dict[int, int]) -> None:
    for i, holder in sorted(held.items()):
        log.warning(
            "task %d not retried: task %d holds its unique key", i, holder,
            extra={"action": "retry_skipped"},
        )  # fmt: skip


def requeue(
    conn: sa.Connection, targets: list[int], *, runs: int, note: str, chunk: int
) -> list[int]:
    """Requeue finished `targets` (store.task_requeue_if_finished, in statements
    of at most `chunk` ids on SQLite), skipping with a warning those `blocked`
    finds; a moved task whose `expires` passed gets a fresh one of the same
    span (store.task_renew_expiry_if_passed). Returns the ids moved."""
    held = blocked(conn, targets) if targets else {}
    _warn(held)
    targets = [i for i in targets if i not in held]
    if not targets:
        return []
    if db.is_postgres(conn):
        moved = store.task_requeue_if_finished(conn, ids=targets, runs=runs, note=note)
    else:
        moved = []
        for i in range(0, len(targets), chunk):
            part = targets[i : i + chunk]
            moved += store.task_requeue_if_finished(conn, ids=part, runs=runs, note=note)
    store.task_renew_expiry_if_passed(conn, ids=moved)
    return sorted(moved)
