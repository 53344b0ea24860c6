"""Query values of the dashboard, checked before anything reaches the database.

Every page and API call parses its query (or JSON body) here; anything
malformed is a `BadRequest` with a short message, which the server answers
with 400. Values are parsed into Python types only: SQL sees them later as
bound parameters, through `tasker.admin`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasker import topics, when
from tasker.states import Status
from tasker.web import views
from tasker.web.views import TaskFilter

MAX_VALUE_CHARS = 1000
MAX_ID = 2**63 - 1
FILTER_KEYS = frozenset({"topic", "status", "since", "until", "q"})
LIST_KEYS = FILTER_KEYS | {"before", "limit"}
PURGE_KEYS = frozenset({"older_than", "status"})
PURGE_STATUSES = (Status.SUCCESS, Status.FAILED)


class BadRequest(Exception):
    """A query value the dashboard cannot use; the message says which and why."""


@dataclass(frozen=True)
class TaskQuery:
    """The task list's query: a filter, a keyset cursor and a page size."""

    filter: TaskFilter
    before: int | None = None
    limit: int = 50
    raw: tuple[tuple[str, str], ...] = ()
    """The filter's values as given (statuses joined by commas), for links and forms."""

    def filter_values(self) -> dict[str, str]:
        return dict(self.raw)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _grouped(items: Iterable[tuple[str, Any]], allowed: frozenset[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in items:
        if key not in allowed:
            raise BadRequest(
                f"unknown parameter {_short(key)} (known: {', '.join(sorted(allowed))})"
            )
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise BadRequest(f"{key}: expected text, not {type(v).__name__}")
            text = str(v)
            if len(text) > MAX_VALUE_CHARS:
                raise BadRequest(f"{key}: value longer than {MAX_VALUE_CHARS} characters")
            if text.strip():
                out.setdefault(key, []).append(text.strip())
    for key, values in out.items():
        if key != "status" and len(values) > 1:
            raise BadRequest(f"{key}: given more than once")
    return out


def _one(values: dict[str, list[str]], key: str) -> str | None:
    return values[key][0] if key in values else None


def parse_int(key: str, text: str | None, low: int = 1, high: int = MAX_ID) -> int | None:
    """A decimal integer within [low, high] (a leading '#' is allowed for ids)."""
    if text is None:
        return None
    digits = text[1:] if text.startswith("#") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise BadRequest(f"{key}: {_short(text)} is not a whole number")
    value = int(digits)
    if not low <= value <= high:
        raise BadRequest(f"{key}: {value} is outside {low}..{high}")
    return value


def parse_topic(text: str | None) -> str | None:
    """A topic as DESIGN 7 allows it (`topics.topic_problem`, the one rule)."""
    if text is None:
        return None
    problem = topics.topic_problem(text)
    if problem is not None:
        raise BadRequest(f"topic: {problem}"[:300])
    return text


def parse_statuses(
    values: list[str] | None, allowed: Iterable[Status] = tuple(Status)
) -> tuple[Status, ...] | None:
    """Statuses given repeated or comma-separated, each one of `allowed`."""
    if not values:
        return None
    allowed = tuple(allowed)
    out: list[Status] = []
    for item in (p.strip() for v in values for p in v.split(",")):
        match = next((s for s in allowed if s.value == item), None)
        if match is None:
            known = ", ".join(s.value for s in allowed)
            raise BadRequest(f"status: {_short(item)} is not one of {known}")
        if match not in out:
            out.append(match)
    return tuple(out)


MAX_SPAN = dt.timedelta(days=100 * 366)
"""The longest duration a query may give: a century, beyond any retention and
well inside every database's date range."""


def _bounded(key: str, span: dt.timedelta) -> dt.timedelta:
    if span > MAX_SPAN:
        raise BadRequest(f"{key}: longer than 100 years")
    return span


def parse_when(key: str, text: str | None) -> dt.datetime | dt.timedelta | None:
    """An ISO datetime or a duration ago (see `tasker.when`), within a century."""
    if text is None:
        return None
    try:
        value = when.parse_when(text)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{key}: {exc}") from None
    return _bounded(key, value) if isinstance(value, dt.timedelta) else value


def parse_filter(items: Iterable[tuple[str, Any]]) -> TaskQuery:
    """The filter of the task list alone (bulk retry); BadRequest when malformed."""
    v = _grouped(items, FILTER_KEYS)
    return TaskQuery(filter=_filter(v), raw=raw_filter(v))


def _filter(v: dict[str, list[str]]) -> TaskFilter:
    return TaskFilter(
        topic=parse_topic(_one(v, "topic")),
        statuses=parse_statuses(v.get("status")),
        since=parse_when("since", _one(v, "since")),
        until=parse_when("until", _one(v, "until")),
        task_id=parse_int("q", _one(v, "q")),
    )


def parse_task_query(items: Iterable[tuple[str, Any]]) -> TaskQuery:
    """Filter, `before` and `limit` (1..500, default 50) of /tasks and /api/tasks."""
    v = _grouped(items, LIST_KEYS)
    limit = parse_int("limit", _one(v, "limit"), 1, views.PAGE_MAX)
    return TaskQuery(
        filter=_filter(v),
        before=parse_int("before", _one(v, "before")),
        limit=50 if limit is None else limit,
        raw=raw_filter(v),
    )


def raw_filter(v: dict[str, list[str]]) -> tuple[tuple[str, str], ...]:
    """The filter keys of grouped values, as text (status joined by commas)."""
    return tuple((k, ",".join(v[k])) for k in sorted(FILTER_KEYS) if k in v)


def parse_purge(items: Iterable[tuple[str, Any]]) -> tuple[dt.timedelta, tuple[Status, ...]]:
    """`older_than` (a duration, required) and `status` (success and/or failed;
    default success) of a purge."""
    v = _grouped(items, PURGE_KEYS)
    text = _one(v, "older_than")
    if text is None:
        raise BadRequest("older_than: required (like 7d)")
    try:
        older_than = _bounded("older_than", when.parse_duration(text))
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"older_than: {exc}") from None
    return older_than, parse_statuses(v.get("status"), PURGE_STATUSES) or (Status.SUCCESS,)


def json_items(body: Any) -> list[tuple[str, Any]]:
    """The (key, value) pairs of a JSON object body; BadRequest for anything else."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    return [(str(k), v) for k, v in body.items()]
