"""Which topics the last sweeps left with work, and when to sweep them again.

A sweep that ran out of capacity leaves its topic *full*: a NOTIFY of freed
capacity then wakes the master for it (DESIGN 5). A full topic whose
consumers hold work ahead of their slots (a prefetch) is *paced*: freed
capacity does not wake the master for it, its next sweep comes after
`defaults.BACKLOG_PACE_S` (a publish still wakes it at once), so claims are
fewer and larger (each claim is a fixed cost in the database) while the
prefetched work keeps every slot busy. A topic with cluster-wide limits, or
one whose claims a higher priority just took back, is not paced. Used by
the dispatcher's one thread.
"""

from __future__ import annotations

import time

from tasker import defaults
from tasker.runtime.capacity import Capacity


class Backlog:
    """Full and paced topics (monotonic seconds)."""

    def __init__(self) -> None:
        self._full: set[str] = set()
        self._paced: dict[str, float] = {}  # topic -> not swept again before

    def mark(self, topic: str, full: bool, cap: Capacity, *, pace: bool = True) -> None:
        """The outcome of a sweep of `topic`: whether it ran out of capacity.
        `pace=False` for a topic with cluster-wide limits (what it has in
        flight is capped, so a freed slot has nothing ahead of it) and after
        a priority take-back (the higher task must go out at once)."""
        if full:
            self._full.add(topic)
        else:
            self._full.discard(topic)
        if full and pace and cap.limit > cap.slots:  # its consumers hold work ahead
            self._paced[topic] = time.monotonic() + defaults.BACKLOG_PACE_S
        else:
            self._paced.pop(topic, None)

    def wakes(self, topic: str) -> bool:
        """Whether freed capacity of `topic` calls for a sweep now."""
        return topic in self._full and time.monotonic() >= self._paced.get(topic, 0.0)

    def wait_s(self, left: set[str]) -> float:
        """Seconds until the next sweep of topics left with work: the soonest
        paced time, or `defaults.BACKLOG_POLL_S` for one not paced."""
        now = time.monotonic()
        waits = [self._paced.get(t, now + defaults.BACKLOG_POLL_S) - now for t in left]
        return max(0.0, min(waits, default=defaults.BACKLOG_POLL_S))
