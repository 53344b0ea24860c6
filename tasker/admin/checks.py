"""The argument checks of `tasker.admin`: what scripts, the CLI and the
dashboard give is refused with a ConfigurationError naming it, before any
SQL (a value the column cannot hold would otherwise be a database error)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from tasker import when
from tasker.exceptions import ConfigurationError
from tasker.states import Status

TimeBound = dt.datetime | dt.timedelta
"""An absolute time (naive = UTC), or a span before the database clock's now."""


def statuses(value: str | Status | Iterable[str | Status] | None) -> list[Status] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, Status)) else list(value)
    try:
        return [Status(s) for s in items]
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise ConfigurationError(f"unknown status in {items!r} (one of: {known})") from None


def aware(value: TimeBound | None) -> TimeBound | None:
    return when.as_utc(value) if isinstance(value, dt.datetime) else value


def ids(ids: Iterable[int]) -> list[int]:
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ConfigurationError(f"task ids are integers, not {i!r}")
        if not -(2**63) <= i < 2**63:  # the id column is a bigint
            raise ConfigurationError(f"task ids are 64-bit integers, not {i}")
        out.append(i)
    return sorted(set(out))


def check_count(name: str, value: Any, low: int, high: int) -> None:
    """ConfigurationError unless `value` is an int from `low` to `high` (what
    the column or the LIMIT holds: a bigger one is a database error)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, not {value!r}"[:200])
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be {low} to {high}, not {value}")
