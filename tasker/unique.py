"""Unique keys on the publish side: check the keys, attach them to rows,
insert keyed and keyless rows by their own paths, and say what a duplicate
means (`on_conflict`). The guarantee itself is the database's (see
`store.unique`): a partial unique index, not a read-then-write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tasker import store, topics
from tasker.exceptions import ConfigurationError, DuplicateTask

log = logging.getLogger(__name__)

ON_CONFLICT = ("return", "raise")
MAX_KEY_CHARS = topics.MAX_KEY_CHARS
"""The width of the `unique_key` column."""


def check_on_conflict(value: Any) -> None:
    """`"return"` (the live task's id) or `"raise"` (`DuplicateTask`);
    ConfigurationError otherwise."""
    if value not in ON_CONFLICT:
        raise ConfigurationError(f"on_conflict must be 'return' or 'raise', not {value!r}")


def check_key(value: Any) -> str:
    """A unique key: non-empty text of at most 255 characters with no control
    character, lone surrogate or bidi control (`topics.key_problem`: a key is
    matched, never escaped). ConfigurationError otherwise."""
    problem = topics.key_problem(value)
    if problem is not None:
        raise ConfigurationError(f"unique_key {problem}")
    return str(value)


def attach(rows: list[dict[str, Any]], keys: Sequence[str | None] | None, on_conflict: str) -> None:
    """Put each checked key (or None) on its row; with `on_conflict="raise"`
    a key given twice in one batch is a `DuplicateTask` before anything is
    written."""
    check_on_conflict(on_conflict)
    if keys is None:
        return
    if isinstance(keys, str):
        raise ConfigurationError("unique_keys takes one key (or None) per message, not one text")
    keys = list(keys)
    if len(keys) != len(rows):
        raise ConfigurationError(
            f"unique_keys has {len(keys)} entries for {len(rows)} message(s); give one each"
        )
    seen: set[tuple[str, str]] = set()
    for row, key in zip(rows, keys, strict=True):
        if key is None:
            continue
        row["unique_key"] = check_key(key)
        pair = (row["topic"], key)
        if on_conflict == "raise" and pair in seen:
            raise DuplicateTask(
                f"unique_key {key!r} of topic {row['topic']!r} is given twice in this batch",
                topic=row["topic"],
                unique_key=key,
            )
        seen.add(pair)


def insert(
    conn: sa.Connection, *, rows: list[dict[str, Any]], raise_on_duplicate: bool
) -> list[int]:
    """Insert `rows` (keyless ones by the fast path, COPY included; keyed ones
    by insert-or-find); ids in input order. A keyed row that found a live
    task gets its id, or raises `DuplicateTask` when `raise_on_duplicate`
    (the caller's transaction then writes nothing)."""
    keyed = [i for i, r in enumerate(rows) if r.get("unique_key") is not None]
    if not keyed:
        return store.task_insert_many(conn, rows=rows)
    ids: list[int] = [0] * len(rows)
    plain = [i for i, r in enumerate(rows) if r.get("unique_key") is None]
    plain_ids = store.task_insert_many(conn, rows=[rows[i] for i in plain])
    for i, task_id in zip(plain, plain_ids, strict=True):
        ids[i] = task_id
    got = store.task_insert_unique_many(conn, rows=[rows[i] for i in keyed])
    for i, (task_id, inserted) in zip(keyed, got, strict=True):
        if not inserted and raise_on_duplicate:
            r = rows[i]
            raise DuplicateTask(
                f"task {task_id} of topic {r['topic']!r} holds unique_key "
                f"{r['unique_key']!r} (pending, retry or running)",
                task_id=task_id,
                topic=r["topic"],
                unique_key=r["unique_key"],
            )
        ids[i] = task_id
    return ids
