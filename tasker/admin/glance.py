"""The cluster at a glance: `status` and `instances` (`tasker.admin`
re-exports both; `tasker status`, the dashboard and the metrics exporter
read them).

Counting every (topic, status) is a pass over the whole table: over a
second on millions of rows. With `cap`, each is counted only up to `cap`
(a range of `ix_task_history` that stops there, River UI's way), and a
count that reaches it is shown as PostgreSQL's estimate (its statistics, as
of the last ANALYZE: "~") or as "at least `cap`" (">="). The oldest due
task of a topic is one index probe per topic, not a read of every due row.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from tasker import store

if TYPE_CHECKING:
    from tasker.app import Tasker
    from tasker.db import Database

COUNT_CAP = 1_000
"""What `tasker status` counts each (topic, status) up to (`--exact`: all)."""


def _age_s(now: dt.datetime, then: dt.datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)


def _instances(conn: Any, core_row: Any) -> list[dict[str, Any]]:
    out = []
    for r in store.instance_list(conn):
        age = _age_s(r.db_now, r.heartbeat)
        out.append(
            {
                "id": r.id,
                "fqdn": r.fqdn,
                "pid": r.pid,
                "topics": store.topics_of(r),
                "master_eligible": bool(r.master_eligible),
                "is_master": r.id == core_row.master_instance_id,
                "started": r.started,
                "heartbeat": r.heartbeat,
                "heartbeat_age_s": age,
                "alive": age is not None and age * 1000 <= core_row.master_out_of_date,
            }
        )
    return out


def instances(app: Tasker | Database) -> list[dict[str, Any]]:
    """Every instance row: id, fqdn, pid, topics, master flags, heartbeat age, alive."""
    with app.transaction() as conn:
        return _instances(conn, store.core_get(conn))


def _counts(
    conn: Any, topics: list[str], cap: int | None
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """({topic: {status: n}}, {topic: {status: mark}}), statuses without a
    task left out; see the module for `cap` and the marks."""
    counts: dict[str, dict[str, int]] = {}
    marks: dict[str, dict[str, str]] = {}
    if cap is None:
        for r in store.task_count_by_topic_status(conn):
            counts.setdefault(r.topic, {})[r.status] = int(r.n)
        return counts, marks
    rows = [r for r in store.task_count_capped(conn, topics=topics, cap=cap) if int(r.n)]
    full = [(r.topic, r.status) for r in rows if int(r.n) >= cap]
    guess = store.task_count_estimates(conn, pairs=full)
    for r in rows:
        n = int(r.n)
        if n >= cap:
            estimate = guess.get((r.topic, r.status), 0)
            n = max(n, estimate)
            marks.setdefault(r.topic, {})[r.status] = "~" if estimate >= cap else ">="
        counts.setdefault(r.topic, {})[r.status] = n
    return counts, marks


def status(
    app: Tasker | Database, *, counts: bool = True, cap: int | None = None
) -> dict[str, Any]:
    """The cluster at a glance.

    Keys: master_instance_id, master_fqdn, master_pid (None when unknown),
    term, lease_age_s (since the master last renewed), lease_live,
    instances (as `instances`), counts ({topic: {status: n}}: exact, a pass
    over the whole table; with `cap`, each counted up to `cap`, see the
    module; empty with `counts=False`), count_marks ({topic: {status: "~"
    or ">="}} for the counts that are not exact), oldest_due_s ({topic:
    seconds the oldest due task has waited}) and paused (sorted names of
    the paused topics).
    """
    with app.transaction() as conn:
        store.no_jit(conn)
        core_row = store.core_get(conn)
        insts = _instances(conn, core_row)
        topics = store.task_topics(conn)
        by_topic, marks = _counts(conn, topics, cap) if counts else ({}, {})
        oldest_rows = store.task_oldest_due_by_topic(conn, topics=topics)
        paused = store.topic_paused(conn)
    lease_age = _age_s(core_row.db_now, core_row.updated)
    master_id = core_row.master_instance_id
    master_pid = next((i["pid"] for i in insts if i["id"] == master_id), None)
    return {
        "master_instance_id": master_id,
        "master_fqdn": core_row.master_fqdn or None,
        "master_pid": master_pid,
        "term": core_row.term,
        "lease_age_s": lease_age,
        "lease_live": master_id is not None
        and lease_age is not None
        and lease_age * 1000 < core_row.master_out_of_date,
        "master_out_of_date_ms": core_row.master_out_of_date,
        "instance_heartbeat_ms": core_row.instance_heartbeat,
        "instances": insts,
        "counts": by_topic,
        "count_marks": marks,
        "oldest_due_s": {r.topic: _age_s(r.db_now, r.oldest) for r in oldest_rows},
        "paused": sorted(paused),
    }
