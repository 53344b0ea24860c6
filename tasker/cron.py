"""Fire times of `spec` and `periodic`: crontab lines read in a time zone, or intervals.

Pure functions: time is always an argument and every result is an aware UTC
`datetime`. The cron arithmetic is cronsim's (https://github.com/cuu508/cronsim),
which follows Debian's Vixie cron: 5 fields (minute hour day-of-month month
day-of-week) or 6 with seconds first, weekday 0 and 7 = Sunday, names SUN-SAT
and JAN-DEC, and when day-of-month and day-of-week are both restricted
(neither starts with `*`) a day matches either.

Daylight saving time follows Debian cron (cron(8), "Daylight Saving Time and
other time changes"), for 5- and 6-field lines alike:

- A *fixed-time* line (neither the minute nor the hour field starts with `*`,
  e.g. `30 2 * * *`) is read on the wall clock: a local time skipped by a
  spring-forward change fires at the first instant after the gap (03:00 local
  in Berlin), and a local time that a fall-back change repeats fires once, at
  its first occurrence.
- A *wildcard* line (`*/15 * * * *`, `5 * * * *`) runs on elapsed time: it
  fires at every real instant whose local time matches, so an hourly job runs
  twice in a repeated hour and not at all in a skipped one, every hour apart.

Intervals (`spec = 0.5`, `"30"`) are seconds counted from 1970-01-01 UTC, so
every instance computes the same fire times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tasker.exceptions import ConfigurationError
from tasker.when import as_utc

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
CATCH_UP = ("latest", "all", "none")
CATCH_UP_LIMIT = 1000
"""`catch_up = "all"` inserts at most this many missed fire times (the newest)."""
ON_TIME_S = 60.0
"""A fire time younger than this is due now, not missed: a change of master
takes seconds, and its fire times are inserted whatever `catch_up` says."""
MAX_SPEC_CHARS = 200
MIN_INTERVAL_S = 0.001
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = "second minute hour day-of-month month day-of-week"
_STEP_LIMIT = 100_000  # candidates one answer may skip (a repeated hour of every second)


def zone(name: Any, *, where: str = "timezone") -> dt.tzinfo:
    """The zone of an IANA name ("Europe/Berlin", "UTC"); `ConfigurationError` naming `where`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"{where}: {name!r} is not an IANA time zone name")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"{where}: unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')"
        ) from None


def check_catch_up(value: Any, *, where: str = "catch_up") -> str:
    """`value` if it is one of CATCH_UP, else `ConfigurationError` naming `where`."""
    if not isinstance(value, str) or value not in CATCH_UP:
        raise ConfigurationError(f"{where}: {value!r} must be one of {', '.join(CATCH_UP)}")
    return value


class Schedule:
    """Fire times of one spec: `next_after` and `latest_at_or_before`, aware UTC in and out."""

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after `after`; None if there is none within 50 years."""
        raise NotImplementedError

    def latest_at_or_before(self, when: dt.datetime) -> dt.datetime | None:
        """The newest fire time at or before `when`; None if there is none within 50 years."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Interval(Schedule):
    """Every `period_us` microseconds since 1970-01-01 UTC."""

    period_us: int

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        n = _micros(after) // self.period_us + 1
        return _from_micros(n * self.period_us)

    def latest_at_or_before(self, when: dt.datetime) -> dt.datetime | None:
        n = _micros(when) // self.period_us
        return _from_micros(n * self.period_us)


