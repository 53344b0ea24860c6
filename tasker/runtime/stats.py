"""The stats hook: called with (topic, status, time, duration) on publish and on every finish."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class StatsHook(Protocol):
    def __call__(self, topic: str, status: str, at: dt.datetime, duration_s: float) -> None: ...


class Stats:
    """Wraps the user's callable so a failing hook never breaks task processing."""

    def __init__(self, fn: Callable[..., Any] | None) -> None:
        self._fns: list[Callable[..., Any]] = [fn] if fn is not None else []

    @property
    def active(self) -> bool:
        return bool(self._fns)

    def add(self, fn: Callable[..., Any]) -> None:
        self._fns.append(fn)

    def __call__(self, topic: str, status: str, at: dt.datetime, duration_s: float) -> None:
        for fn in self._fns:
            try:
                fn(topic, status, at, duration_s)
            except Exception:
                log.exception("stats hook failed", extra={"action": "stats_failed"})


def as_hook(fn: Any) -> Stats:
    if fn is not None and not callable(fn):
        raise TypeError("stats must be callable with (topic, status, time, duration)")
    return Stats(fn)
