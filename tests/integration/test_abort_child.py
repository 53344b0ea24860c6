"""Abort of a process-isolated execution, with a real child process: killed
as soon as the request is seen, or never started when the request came
while the child was starting (that child is kept for the next run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasker import outcome
from tasker.runtime.execute import Started
from tasker.runtime.isolation import ChildWorker
from tests.acceptance.cluster import pid_alive, wait_for
from tests.fixtures.jobs import Hard


def task(timeout_ms: int = 60_000) -> Started:
    return Started(1, Hard.topic, "{}", timeout_ms, 3, 1, 7)


def test_a_running_child_is_killed_when_the_task_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("TASKER_TEST_EFFECTS", str(effects))
    worker = ChildWorker(Hard, host="h")
    began = time.monotonic()
    try:
        # The request comes once exec is spinning in the child (it wrote its effect).
        decision, _log = worker.run(task(), cancelled=lambda: effects.exists())
    finally:
        worker.kill()
    assert time.monotonic() - began < 30  # far from the 60 s timeout
    assert decision.transition == "fail" and decision.take == 0
    assert outcome.CANCELLED_REASON in decision.err and "killed" in decision.err
    child = int(effects.read_text().split()[3])
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to be gone")


def test_a_cancel_while_the_child_starts_runs_nothing_and_keeps_it() -> None:
    worker = ChildWorker(Hard, host="h")
    try:
        decision, _log = worker.run(task(), cancelled=lambda: True)
        assert outcome.CANCELLED_REASON in decision.err and "never began" in decision.err
        proc = worker._proc
        assert proc is not None and proc.is_alive()  # kept for the next run
        decision, _log = worker.run(Started(2, Hard.topic, '{"spin": false}', 60_000, 3, 1, 8))
        assert decision.transition == "succeed" and worker._proc is proc
    finally:
        worker.kill()