@dataclasses.dataclass(frozen=True)
class Cron(Schedule):
    """A 6-field crontab line (seconds first) read in `tz`; see the module docstring."""

    expr: str
    tz: dt.tzinfo
    wall_clock: bool  # fixed-time line in a zone with DST: Debian's wall-clock rules

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        after = as_utc(after)
        if not self.wall_clock:
            return _first(CronSim(self.expr, after.astimezone(self.tz)))
        for _, wall in zip(range(_STEP_LIMIT), _walk(self.expr, self._wall(after)), strict=False):
            at = self._instant(wall)
            if at > after:  # not already fired in the first pass of a repeated hour
                return at
        return None

    def latest_at_or_before(self, when: dt.datetime) -> dt.datetime | None:
        when = as_utc(when)
        start = when.replace(microsecond=0) + dt.timedelta(seconds=1)  # cronsim: strictly before
        if self.wall_clock:
            found = None
            walls = _walk(self.expr, self._wall(start), reverse=True)
            for _, wall in zip(range(_STEP_LIMIT), walls, strict=False):
                found = self._instant(wall)
                if found <= when:  # a skipped wall time maps to the gap's end
                    break
        else:
            found = _first(CronSim(self.expr, start.astimezone(self.tz), reverse=True))
        if found is None or found > when:
            return None
        # a wall time read after `when` may map before it (the repeated hour): step forward
        for _ in range(_STEP_LIMIT):
            nxt = self.next_after(found)
            if nxt is None or nxt > when:
                break
            found = nxt
        return found

    def _wall(self, at: dt.datetime) -> dt.datetime:
        return at.astimezone(self.tz).replace(tzinfo=None)

    def _instant(self, wall: dt.datetime) -> dt.datetime:
        """The instant a wall-clock fire time means: its first occurrence, or, when a
        spring-forward change skipped it, the first instant after the gap."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if self._wall(first) == wall:
            other = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
            return min(first, other)
        lo, hi = sorted((first, wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)))
        while hi - lo > dt.timedelta(seconds=1):  # the gap's end: first instant showing >= wall
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if self._wall(mid) >= wall:
                hi = mid
            else:
                lo = mid
        return hi


def parse(spec: Any, timezone: str = "UTC", *, where: str = "spec") -> Schedule:
    """A `Schedule` for a crontab line, an `@daily`-style macro, or an interval in seconds.

    `spec`: 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
    first, a macro (@yearly @monthly @weekly @daily @hourly), or seconds as an int,
    float or numeric text (at least 0.001). `timezone` is an IANA name. Raises
    `ConfigurationError` naming `where` and the problem; a line that can never
    fire is refused too.
    """
    tz = zone(timezone, where=f"{where} timezone")
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise ConfigurationError(f"{where}: {spec!r} is not a crontab line or seconds")
    if isinstance(spec, (int, float)) or _is_number(spec):
        return _interval(float(spec), where)
    if len(spec) > MAX_SPEC_CHARS or "\x00" in spec:
        raise ConfigurationError(f"{where}: not a crontab line ({len(spec)} characters)")
    line = MACROS.get(spec.strip().lower(), spec)
    fields = line.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigurationError(
            f"{where}: {spec!r} has {len(fields)} fields; a crontab line has 5 "
            "(minute hour day-of-month month day-of-week) or 6 (seconds first)"
        )
    expr = " ".join(fields)
    try:
        CronSim(expr, dt.datetime(2000, 1, 1))
    except (CronSimError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {spec!r}: {_explain(exc)}") from None
    fixed = not fields[1].startswith("*") and not fields[2].startswith("*")
    schedule = Cron(expr, tz, wall_clock=fixed and tz is not UTC)
    if schedule.next_after(EPOCH.replace(year=2000)) is None:
        raise ConfigurationError(f"{where}: {spec!r} never fires")
    return schedule


def next_fire(spec: Any | Schedule, timezone: str, after: dt.datetime) -> dt.datetime | None:
    """The first fire time of `spec` read in `timezone` strictly after `after` (aware UTC;
    naive means UTC), as aware UTC; None if none within 50 years. `ConfigurationError`
    for a bad spec or zone."""
    return _schedule(spec, timezone).next_after(after)


@dataclasses.dataclass(frozen=True)
class FirePlan:
    """What a master does for one periodic topic now: the fire times to insert
    (aware UTC, oldest first) and the fire time to remember in
    `topic.periodic_last` (aware UTC; None: nothing to remember yet)."""

    insert: list[dt.datetime]
    remember: dt.datetime | None


def plan_fire_times(
    periodic: Any | Schedule,
    timezone: str,
    last_inserted: dt.datetime | None,
    now: dt.datetime,
    catch_up: str,
    *,
    on_time_s: float = ON_TIME_S,
    limit: int = CATCH_UP_LIMIT,
) -> FirePlan:
    """The periodic fire times a master should insert now, and what it remembers.

    `last_inserted` is the newest fire time the master remembers for the topic
    (`topic.periodic_last`; None for a new topic). When every fire time in
    (last_inserted, now] is younger than `on_time_s` (a change of master takes
    seconds) they are all due and all inserted. Otherwise fire times passed
    while no master ran, and `catch_up` (DESIGN section 7) decides for the whole
    backlog: "latest" inserts exactly one row, the newest fire time, whatever
    the gap; "all" every one (at most `limit`, the newest), oldest first;
    "none" none, except the newest when it is itself younger than `on_time_s`.
    A new topic starts at its latest fire time only when that is due (a
    nightly job deployed at noon waits for the night). The fire time to
    remember is the newest at or before `now` (never older than
    `last_inserted`), inserted or skipped, so a skipped backlog is decided
    once. Inserting under the unique (topic, periodic_at) key makes a second
    master's identical answer a no-op. `ConfigurationError` for a bad spec,
    zone or policy.
    """
    check_catch_up(catch_up)
    schedule = _schedule(periodic, timezone)
    now = as_utc(now)
    due_after = now - dt.timedelta(seconds=on_time_s)
    newest = schedule.latest_at_or_before(now)
    last = None if last_inserted is None else as_utc(last_inserted)
    if newest is None or (last is not None and newest <= last):
        return FirePlan([], last)
    if last is None:
        return FirePlan([newest] if newest > due_after else [], newest)
    missed = schedule.latest_at_or_before(due_after)
    if missed is None or missed <= last:  # no gap: every fire time since `last` is on time
        return FirePlan(sorted(_backwards(schedule, now, last, limit)), newest)
    if catch_up == "all":
        return FirePlan(sorted(_backwards(schedule, now, last, limit)), newest)
    if catch_up == "latest" or newest > due_after:
        return FirePlan([newest], newest)
    return FirePlan([], newest)


def _backwards(
    schedule: Schedule, until: dt.datetime, since: dt.datetime, limit: int
) -> Iterator[dt.datetime]:
    """Fire times in (since, until], newest first, at most `limit`."""
    at = schedule.latest_at_or_before(until)
    for _ in range(limit):
        if at is None or at <= since:
            return
        yield at
        at = schedule.latest_at_or_before(at - dt.timedelta(microseconds=1))


def _schedule(spec: Any | Schedule, timezone: str) -> Schedule:
    return spec if isinstance(spec, Schedule) else parse(spec, timezone)


def _interval(seconds: float, where: str) -> Interval:
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL_S:
        raise ConfigurationError(
            f"{where}: an interval must be a finite number of seconds >= {MIN_INTERVAL_S}"
        )
    if seconds > 366 * 86400:
        raise ConfigurationError(f"{where}: an interval longer than a year; use a crontab line")
    return Interval(round(seconds * 1_000_000))


def _walk(expr: str, start: dt.datetime, reverse: bool = False) -> Iterator[dt.datetime]:
    yield from CronSim(expr, start, reverse=reverse)


def _first(it: CronSim) -> dt.datetime | None:
    try:
        found = next(it)
    except StopIteration:
        return None
    return found.astimezone(UTC) if found.tzinfo is not None else found


def _explain(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("Bad "):
        return f"bad {text[4:]} field (fields: {_FIELDS}; the second is optional)"
    return text


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _micros(at: dt.datetime) -> int:
    delta = as_utc(at) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)
