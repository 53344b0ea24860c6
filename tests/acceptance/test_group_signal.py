"""A signal to the whole process group is a graceful stop (DESIGN 6).

systemd's default KillMode=control-group sends SIGTERM to every process of the
service (`kill -TERM -PGID`), and Ctrl-C in a terminal sends SIGINT to the
foreground group. The child running a process-isolated execution gets the
signal too: it must not die of it. The execution finishes within the shutdown
grace and ends `success`, no run charged, and the instance exits 0. Past the
grace the task is handed back, uncharged, and no child is left behind.
"""

from __future__ import annotations

import signal

import pytest

from tasker import Tasker
from tests.acceptance.cluster import Cluster, pid_alive, wait_for
from tests.fixtures.hostile import GroupChild, GroupThread

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.hostile"


def _run_then_signal_group(
    cluster: Cluster, sig: int, sleep: float, grace: str, *, group: bool = True
) -> list[int]:
    """Start an instance in its own group, get a child and a thread execution
    going, signal the group (or only the instance); returns [child task id,
    thread task id] once the instance has exited 0."""
    (pid,) = cluster.start(1, module=MODULE, new_session=True, TASKER_SHUTDOWN_GRACE=grace)
    app = Tasker(cluster.db_url, broker=cluster.broker_url)
    try:
        ids = [app.publish(GroupChild(sleep=sleep)), app.publish(GroupThread(sleep=sleep))]
    finally:
        app.close()
    wait_for(
        lambda: cluster.effect_pids("group-start") and cluster.effect_pids("thread-start"),
        30,
        "both executions to start",
    )
    if group:
        cluster.signal_group(pid, sig)
    else:
        cluster.signal(pid, sig)
    assert cluster.wait_exit(pid, 15) == 0
    return ids


def _rows(cluster: Cluster, ids: list[int]) -> list[tuple[str, int, int, str]]:
    rows = {
        r.id: r
        for r in cluster.query("SELECT id, status, retry, attempts, errlog FROM task ORDER BY id")
    }
    return [(rows[i].status, rows[i].retry, rows[i].attempts, rows[i].errlog) for i in ids]


def _assert_finished_in_grace(cluster: Cluster, ids: list[int]) -> None:
    (child,) = cluster.effect_pids("group-start")
    assert cluster.effect_pids("group-done") == [child], "the child died of the signal"
    assert _rows(cluster, ids) == [("success", 3, 1, "")] * 2
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to be gone")


def test_group_sigterm_lets_running_executions_finish(any_cluster: Cluster) -> None:
    """systemd's KillMode=control-group."""
    ids = _run_then_signal_group(any_cluster, signal.SIGTERM, sleep=2, grace="20")
    _assert_finished_in_grace(any_cluster, ids)


def test_group_sigint_lets_running_executions_finish(local_cluster: Cluster) -> None:
    """Ctrl-C in the terminal running `tasker run` (the embedded default)."""
    ids = _run_then_signal_group(local_cluster, signal.SIGINT, sleep=2, grace="20")
    _assert_finished_in_grace(local_cluster, ids)


def test_group_sigterm_past_the_grace_hands_back(pg_cluster: Cluster) -> None:
    ids = _run_then_signal_group(pg_cluster, signal.SIGTERM, sleep=30, grace="1")
    _assert_handed_back(pg_cluster, ids)


def test_sigterm_past_the_grace_kills_the_child(local_cluster: Cluster) -> None:
    """The same with SIGTERM to the instance alone: a handed-back task's child
    must not go on working (the task will run again elsewhere)."""
    ids = _run_then_signal_group(local_cluster, signal.SIGTERM, sleep=30, grace="1", group=False)
    _assert_handed_back(local_cluster, ids)


def _assert_handed_back(cluster: Cluster, ids: list[int]) -> None:
    (child,) = cluster.effect_pids("group-start")
    assert not cluster.effect_pids("group-done"), "the child of a handed-back task finished it"
    assert _rows(cluster, ids) == [("pending", 3, 1, "")] * 2, "a hand-back charged a run"
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to be gone")
