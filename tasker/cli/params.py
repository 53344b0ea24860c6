"""Command-line argument types: durations and points in time (parsed by
`tasker.when`, shared with the dashboard), as click types."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from tasker.states import Status
from tasker.when import parse_duration, parse_when

STATUSES = [s.value for s in Status]
__all__ = ["DURATION", "STATUSES", "WHEN", "parse_duration", "parse_when"]


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
