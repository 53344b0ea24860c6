"""Abort of running tasks in real `tasker run` processes, on PostgreSQL +
RabbitMQ and on the embedded default (SQLite + folder broker): a thread
task that polls `ctx.check()` stops, one that ignores it is abandoned and
its slot freed, a process-isolated one is killed; each row ends `failed`
with "cancelled" in errlog and no retry, within two heartbeats of the
request. A pending task cancels at once, and work published after runs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from tasker import Tasker, admin
from tests.acceptance.cluster import Cluster, pid_alive, wait_for
from tests.acceptance.conftest import ALL
from tests.fixtures.jobs import Hard, Polite, Record, Stubborn

pytestmark = [pytest.mark.acceptance]


@pytest.fixture
def local_publisher(local_cluster: Cluster) -> Iterator[Tasker]:
    app = Tasker(local_cluster.db_url, broker=local_cluster.broker_url)
    app.register(*ALL)
    yield app
    app.close()


def running(cluster: Cluster, kind: str, tid: int) -> bool:
    return cluster.counts([tid])["running"] == 1 and tid in cluster.effects_of(kind)


def row(cluster: Cluster, tid: int) -> object:
    return cluster.query("SELECT status, retry, attempts, errlog FROM task WHERE id = :i", i=tid)[0]


def cancel_all_kinds(cluster: Cluster, app: Tasker) -> None:
    cluster.start(1)
    polite = app.publish(Polite())
    stubborn = app.publish(Stubborn())
    hard = app.publish(Hard(), timeout=120)
    later = app.publish(Record(n=1), exec_after=dt.timedelta(hours=1))
    for kind, tid in (("polite", polite), ("stubborn", stubborn), ("hard", hard)):
        wait_for(lambda kind=kind, tid=tid: running(cluster, kind, tid), 30, f"{kind} to run")
    (child,) = cluster.effect_pids("hard")
    heartbeat_s = cluster.scalar("SELECT instance_heartbeat FROM core") / 1000

    asked = time.monotonic()
    done = admin.cancel_tasks(app, [polite, stubborn, hard, later])
    assert (done.cancelled, done.requested) == ([later], sorted([polite, stubborn, hard]))
    assert cluster.counts([later])["failed"] == 1  # a pending task cancels at once
    ids = [polite, stubborn, hard]
    wait_for(lambda: cluster.counts(ids)["failed"] == 3, 4 * heartbeat_s, "the cancelled tasks")
    took = time.monotonic() - asked
    assert took < 2 * heartbeat_s, f"abort took {took:.1f}s, over two heartbeats"

    for tid, cls in zip(ids, (Polite, Stubborn, Hard), strict=True):
        r = row(cluster, tid)
        assert "cancelled" in r.errlog and r.errlog.count("[attempt ") == 1, r.errlog
        assert (r.retry, r.attempts) == (cls.retry, 1), "a cancelled task was charged or retried"
    assert "TaskCancelled" in row(cluster, polite).errlog
    assert "abandoned" in row(cluster, stubborn).errlog
    assert "killed" in row(cluster, hard).errlog
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to be killed")

    # The stubborn topic has one slot: it is free again; work published after runs.
    after = [
        app.publish(Stubborn(sleep=0)),
        app.publish(Polite(steps=1)),
        app.publish(Hard(spin=False)),
    ]
    wait_for(lambda: cluster.counts(after)["success"] == 3, 30, "tasks published after the cancel")
    assert cluster.counts(ids)["failed"] == 3  # and the cancelled ones stayed failed


@pytest.mark.pg
@pytest.mark.rabbit
def test_abort_on_postgresql_and_rabbitmq(pg_cluster: Cluster, publisher: Tasker) -> None:
    cancel_all_kinds(pg_cluster, publisher)


def test_abort_on_the_embedded_default(local_cluster: Cluster, local_publisher: Tasker) -> None:
    cancel_all_kinds(local_cluster, local_publisher)
