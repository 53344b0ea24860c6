"""A process-isolated task that forks: at its timeout the instance kills the
child's whole process group, so the forked process dies too and the slot is
free at once (it used to hold the pipe open for 5 s and outlive the instance)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tasker.runtime.execute import Started
from tasker.runtime.isolation import ChildWorker
from tests.fixtures.forks import ForksThenSpins
from tests.waiting import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purpose
        return f.read().split(") ", 1)[1][0] != "Z"


def test_the_timeout_kills_what_the_task_forked(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    worker = ChildWorker(ForksThenSpins, host="h")
    task = Started(1, ForksThenSpins.topic, json.dumps({"pidfile": str(pidfile)}), 1000, 3, 1, 1)
    try:
        worker.run(Started(2, ForksThenSpins.topic, "not json", 1000, 3, 1, 1))  # spawn first
        started = time.monotonic()
        decision, _ = worker.run(task)
        took = time.monotonic() - started
    finally:
        worker.kill()
    assert decision.transition == "retry" and "timeout" in decision.err
    assert took < 2.5  # the 1 s timeout, not 1 s plus a 5 s wait on the pipe
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not _alive(grandchild), 5, "the forked process to die")


def test_a_child_that_ends_itself_is_a_failed_run_with_its_exit_code() -> None:
    from tests.fixtures.exits import ExitOnceChild

    worker = ChildWorker(ExitOnceChild, host="h")
    try:
        for i in range(10):  # the pipe closes a moment before the child can be reaped
            decision, _ = worker.run(Started(i + 1, ExitOnceChild.topic, "{}", 5000, 3, 1, 1))
            assert decision.transition == "retry"
            assert "the execution's process died (exit code 3)" in decision.err, decision.err
        decision, _ = worker.run(Started(9, ExitOnceChild.topic, "{}", 5000, 3, 2, 1))
        assert decision.transition == "succeed"  # a new child for the next run
    finally:
        worker.kill()
