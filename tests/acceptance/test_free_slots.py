"""A free slot never waits behind an unrelated execution (DESIGN 6, "Fault isolation").

A topic with two slots: one execution sleeps a minute, and short tasks
published just after it must all finish through the other slot while it still
runs, with no prefetch (TASKER_PREFETCH=0) and with the automatic one. Then
SIGTERM hands the long one back, uncharged, and the instance exits 0 although
its thread still sleeps.
"""

from __future__ import annotations

import signal

import pytest

from tasker import Tasker
from tests.acceptance.cluster import Cluster, wait_for
from tests.fixtures.hostile import Lane

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.hostile"
LONG_S = 60.0


@pytest.mark.parametrize(
    ("prefetch", "shorts"), [("0", 20), ("", 300)], ids=["prefetch-0", "prefetch-auto"]
)
def test_short_tasks_pass_a_long_one(any_cluster: Cluster, prefetch: str, shorts: int) -> None:
    cluster = any_cluster
    (pid,) = cluster.start(1, module=MODULE, TASKER_PREFETCH=prefetch, TASKER_SHUTDOWN_GRACE="1")
    app = Tasker(cluster.db_url, broker=cluster.broker_url)
    try:
        long = app.publish(Lane(sleep=LONG_S))
        ids = app.publish_many([Lane() for _ in range(shorts)])
        wait_for(
            lambda: cluster.counts(ids)["success"] == shorts,
            40,
            f"{shorts} short tasks to pass the long one (now {dict(cluster.counts(ids))})",
        )
        assert cluster.counts([long])["running"] == 1, "the long task is not running any more"
        assert max(cluster.effects_of("lane").values()) == 1, "a task ran twice"
    finally:
        app.close()
    cluster.signal(pid, signal.SIGTERM)
    assert cluster.wait_exit(pid, 15) == 0, "the sleeping thread held the exit"
    (row,) = cluster.query("SELECT status, retry, errlog FROM task WHERE id = :i", i=long)
    assert (row.status, row.retry, row.errlog) == ("pending", 3, ""), "the hand-back charged a run"
