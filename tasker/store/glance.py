"""What `tasker status` and the dashboard's overview read without a pass
over the table: the oldest due task of each topic (a probe of `ix_task_due`
per topic, not a read of every due row) and the planner's estimate of a
(topic, status) count that is too large to count (PostgreSQL's joint
statistics of the pair, as of the last ANALYZE: migration 0014). Counts
themselves are `dashboard.task_count_capped`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from tasker import states
from tasker.schema import task
from tasker.store.dialect import _is_pg, _status_in, db_now


def no_jit(conn: sa.Connection) -> None:
    """PostgreSQL's JIT off for this transaction (a no-op on SQLite): the
    admin reads and bulk writes look costly to the planner (subqueries per
    topic and status, most never run) and compiling them cost more than
    running them (450 ms for a bulk retry, 75 ms for a count)."""
    if _is_pg(conn):
        conn.execute(sa.text("SET LOCAL jit = off"))


def _earliest(topic: Any, band: ColumnElement[bool], ordered: bool) -> Any:
    col = task.c.exec_after if ordered else sa.func.min(task.c.exec_after)
    stmt = sa.select(col).where(task.c.topic == topic, _status_in(states.DUE), band)
    if ordered:  # one priority: the index's order, so its first entry
        stmt = stmt.order_by(task.c.exec_after).limit(1)
    return stmt.scalar_subquery()


def task_oldest_due_by_topic(conn: sa.Connection, *, topics: Iterable[str]) -> list[Any]:
    """(topic, oldest, db_now) for each of `topics` that has a due task: the
    earliest `exec_after` of its pending/retry tasks, when that has passed.
    Three ranges of `ix_task_due` a topic: priority 0 read in index order
    (its first entry), higher and lower priorities (rare) by a min."""
    names = list(topics)
    if not names:
        return []
    t = sa.union_all(
        *(sa.select(sa.literal(x, sa.String()).label("topic")) for x in names)
    ).subquery("t")
    zero = sa.literal_column("0", sa.Integer())
    stmt = sa.select(
        t.c.topic,
        _earliest(t.c.topic, task.c.priority == zero, ordered=True).label("plain"),
        _earliest(t.c.topic, task.c.priority > zero, ordered=False).label("high"),
        _earliest(t.c.topic, task.c.priority < zero, ordered=False).label("low"),
        db_now().label("db_now"),
    ).order_by(t.c.topic)
    out = []
    for r in conn.execute(stmt):
        oldest = min((v for v in (r.plain, r.high, r.low) if v is not None), default=None)
        if oldest is not None and oldest <= r.db_now:
            out.append(_Oldest(r.topic, oldest, r.db_now))
    return out


class _Oldest(NamedTuple):
    topic: str
    oldest: Any
    db_now: Any


_JOINT = sa.text("""
SELECT s.most_common_vals AS vals, s.most_common_freqs AS freqs, c.reltuples
FROM pg_stats_ext s
JOIN pg_namespace n ON n.nspname = s.schemaname
JOIN pg_class c ON c.relname = s.tablename AND c.relnamespace = n.oid
WHERE s.schemaname = current_schema() AND s.tablename = 'task'
  AND s.statistics_name = 'st_task_topic_status'
""")  # fmt: skip
"""The joint (topic, status) frequencies ANALYZE keeps (migration 0014)."""


def task_count_estimates(
    conn: sa.Connection, *, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """{(topic, status): estimated rows} for those of `pairs` that PostgreSQL's
    statistics know: the table's row count times the pair's frequency in
    the sample of the last ANALYZE. A rare pair (not among the common ones),
    SQLite, or a table never analyzed: no estimate."""
    wanted = list(pairs)
    if not wanted or not _is_pg(conn):
        return {}
    row = conn.execute(_JOINT).first()
    if row is None or row.vals is None or float(row.reltuples) <= 0:
        return {}
    freq = {(str(v[0]), str(v[1])): float(f) for v, f in zip(row.vals, row.freqs, strict=True)}
    rows = float(row.reltuples)
    return {p: round(rows * freq[p]) for p in wanted if p in freq}
