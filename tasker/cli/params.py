"""Command-line argument types: durations and points in time (parsed by
`tasker.when`, shared with the dashboard), as click types."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from tasker import defaults
from tasker.states import Status
from tasker.when import parse_duration, parse_when

STATUSES = [s.value for s in Status]
__all__ = [
    "DURATION", "PRIORITY", "ROWS", "RUNS", "STATUSES", "TIMEOUT", "WHEN", "parse_duration",
    "parse_when",
]  # fmt: skip

# Numbers as the columns hold them: a value out of range is one line and exit
# 2 here, on every database, not a driver error (SQLite raises OverflowError
# past 64 bits, PostgreSQL "integer out of range").
ROWS = click.IntRange(1, defaults.MAX_ROWS)
"""A row count: `--limit`, `--batch`."""
RUNS = click.IntRange(1, defaults.MAX_RETRY)
"""Runs a task gets: `publish --retry`, `retry --runs`."""
PRIORITY = click.IntRange(defaults.PRIORITY_MIN, defaults.PRIORITY_MAX)
TIMEOUT = click.FloatRange(0.001, defaults.MAX_TIMEOUT_S)
"""Seconds one run may take (the column holds whole ms)."""


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
