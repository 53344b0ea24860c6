"""Command-line argument types: durations and points in time, as click types."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

from tasker.states import Status

_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
STATUSES = [s.value for s in Status]


def parse_duration(text: str) -> dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `1w`, or sums like `1h30m`; ValueError otherwise."""
    raw = text.strip().lower()
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"{text!r} is not a duration (like 7d, 12h, 30m, 45s)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any date can reach") from None


_ZULU = re.compile(r"[zZ]$")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_when(text: str) -> dt.datetime | dt.timedelta:
    """An ISO datetime (naive = UTC) or a duration meaning that long ago.

    A trailing `Z` and offsets like `+0100` are accepted on every supported
    Python: before 3.11, `datetime.fromisoformat` refuses both.
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
            f"{text!r} is neither an ISO datetime nor a duration ago (like 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _When(click.ParamType):
    name = "WHEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime | dt.timedelta:
        if isinstance(value, (dt.datetime, dt.timedelta)):
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()
WHEN = _When()
