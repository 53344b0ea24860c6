"""Bulk retry by filter is set-based (PERFORMANCE: the dashboard's bulk retry
of 10,000 tasks), on SQLite and PostgreSQL: a fixed number of statements
whatever the number of tasks, and the same rules as a retry by ids: only the
filtered finished tasks move, a task whose unique key a live task holds is
skipped and named, of several matched tasks sharing a key only the newest
moves, a running or due task is never touched."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker, admin
from tasker.states import Status
from tasker.web import views
from tasker.web.views import TaskFilter

N = 1500


def fill(app: Tasker, rows: list[tuple[str, str, str | None]]) -> list[int]:
    """(topic, status, unique_key) rows written by plain SQL, oldest first."""
    with app.transaction() as conn:
        ids = []
        for topic, status, key in rows:
            ids.append(int(conn.execute(
                sa.text("INSERT INTO task (topic, status, input, timeout, retry, unique_key, "
                        "finished) VALUES (:t, :s, '{}', 5000, 0, :k, "
                        "CASE WHEN :f THEN CURRENT_TIMESTAMP END) "
                        "RETURNING id"),
                {"t": topic, "s": status, "k": key, "f": status in ("failed", "success")},
            ).scalar_one()))  # fmt: skip
        return ids


def statuses(app: Tasker, ids: list[int]) -> list[str]:
    with app.transaction() as conn:
        rows = conn.execute(sa.text("SELECT id, status FROM task")).all()
    by_id = dict(rows)
    return [by_id[i] for i in ids]


@pytest.fixture
def statements(app: Tasker) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(app.engine, "before_cursor_execute", count)
    yield seen
    sa.event.remove(app.engine, "before_cursor_execute", count)


def test_a_bulk_retry_is_a_few_statements_whatever_the_number(
    app: Tasker, statements: list[str]
) -> None:
    failed = fill(app, [("b.job", "failed", None)] * N)
    other = fill(app, [("b.other", "failed", None), ("b.job", "success", None),
                       ("b.job", "running", None), ("b.job", "pending", None)])  # fmt: skip
    f = TaskFilter(topic="b.job", statuses=(Status.FAILED,))
    statements.clear()
    assert views.count_retry_matching(app, f) == N
    assert views.retry_matching(app, f, runs=2) == failed
    assert len(statements) <= 8, statements  # not one per task, nor per chunk of ids
    assert set(statuses(app, failed)) == {"pending"}
    assert statuses(app, other) == ["failed", "success", "running", "pending"]
    with app.transaction() as conn:
        row = conn.execute(sa.text("SELECT retry, errlog, finished FROM task WHERE id = :i"),
                           {"i": failed[0]}).one()  # fmt: skip
    assert (row.retry, row.finished) == (2, None) and row.errlog.endswith("admin: retried\n")
    assert views.count_retry_matching(app, f) == 0


def test_unique_keys_are_kept_as_a_retry_by_ids_keeps_them(
    app: Tasker, caplog: pytest.LogCaptureFixture
) -> None:
    old, older, free = fill(app, [("b.job", "failed", "k"), ("b.job", "failed", "k"),
                                  ("b.job", "failed", "other")])  # fmt: skip
    (live,) = fill(app, [("b.job", "pending", "k")])
    f = TaskFilter(topic="b.job", statuses=(Status.FAILED,))
    assert views.count_retry_matching(app, f) == 1
    with caplog.at_level(logging.WARNING, logger="tasker.admin.requeue"):
        assert views.retry_matching(app, f) == [free]
    assert f"task {old} not retried: task {live} holds its unique key" in caplog.text
    assert f"task {older} not retried: task {live} holds its unique key" in caplog.text
    with app.transaction() as conn:
        conn.execute(sa.text("UPDATE task SET status = 'success' WHERE id = :i"), {"i": live})
    # Two matched tasks of one key: only the newest goes back, as by ids.
    assert admin.count_retry(app, status="failed") == 1
    assert admin.retry(app, status="failed") == [older]
    assert statuses(app, [old, older, live]) == ["failed", "pending", "success"]
