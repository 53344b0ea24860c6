"""What the dashboard reads, and its bulk retry by filter: a keyset page of
tasks, one task split by attempt, per-topic statistics and throughput.

Like `tasker.admin`, every function takes a `Tasker` app and returns plain
data; every value reaches SQL as a bound parameter through `store`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasker import admin, states, store
from tasker.exceptions import ConfigurationError
from tasker.states import Status

if TYPE_CHECKING:
    from tasker.app import Tasker

WINDOW_S = 3600
"""Throughput and run-time percentiles look at the last hour of finishes."""

RUNS_SAMPLE = 10_000
"""Percentiles come from at most this many of the newest finishes, so their
cost stays flat however busy the hour was."""

PAGE_MAX = 500
"""The largest task page one request may ask for."""

COUNT_CAP = 1_000
"""Counts by topic and status are exact up to this; a group at the cap shows
the last whole-table count instead (see `merge_counts`)."""

REREAD_MINUTES = 2
"""Finished minutes the throughput re-reads besides the current one: a write
committed late may still land in them (its `finished` is its transaction's time)."""

_ATTEMPT_HEAD = re.compile(r"^\[attempt (\d+) on (.*?) at [^\]]*\]", re.MULTILINE)


@dataclass(frozen=True)
class TaskFilter:
    """The task list's filter: topic, statuses, created in [since, until), one id."""

    topic: str | None = None
    statuses: tuple[Status, ...] | None = None
    since: admin.TimeBound | None = None
    until: admin.TimeBound | None = None
    task_id: int | None = None


# --- tasks --------------------------------------------------------------------


def task_page(
    app: Tasker, f: TaskFilter, *, before: int | None = None, limit: int = 50
) -> dict[str, Any]:
    """One page of tasks, newest first by creation.

    Returns {"tasks": [row dicts as `admin.list_tasks`], "next_before": the
    id to pass as `before` for the next page, or None on the last page}.
    Raises ConfigurationError when `limit` is outside 1..PAGE_MAX.
    """
    if not 1 <= limit <= PAGE_MAX:
        raise ConfigurationError(f"limit must be within 1..{PAGE_MAX}, not {limit}")
    with app.transaction() as conn:
        rows = store.task_page(
            conn,
            topic=f.topic,
            statuses=f.statuses,
            since=f.since,
            until=f.until,
            task_id=f.task_id,
            before=before,
            limit=limit + 1,
        )
    tasks = [dict(r._mapping) for r in rows[:limit]]
    more = len(rows) > limit
    return {"tasks": tasks, "next_before": tasks[-1]["id"] if more else None}


def topic_exists(app: Tasker, topic: str) -> bool:
    """Whether any task of `topic` is stored."""
    with app.transaction() as conn:
        return store.task_topic_exists(conn, topic=topic)


def topic_known(app: Tasker, topic: str) -> bool:
    """Whether `topic` is one the dashboard may pause or resume: a task has
    it, it is paused, or an instance (even a silent one) serves it. Unlike
    `admin.pause`, which accepts any name, this keeps a typo in a URL from
    pausing a topic nobody has."""
    with app.transaction() as conn:
        if store.task_topic_exists(conn, topic=topic) or topic in store.topic_paused(conn):
            return True
        return any(topic in store.topics_of(r) for r in store.instance_list(conn))


def split_errlog(errlog: str) -> list[dict[str, Any]]:
    """errlog text as entries [{"attempt": n | None, "host": str | None, "text": str}].

    An entry starts at a line "[attempt N on HOST at TIME] reason" (see
    `outcome.errlog_entry`); text before the first such line (an admin note)
    is an entry of its own with attempt None.
    """
    out: list[dict[str, Any]] = []
    starts = [m.start() for m in _ATTEMPT_HEAD.finditer(errlog)]
    if not starts or starts[0] > 0:
        head = errlog[: starts[0] if starts else len(errlog)]
        if head.strip():
            out.append({"attempt": None, "host": None, "text": head.rstrip("\n")})
    for i, start in enumerate(starts):
        text = errlog[start : starts[i + 1] if i + 1 < len(starts) else len(errlog)]
        m = _ATTEMPT_HEAD.match(text)
        assert m is not None  # every start is a match of the same pattern
        out.append({"attempt": int(m.group(1)), "host": m.group(2), "text": text.rstrip("\n")})
    return out


def attempts_of(worker_fqdn: str, errlog: str, attempts: int) -> list[dict[str, Any]]:
    """Per attempt: {"attempt": n, "host": who ran it, "errors": [errlog texts]}.

    `worker_fqdn` holds one line per attempt (DESIGN 2). Entries of the
    errlog that name no attempt (admin notes) come under attempt 0.
    """
    hosts = [h for h in worker_fqdn.splitlines() if h.strip()]
    entries = split_errlog(errlog)
    n = max([attempts, len(hosts)] + [e["attempt"] or 0 for e in entries])
    rows: list[dict[str, Any]] = [
        {"attempt": i, "host": hosts[i - 1] if i <= len(hosts) else None, "errors": []}
        for i in range(1, n + 1)
    ]
    notes = [e["text"] for e in entries if not e["attempt"]]
    for e in entries:
        if e["attempt"]:
            rows[e["attempt"] - 1]["errors"].append(e["text"])
            rows[e["attempt"] - 1]["host"] = rows[e["attempt"] - 1]["host"] or e["host"]
    return ([{"attempt": 0, "host": None, "errors": notes}] if notes else []) + rows


def task_detail(app: Tasker, task_id: int) -> dict[str, Any]:
    """Every column of one task plus "attempt_log" (`attempts_of`).

    Raises TaskNotFound when there is no such id.
    """
    row = admin.get_task(app, task_id)
    row["attempt_log"] = attempts_of(row["worker_fqdn"], row["errlog"], row["attempts"])
    return row


# --- bulk retry by filter -----------------------------------------------------------


def _matching_ids(app: Tasker, f: TaskFilter) -> list[int]:
    if not f.statuses or not set(f.statuses) <= states.TERMINAL:
        raise ConfigurationError("bulk retry needs a status filter of failed and/or success")
    if f.task_id is not None:
        page = task_page(app, f, limit=1)
        return [t["id"] for t in page["tasks"]]
    with app.transaction() as conn:
        return store.task_ids_matching(
            conn,
            statuses=f.statuses,
            topic=f.topic,
            since=f.since,
            until=f.until,
            time_column="created",
        )


def count_retry_matching(app: Tasker, f: TaskFilter) -> int:
    """How many tasks `retry_matching(app, f)` would move now (the dry run):
    those whose unique key a live task holds are skipped, so not counted."""
    if f.task_id is not None or not f.statuses:
        ids = _matching_ids(app, f)
        return len(ids) - len(admin.retry_blocked(app, ids)) if ids else 0
    _matching_ids_checked(f)
    return admin.count_retry_where(app, statuses=f.statuses, **_where(f))


def retry_matching(app: Tasker, f: TaskFilter, runs: int | None = None) -> list[int]:
    """Put every task the list's filter shows back to pending; returns the ids moved.

    The filter must name failed and/or success (ConfigurationError otherwise);
    each move is the guarded transition of `admin.retry`, all of them in one
    statement (`admin.retry_where`) whatever their number.
    """
    if f.task_id is not None or not f.statuses:
        ids = _matching_ids(app, f)
        return admin.retry(app, ids, runs=runs) if ids else []
    _matching_ids_checked(f)
    return admin.retry_where(app, statuses=f.statuses, runs=runs, **_where(f))


def _matching_ids_checked(f: TaskFilter) -> None:
    if not f.statuses or not set(f.statuses) <= states.TERMINAL:
        raise ConfigurationError("bulk retry needs a status filter of failed and/or success")


def _where(f: TaskFilter) -> dict[str, Any]:
    return {"topic": f.topic, "since": f.since, "until": f.until, "time_column": "created"}


# --- overview -------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def topic_stats(status: dict[str, Any], runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per topic: counts by status, oldest due (s), p50/p95 run time (s) and
    whether it is paused (a paused topic without tasks is listed too).

    `status` is `admin.status(app)`; `runs` are (topic, seconds).
    """
    by_topic: dict[str, list[float]] = {}
    for r in runs:
        by_topic.setdefault(r.topic, []).append(float(r.seconds))
    paused = set(status.get("paused", ()))
    out = []
    for topic in sorted(set(status["counts"]) | set(by_topic) | paused):
        times = sorted(by_topic.get(topic, []))
        counts = status["counts"].get(topic, {})
        out.append(
            {
                "topic": topic,
                "counts": {s.value: counts.get(s.value, 0) for s in Status},
                "total": sum(counts.values()),
                "oldest_due_s": status["oldest_due_s"].get(topic),
                "runs_sampled": len(times),
                "p50_s": percentile(times, 0.50),
                "p95_s": percentile(times, 0.95),
                "paused": topic in paused,
            }
        )
    return out


def throughput(now: dt.datetime, rows: Sequence[Any], minutes: int) -> list[dict[str, Any]]:
    """Finishes per minute for the `minutes` minutes up to `now`, oldest first:
    [{"minute": aware datetime, "success": n, "failed": n}] with zeros filled in."""
    last = math.floor(now.timestamp() / 60)
    slots = {m: {"success": 0, "failed": 0} for m in range(last - minutes + 1, last + 1)}
    for r in rows:
        if int(r.minute) in slots and r.status in ("success", "failed"):
            slots[int(r.minute)][r.status] += int(r.n)
    return [
        {"minute": dt.datetime.fromtimestamp(m * 60, dt.timezone.utc), **counts}
        for m, counts in slots.items()
    ]


class Throughput:
    """Finishes per minute for the last `minutes` minutes, kept between reads:
    a read after the first asks the database only for the current minute and
    the `REREAD_MINUTES` before it, so its cost follows the last few minutes'
    finishes, not the hour's. Owned by one caller (not thread-safe)."""

    def __init__(self, minutes: int = WINDOW_S // 60) -> None:
        self.minutes = minutes
        self._slots: dict[int, dict[str, int]] = {}
        self._last_minute: int | None = None

    def read(self, conn: Any) -> tuple[dt.datetime, list[dict[str, Any]]]:
        """(database now, `throughput` rows oldest first) through `store`."""
        since = None
        if self._last_minute is not None:
            start = (self._last_minute - REREAD_MINUTES) * 60
            since = dt.datetime.fromtimestamp(start, dt.timezone.utc)
        now, rows = store.task_finished_per_minute(conn, since=since, window_s=WINDOW_S)
        fresh = {int(r.minute) for r in rows}
        if since is not None:
            first = math.floor(since.timestamp() / 60)
            for m in [m for m in self._slots if m >= first and m not in fresh]:
                del self._slots[m]
        for m in fresh:
            self._slots[m] = {"success": 0, "failed": 0}
        for r in rows:
            if r.status in ("success", "failed"):
                self._slots[int(r.minute)][r.status] += int(r.n)
        last = math.floor(now.timestamp() / 60)
        self._last_minute = last
        for m in [m for m in self._slots if m <= last - self.minutes]:
            del self._slots[m]
        cached = [
            SimpleRow(minute=m, status=st, n=n)
            for m, counts in self._slots.items()
            for st, n in counts.items()
        ]
        return now, throughput(now, cached, self.minutes)


@dataclass(frozen=True)
class SimpleRow:
    minute: int
    status: str
    n: int


def exact_counts(app: Tasker) -> dict[str, dict[str, int]]:
    """{topic: {status: n}} over the whole table (a full scan: seconds on millions)."""
    with app.transaction() as conn:
        rows = store.task_count_by_topic_status(conn)
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r.topic, {})[r.status] = int(r.n)
    return out


def merge_counts(
    capped: Sequence[Any], cap: int, exact: dict[str, dict[str, int]] | None
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """Counts to show, from (topic, status, n) counted up to `cap` and the last
    whole-table count (or None).

    Returns ({topic: {status: n}}, {topic: {status: mark}}): below the cap a
    count is exact and unmarked; at the cap it is the last exact count marked
    "~" when that is at least the cap, else the cap marked ">=". Statuses
    with no task are left out. (River UI's count strategy.)
    """
    counts: dict[str, dict[str, int]] = {}
    marks: dict[str, dict[str, str]] = {}
    for r in capped:
        n = int(r.n)
        if n >= cap:
            known = (exact or {}).get(r.topic, {}).get(r.status, 0)
            n = max(known, cap)
            marks.setdefault(r.topic, {})[r.status] = "~" if known >= cap else ">="
        if n:
            counts.setdefault(r.topic, {})[r.status] = n
    return counts, marks


def overview(
    app: Tasker,
    *,
    exact: dict[str, dict[str, int]] | None = None,
    rates: Throughput | None = None,
    cap: int = COUNT_CAP,
) -> dict[str, Any]:
    """Everything the overview and topics pages show, read once for all viewers.

    Keys: "status" (`admin.status`, counts from `merge_counts`), "marks"
    (which counts are approximate), "saturated" (whether a count reached the
    cap: then a whole-table count is worth running), "topics"
    (`topic_stats`), "throughput" (the last hour), "max_id" and "as_of" (the
    database clock). `rates` keeps the throughput between calls.
    """
    status = admin.status(app, counts=False)
    with app.transaction() as conn:
        topics = store.task_topics(conn)
        capped = store.task_count_capped(conn, topics=topics, cap=cap)
        max_id = store.task_max_id(conn)
        runs = store.task_recent_runs(conn, window_s=WINDOW_S, limit=RUNS_SAMPLE)
        now, per_minute = (rates or Throughput()).read(conn)
    status["counts"], marks = merge_counts(capped, cap, exact)
    return {
        "status": status,
        "marks": marks,
        "saturated": bool(marks),
        "topics": topic_stats(status, runs),
        "throughput": per_minute,
        "max_id": max_id,
        "as_of": now,
    }
