"""Times and delays users give (publish, `ctx.exec_after`, `ctx.release`, CLI), checked (pure).

A task may be planned at any instant a `datetime` can hold (year 1 to 9999),
as an absolute time or as a delay from the database clock. Anything else,
a NaN or infinite delay, one that lands past year 9999, a type that is not a
time, is refused where it is given with `InvalidTime`, so a bad value never
reaches a status write (where it would fail a whole batch).
"""

from __future__ import annotations

import datetime as dt
import math
import numbers

from tasker.exceptions import InvalidTime

When = dt.datetime | dt.timedelta | float | int
"""An absolute time (naive means UTC), or a delay: a timedelta or seconds."""

_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc)
# A day of margin each side: the database adds the delay to its own clock,
# which may differ from ours by a little, and SQLite's date functions stop at 9999.


def plan(value: When | None, *, what: str = "exec_after") -> tuple[dt.datetime | None, int]:
    """`(at, delay_ms)`: an aware UTC datetime and 0, or None and a delay in ms
    (possibly negative: already due). None plans for now: `(None, 0)`.

    Raises `InvalidTime` (a `ValueError`) naming `what` for a value that is
    not a time, not finite, or outside what a datetime can hold.
    """
    if value is None:
        return None, 0
    if isinstance(value, dt.datetime):
        at = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        try:
            return at.astimezone(dt.timezone.utc), 0
        except OverflowError:  # e.g. 9999-12-31T23:00-12:00 is past year 9999 in UTC
            raise InvalidTime(
                f"{what} {value.isoformat()} lands outside the years 1 to 9999 in UTC"
            ) from None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidTime(
            f"{what} must be a datetime, a timedelta or seconds, not {type(value).__name__}"
        )
    return None, delay_ms(seconds, what=what)


def delay_ms(seconds: float, *, what: str = "delay") -> int:
    """A delay in seconds as whole milliseconds, checked as `plan` says."""
    if not math.isfinite(seconds):
        raise InvalidTime(f"{what} must be a finite number of seconds, not {seconds!r}")
    now = dt.datetime.now(dt.timezone.utc)
    latest, earliest = (_LATEST - now).total_seconds(), (_EARLIEST - now).total_seconds()
    if not earliest <= seconds <= latest:
        raise InvalidTime(
            f"{what} of {seconds:g}s lands outside the years 1 to 9999 that a datetime can hold"
        )
    return round(seconds * 1000)
