"""The pure rules of priorities under prefetch (`runtime.capacity`): when a
sweep must look for due tasks above what it claimed ahead, and what it then
knows about the lowest priority still waiting on a consumer."""

from __future__ import annotations

from tasker.runtime.capacity import lowest_ahead, must_probe_priorities


def test_when_a_sweep_looks_for_higher_priorities() -> None:
    assert must_probe_priorities(None, 10, 0)  # a new term knows nothing yet
    assert must_probe_priorities(0, 0, None)  # claimed nothing: the due probe asks
    assert not must_probe_priorities(0, 10, 0)  # one priority: the fast path
    assert not must_probe_priorities(5, 10, 3)  # claimed lower than what waits
    assert must_probe_priorities(0, 10, 5)  # claimed higher: higher may be due too


def test_the_lowest_priority_ahead() -> None:
    assert lowest_ahead(None, 3, None) is None  # unknown until a probe
    assert lowest_ahead(None, 3, 2) == 2
    assert lowest_ahead(0, 5, 5) == 5  # everything below 5 was taken back
    assert lowest_ahead(5, 2, None) == 2
    assert lowest_ahead(5, None, None) == 5
    assert lowest_ahead(5, 5, 4) == 5  # nothing of ours was below 4
