"""Times people type: durations (`7d`, `1h30m`) and points in time (ISO 8601,
or a duration meaning that long ago). One parser for the CLI and the dashboard.
"""

from __future__ import annotations

import datetime as dt
import re

_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_ZULU = re.compile(r"[zZ]$")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


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
