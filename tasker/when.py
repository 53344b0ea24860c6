"""Times and delays users give (publish, `ctx.exec_after`, `ctx.release`, CLI,
dashboard), checked and parsed (pure): the one home of time handling.

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
import re

from tasker.exceptions import InvalidTime

When = dt.datetime | dt.timedelta | float | int
"""An absolute time (naive means UTC), or a delay: a timedelta or seconds."""

_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_ZULU = re.compile(r"[zZ]$")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")

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


def as_utc(at: dt.datetime) -> dt.datetime:
    """`at` as aware UTC; a naive value is taken to be UTC already (as the store keeps it)."""
    if at.tzinfo is None:
        return at.replace(tzinfo=dt.timezone.utc)
    return at.astimezone(dt.timezone.utc)


# Times people type: durations (`7d`, `1h30m`) and points in time (ISO 8601,
# or a duration meaning that long ago). One parser for the CLI and the dashboard.


def parse_duration(text: str) -> dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `1w`, or sums like `1h30m`.

    Raises ValueError with a short message for anything else, including a
    span no `timedelta` can hold.
    """
    raw = text.strip().lower()
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"{_shown(text)} is not a duration (like 7d, 12h, 30m, 45s)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{_shown(text)} is longer than any date can reach") from None


def parse_when(text: str) -> dt.datetime | dt.timedelta:
    """An ISO datetime (naive = UTC; returned aware) or a duration meaning that long ago.

    A trailing `Z` and offsets like `+0100` are accepted on every supported
    Python: before 3.11, `datetime.fromisoformat` refuses both. Raises
    ValueError for anything else.
    """
    if _DURATIONS.fullmatch(text.strip().lower()):
        return parse_duration(text)  # its own error says what is wrong
    raw = _ZULU.sub("+00:00", text.strip())
    if "T" in raw or " " in raw:
        raw = _COMPACT_OFFSET.sub(r"\1:\2", raw)
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{_shown(text)} is neither an ISO datetime nor a duration ago (like 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted for an error message, cut so a huge value cannot flood it."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
