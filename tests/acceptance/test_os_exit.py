"""`os._exit()` in a task (docs/discussions/fault-isolation.md): in a thread
it ends the instance's process, and the task is rescued by another instance,
nothing lost; under `isolation = "process"` only the child dies, and the
instance records it as a failed run and goes on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasker import Tasker
from tests.acceptance.cluster import Cluster, wait_for
from tests.fixtures.exits import Beside, ExitOnce, ExitOnceChild

pytestmark = [pytest.mark.acceptance, pytest.mark.pg, pytest.mark.rabbit]


@pytest.fixture
def app(pg_url: str, amqp_url: str) -> Iterator[Tasker]:
    a = Tasker(pg_url, broker=amqp_url)
    a.register(ExitOnce, ExitOnceChild, Beside)
    yield a
    a.close()


def test_os_exit_in_a_thread_ends_the_instance_and_the_task_is_rescued(
    pg_cluster: Cluster, app: Tasker
) -> None:
    pg_cluster.set_timings(2000, 500)
    pg_cluster.start(2, module="tests.fixtures.exits")
    wait_for(pg_cluster.master, 10, "a master")
    tid = app.publish(ExitOnce())
    beside = app.publish_many([Beside(n=i) for i in range(40)])
    dead = wait_for(lambda: [p for p in pg_cluster.procs if p.poll() is not None], 30,
                    "the instance that ran it to exit")  # fmt: skip
    assert [p.returncode for p in dead] == [3]  # os._exit(3): the whole process, at once
    res = app.result(tid, timeout=60)  # rescued by the other instance, then run again
    assert (res.success, res.result) == (True, "second run")
    row = pg_cluster.query("SELECT attempts, errlog FROM task WHERE id = :i", i=tid)[0]
    assert row.attempts == 2 and "stopped beating" in row.errlog and "rescued" in row.errlog
    runs = pg_cluster.effect_pids("exit")
    assert runs[0] == dead[0].pid and runs[1] != dead[0].pid
    wait_for(lambda: pg_cluster.all_terminal(beside), 60, "the tasks beside it")
    assert pg_cluster.counts(beside)["success"] == len(beside)  # nothing lost


def test_os_exit_under_process_isolation_is_a_failed_run_and_the_instance_goes_on(
    pg_cluster: Cluster, app: Tasker
) -> None:
    (pid,) = pg_cluster.start(1, module="tests.fixtures.exits")
    tid = app.publish(ExitOnceChild())
    res = app.result(tid, timeout=60)
    assert (res.success, res.result) == (True, "second run")
    row = pg_cluster.query("SELECT attempts, errlog FROM task WHERE id = :i", i=tid)[0]
    assert row.attempts == 2 and "process died (exit code 3)" in row.errlog, row.errlog
    assert all(p.poll() is None for p in pg_cluster.procs)  # the instance lives on
    assert pid not in pg_cluster.effect_pids("exit")  # each run in a child of its own
