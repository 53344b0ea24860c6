"""When the dispatcher sweeps a topic: its `spec` as a trigger (pure: time is an argument).

A class's `spec` (a crontab line with seconds, or a number of seconds)
becomes an APScheduler 3 trigger object: `IntervalTrigger` for a number,
counted from the epoch so every master agrees, or `ScheduleTrigger` over
`tasker.cron` for a crontab line, so its semantics (Sunday = 0 or 7,
day-of-month OR weekday, time zones, DST) are `tasker.cron`'s. No
APScheduler scheduler runs: the dispatcher's own loop asks `next_after` for
each topic's next sweep. Periodic inserts do not come through here; they
read `tasker.cron` directly (see `periodic`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tasker import cron

_TICK = dt.timedelta(microseconds=1)


class ScheduleTrigger(BaseTrigger):
    """A `cron.Schedule` with APScheduler's trigger interface (fire times as aware UTC)."""

    def __init__(self, schedule: cron.Schedule, spec: str) -> None:
        self.schedule = schedule
        self.spec = spec

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        """The first fire time at or after `now`, or just after the previous one when
        that is earlier (APScheduler's CronTrigger contract, kept so that
        `fire_times` and `next_after` treat both kinds of trigger alike)."""
        start = now
        if previous_fire_time is not None:
            start = min(now, previous_fire_time + _TICK)
            if start == previous_fire_time:
                start += _TICK
        return self.schedule.next_after(start - _TICK)

    def __str__(self) -> str:
        return f"cron[{self.spec}]"


def make_trigger(spec: Any, *, where: str = "spec", timezone: str = "UTC") -> BaseTrigger:
    """A trigger for a crontab line read in `timezone` (an IANA name), or an interval.

    `"*/1 * * * * *"` sweeps every second, `"0 3 * * 0"` fires at 03:00 every
    Sunday; `0.5` (or `"0.5"`) every half second, counted from 1970-01-01 UTC so
    that every instance agrees. See `tasker.cron.parse` for what is accepted;
    raises `ConfigurationError` naming `where`.
    """
    schedule = cron.parse(spec, timezone, where=where)
    if isinstance(schedule, cron.Interval):
        return IntervalTrigger(
            seconds=schedule.period_us / 1_000_000, start_date=cron.EPOCH, timezone=cron.UTC
        )
    return ScheduleTrigger(schedule, str(spec))


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
        nxt = trigger.get_next_fire_time(prev, nxt + _TICK)
    return times[-limit:]


def next_after(trigger: BaseTrigger, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after `after` (aware UTC); a trigger that
    never fires again gives a time far away rather than None."""
    # APScheduler 3 is untyped: this is BaseTrigger's documented return type.
    nxt: dt.datetime | None = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    if nxt is None:
        return after + dt.timedelta(days=3650)
    return nxt.astimezone(dt.timezone.utc)
