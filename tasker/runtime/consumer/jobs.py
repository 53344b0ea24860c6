"""What the consumer tracks per message, per task and per topic (plain data)."""

from __future__ import annotations

import collections
import queue
from dataclasses import dataclass, field
from typing import Any

from tasker import defaults, outcome
from tasker.context import Context
from tasker.msgq import MsgQ
from tasker.runtime.execute import Started


@dataclass(eq=False)
class Delivery:
    """One broker message and how many of its tasks are not yet written."""

    topic: str
    tag: Any
    gen: int
    message: Any
    left: int


@dataclass(eq=False)
class Job:
    """One task of a delivery, from receipt to its written outcome."""

    task_id: int
    token: int
    delivery: Delivery
    task: Started | None = None
    deadline: float = 0.0
    began: float = 0.0
    took: float = 0.0  # execution time (s), for the stats hook
    exec_began: float | None = None  # monotonic; None until exec begins (the row's `started`)
    exec_ended: float | None = None  # monotonic; when its outcome came (the row's `finished`)
    abandoned: bool = False
    cancelled: bool = False  # an admin asked it to stop
    ctx: Context | None = None  # of a thread execution, to tell it


Outcome = tuple[Job, outcome.Decision, str]
"""A finished execution: the job, its decision and its log text."""


@dataclass(eq=False)
class Lane:
    """Per-topic execution state."""

    cls: type[MsgQ]
    concurrency: int
    waiting: collections.deque[Job] = field(default_factory=collections.deque)
    ready: queue.SimpleQueue[Job | None] = field(default_factory=queue.SimpleQueue)
    running: set[Job] = field(default_factory=set)
    fixed_prefetch: int | None = None  # TASKER_PREFETCH, or None for auto
    exec_s: float | None = None  # moving average of execution time here

    @property
    def prefetch(self) -> int:
        """Tasks the master may dispatch to us beyond our slots (see defaults.PREFETCH)."""
        if self.fixed_prefetch is not None:
            return self.fixed_prefetch
        if self.exec_s is None:
            return self.concurrency
        ahead = self.concurrency * defaults.AHEAD_BUDGET_S / max(self.exec_s, 1e-4)
        return int(min(defaults.AUTO_PREFETCH_MAX, max(self.concurrency, ahead)))

    @property
    def free(self) -> int:
        """Tasks that may be started now: free slots, plus the prefetch when
        executions are short (a task started ahead then waits only briefly)."""
        short = self.exec_s is not None and self.exec_s < defaults.AHEAD_MAX_EXEC_S
        return self.concurrency + (self.prefetch if short else 0) - len(self.running)

    def timed(self, took: float) -> None:
        self.exec_s = took if self.exec_s is None else 0.8 * self.exec_s + 0.2 * took
