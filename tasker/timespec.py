"""Times people type: durations (`7d`, `1h30m`) and points in time (ISO 8601,
or a duration meaning that long ago). Shared by the CLI and the dashboard.
"""

from __future__ import annotations

import datetime as dt
import re

_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)([wdhms])")

MAX_SPAN = dt.timedelta(days=100 * 366)
"""The longest duration accepted: a century (far beyond any retention, and
small enough that `now - span` stays inside every database's date range)."""


def parse_duration(text: str) -> dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `1w`, or sums like `1h30m`.

    Raises ValueError (with a short message) for anything else, including a
    span longer than `MAX_SPAN`.
    """
    raw = text.strip().lower()
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"{_short(text)} is not a duration (like 7d, 12h, 30m, 45s)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds > MAX_SPAN.total_seconds():
        raise ValueError(f"{_short(text)} is longer than 100 years")
    return dt.timedelta(seconds=seconds)


def parse_when(text: str) -> dt.datetime | dt.timedelta:
    """An ISO 8601 datetime (naive = UTC; returned aware) or a duration ago.

    Raises ValueError for anything else.
    """
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{_short(text)} is neither an ISO datetime nor a duration ago (like 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _short(text: str, limit: int = 40) -> str:
    """`text` quoted for an error message, cut so a huge value cannot flood a log."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
