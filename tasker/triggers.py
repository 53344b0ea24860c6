"""Sweep and periodic specs as APScheduler 3 triggers (pure: time is an argument)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tasker.exceptions import ConfigurationError

CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")


def make_trigger(spec: Any, *, where: str = "spec") -> BaseTrigger:
    """A 6-field cron (seconds first), a 5-field cron, or an interval in seconds.

    `"*/1 * * * * *"` sweeps every second; `0.5` (or `"0.5"`) every half second.
    """
    if isinstance(spec, bool):
        raise ConfigurationError(f"{where}: {spec!r} is not a cron spec or seconds")
    if isinstance(spec, (int, float)) or _is_number(spec):
        seconds = float(spec)
        if seconds <= 0:
            raise ConfigurationError(f"{where}: interval must be > 0 seconds")
        return IntervalTrigger(seconds=seconds, timezone=dt.timezone.utc)
    if not isinstance(spec, str):
        raise ConfigurationError(f"{where}: {spec!r} is not a cron spec or seconds")
    parts = spec.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ConfigurationError(
            f"{where}: {spec!r} must have 6 fields (second minute hour day month weekday)"
        )
    try:
        return CronTrigger(**dict(zip(CRON_FIELDS, parts, strict=True)), timezone=dt.timezone.utc)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {spec!r}: {exc}") from None


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def fire_times(
    trigger: BaseTrigger, since: dt.datetime, until: dt.datetime, *, limit: int = 100
) -> list[dt.datetime]:
    """Fire times in (since, until], oldest first, at most `limit` (the newest kept)."""
    times: list[dt.datetime] = []
    prev = None
    nxt = trigger.get_next_fire_time(prev, since)
    while nxt is not None and nxt <= until:
        if nxt > since:
            times.append(nxt)
        prev = nxt
        nxt = trigger.get_next_fire_time(prev, nxt + dt.timedelta(microseconds=1))
    return times[-limit:]


def next_after(trigger: BaseTrigger, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after `after` (aware UTC); a trigger that
    never fires again gives a time far away rather than None."""
    nxt = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    if nxt is None:
        return after + dt.timedelta(days=3650)
    return nxt.astimezone(dt.timezone.utc)
