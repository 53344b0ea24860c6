"""`async def exec` in a real `tasker run` instance (PostgreSQL + RabbitMQ,
then SQLite + the folder broker): coroutines on the instance's event loop.

- 500 tasks of one topic awaiting 1 s finish in a few seconds (concurrency
  counts coroutines), each on the loop thread, with its `ctx.log`;
- short tasks started ahead (prefetch) never run more than `concurrency`
  coroutines of a topic at once;
- a coroutine over its timeout is cancelled and recorded `timeout`;
- an admin's cancel cancels the coroutine (`ctx.cancelled` is true in it)
  and ends it failed by the cancel rule;
- a coroutine that blocks the loop (`time.sleep`) is recorded as timed out
  at its timeout, the instance keeps its heartbeat, and async tasks
  published afterwards run at once (the blocked loop was replaced);
- `isolation = "process"` runs the coroutine in the child.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tasker import Tasker, admin
from tests.acceptance.cluster import Cluster, pid_alive, wait_for
from tests.fixtures.async_jobs import ALL, Few, InChild, Nap, Stall

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.async_jobs"


@pytest.fixture(scope="module")
def instance(module_cluster: Cluster) -> Iterator[tuple[Cluster, int, Tasker]]:
    (pid,) = module_cluster.start(1, module=MODULE)
    app = Tasker(module_cluster.db_url, broker=module_cluster.broker_url)
    app.register(*ALL)
    yield module_cluster, pid, app
    app.close()


def _row(cluster: Cluster, task_id: int) -> object:
    return cluster.query("SELECT * FROM task WHERE id = :i", i=task_id)[0]


def _done(cluster: Cluster, ids: list[int]) -> bool:
    return cluster.all_terminal(ids)


def test_500_coroutines_awaiting_1s_finish_in_seconds(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, pid, app = instance
    began = time.monotonic()
    ids = app.publish_many([Nap(seconds=1.0) for _ in range(500)])
    wait_for(lambda: _done(cluster, ids), 60, "500 async tasks")
    took = time.monotonic() - began
    assert cluster.counts(ids)["success"] == 500
    # One at a time would take 500 s, one per slot of a thread pool of 4 over 100 s.
    assert took < 20, f"500 one-second coroutines took {took:.1f}s"
    row = _row(cluster, ids[0])
    result = json.loads(row.result)  # type: ignore[attr-defined]
    assert result["pid"] == pid and result["thread"].startswith("tasker-async")
    assert "napping 1.0s" in row.log  # type: ignore[attr-defined]


def test_concurrency_caps_the_coroutines_running_at_once(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, _, app = instance
    ids = app.publish_many([Few(seconds=0.05) for _ in range(60)])
    wait_for(lambda: _done(cluster, ids), 60, "the capped async tasks")
    spans = [json.loads(_row(cluster, i).result) for i in ids]  # type: ignore[attr-defined]
    edges = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    assert most == 3, f"{most} coroutines of a concurrency-3 topic ran at once"


def test_async_timeout_cancels_the_coroutine(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, _, app = instance
    began = time.monotonic()
    tid = app.publish(Stall(seconds=30.0))
    wait_for(lambda: _done(cluster, [tid]), 20, "the stalled task")
    row = _row(cluster, tid)
    assert row.status == "failed" and "timeout" in row.errlog, row.errlog  # type: ignore[attr-defined]
    assert time.monotonic() - began < 15, "recorded long after its 2 s timeout"


def test_cancel_cancels_the_coroutine(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, _, app = instance
    tid = app.publish(Nap(seconds=25.0))
    wait_for(lambda: _row(cluster, tid).status == "running", 20, "the nap to start")  # type: ignore[attr-defined]
    began = time.monotonic()
    assert admin.cancel_tasks(app, [tid]).requested == [tid]
    wait_for(lambda: _done(cluster, [tid]), 15, "the cancelled nap")
    row = _row(cluster, tid)
    assert row.status == "failed" and "cancelled" in row.errlog, row.errlog  # type: ignore[attr-defined]
    assert "ctx.cancelled=True" in row.log, row.log  # type: ignore[attr-defined]
    assert time.monotonic() - began < 10, "the coroutine ran on to its end"


def test_a_coroutine_blocking_the_loop_cannot_stop_the_instance(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, pid, app = instance
    began = time.monotonic()
    blocker = app.publish(Stall(seconds=25.0, block=True))
    wait_for(lambda: _done(cluster, [blocker]), 20, "the loop-blocking task")
    row = _row(cluster, blocker)
    assert row.status == "failed" and "timeout" in row.errlog, row.errlog  # type: ignore[attr-defined]
    # Well before its 25 s sleep ends, async tasks run on a new loop.
    after = app.publish_many([Nap(seconds=0.2) for _ in range(5)])
    wait_for(lambda: _done(cluster, after), 15, "async tasks after the blocked one")
    assert cluster.counts(after)["success"] == 5
    assert time.monotonic() - began < 22, "the new tasks waited for the blocked loop"
    assert pid_alive(pid)
    beat = cluster.scalar("SELECT heartbeat FROM instance WHERE pid = :p", p=pid)
    wait_for(
        lambda: cluster.scalar("SELECT heartbeat FROM instance WHERE pid = :p", p=pid) != beat,
        15, "the instance's next heartbeat",
    )  # fmt: skip


def test_async_exec_in_a_child_process(instance) -> None:  # type: ignore[no-untyped-def]
    cluster, pid, app = instance
    tid = app.publish(InChild(seconds=0.1))
    wait_for(lambda: _done(cluster, [tid]), 60, "the process-isolated async task")
    row = _row(cluster, tid)
    assert row.status == "success", row.errlog  # type: ignore[attr-defined]
    assert json.loads(row.result)["pid"] != pid  # type: ignore[attr-defined]
    assert "ran in the child" in row.log  # type: ignore[attr-defined]
