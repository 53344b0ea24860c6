"""The dispatcher's memory of topics left with work (tasker.runtime.backlog)."""

from __future__ import annotations

import time

from tasker import defaults
from tasker.runtime.backlog import Backlog
from tasker.runtime.capacity import Capacity

PREFETCHING = Capacity(slots=8, limit=264, concurrency=8, soon=264, consumers=1)
NO_PREFETCH = Capacity(slots=8, limit=8, concurrency=8, soon=8, consumers=1)


def test_a_full_topic_without_prefetch_is_woken_by_freed_capacity_at_once() -> None:
    b = Backlog()
    b.mark("t", True, NO_PREFETCH)
    assert b.wakes("t")
    assert abs(b.wait_s({"t"}) - defaults.BACKLOG_POLL_S) < 1e-6


def test_a_full_prefetching_topic_is_paced() -> None:
    b = Backlog()
    b.mark("t", True, PREFETCHING)
    assert not b.wakes("t")
    assert 0 < b.wait_s({"t"}) <= defaults.BACKLOG_PACE_S
    deadline = time.monotonic() + 5
    while not b.wakes("t"):  # the pace runs out
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_topic_no_longer_full_is_neither_woken_nor_paced() -> None:
    b = Backlog()
    b.mark("t", True, PREFETCHING)
    b.mark("t", False, PREFETCHING)
    assert not b.wakes("t")
    assert not Backlog().wakes("never-swept")


def test_a_topic_asked_not_to_be_paced_is_woken_at_once() -> None:
    b = Backlog()
    b.mark("t", True, PREFETCHING, pace=False)
    assert b.wakes("t")
