"""What the master's loops read to learn when they next have work, so that
an idle cluster does not sweep or rescue every second (see
`runtime.quiet`): when each topic's next task falls due, and whether
anything runs or is in flight at all. Index probes, no counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from tasker.store.dialect import _is_pg, to_ms

# PostgreSQL only (the idle schedule needs LISTEN/NOTIFY). Per topic the
# earliest of: the first due-status row of priority 0 not in flight (an
# ordered read of ix_task_due that stops there), the rows of higher and of
# lower priorities not in flight (two ranges of ix_task_due, usually
# empty: `priority <> 0` would read every row of the topic), and the end of the redelivery
# window of the rows in flight (ix_task_inflight: at most capacity plus
# prefetch rows). A claim of an earlier term is free at once (as in the claim).
_NEXT_DUE = sa.text("""
SELECT t.topic,
       extract(epoch FROM least(
           (SELECT d.exec_after FROM task d
            WHERE d.topic = t.topic AND d.status IN ('pending', 'retry') AND d.priority = 0
              AND (d.dispatched IS NULL OR d.term < :term)
            ORDER BY d.exec_after LIMIT 1),
           (SELECT min(h.exec_after) FROM task h
            WHERE h.topic = t.topic AND h.status IN ('pending', 'retry') AND h.priority > 0
              AND (h.dispatched IS NULL OR h.term < :term)),
           (SELECT min(l.exec_after) FROM task l
            WHERE l.topic = t.topic AND l.status IN ('pending', 'retry') AND l.priority < 0
              AND (l.dispatched IS NULL OR l.term < :term)),
           (SELECT min(greatest(f.exec_after, f.dispatched
                                + make_interval(secs => (f.timeout + :window_ms) / 1000.0)))
            FROM task f
            WHERE f.topic = t.topic AND f.dispatched IS NOT NULL
              AND f.status IN ('pending', 'retry') AND f.term >= :term)
       ) - now()) AS due_in
FROM unnest(CAST(:topics AS text[])) AS t(topic)
""")  # fmt: skip


def task_next_due(
    conn: sa.Connection, *, topics: Sequence[str], term: int, window_s: float
) -> dict[str, float | None]:
    """{topic: seconds until its next task can be claimed (0 or less: now),
    None when it has none}, by the database clock. PostgreSQL only. It
    ignores per-key locks and capacity: a row they hold back reads as due."""
    if not topics:
        return {}
    params = {"topics": list(topics), "term": term, "window_ms": to_ms(window_s)}
    rows = conn.execute(_NEXT_DUE, params).all()
    return {r.topic: None if r.due_in is None else float(r.due_in) for r in rows}


class RescueOutlook(NamedTuple):
    """Whether any task runs or waits in flight (a rescue may be needed),
    and seconds until the next `expires_at` of a due task (None: none)."""

    busy: bool
    expires_in: float | None


_OUTLOOK = {
    "postgresql": sa.text("""
SELECT EXISTS (SELECT 1 FROM task WHERE status = 'running')
       OR EXISTS (SELECT 1 FROM task WHERE dispatched IS NOT NULL) AS busy,
       extract(epoch FROM (SELECT min(expires_at) FROM task
                           WHERE expires_at IS NOT NULL AND status IN ('pending', 'retry'))
               - now()) AS expires_in
"""),
    "sqlite": sa.text("""
SELECT EXISTS (SELECT 1 FROM task WHERE status = 'running')
       OR EXISTS (SELECT 1 FROM task WHERE dispatched IS NOT NULL) AS busy,
       (julianday((SELECT min(expires_at) FROM task
                   WHERE expires_at IS NOT NULL AND status IN ('pending', 'retry')))
        - julianday('now')) * 86400.0 AS expires_in
"""),
}  # fmt: skip


def task_rescue_outlook(conn: sa.Connection) -> RescueOutlook:
    """See `RescueOutlook`: three index probes (ix_task_running,
    ix_task_inflight, ix_task_expires)."""
    row: Any = conn.execute(_OUTLOOK["postgresql" if _is_pg(conn) else "sqlite"]).one()
    return RescueOutlook(bool(row.busy), None if row.expires_in is None else float(row.expires_in))
