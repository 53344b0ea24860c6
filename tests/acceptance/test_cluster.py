"""Election, fail-over, fencing and broker loss with real processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.acceptance.cluster import Cluster, wait_for
from tests.fixtures.jobs import Record

pytestmark = [pytest.mark.acceptance]

FAST = {"out_of_date_ms": 2000, "heartbeat_ms": 500}


def _fast(cluster: Cluster) -> None:
    cluster.set_timings(FAST["out_of_date_ms"], FAST["heartbeat_ms"])


@pytest.mark.pg
@pytest.mark.rabbit
def test_kill_9_of_the_master_mid_run_loses_nothing(pg_cluster: Cluster, publisher) -> None:
    _fast(pg_cluster)
    pg_cluster.start(3)
    first = wait_for(pg_cluster.master, 10, "a master")
    ids = publisher.publish_many([Record(n=i, sleep=0.02) for i in range(600)])
    wait_for(lambda: pg_cluster.counts(ids)["success"] >= 100, 60, "100 successes")
    killed_at = time.monotonic()
    pg_cluster.signal(first[1], signal.SIGKILL)
    new = pg_cluster.new_master(first, 15)
    took = time.monotonic() - killed_at
    assert new[2] == first[2] + 1, "term must grow by one on a change of master"
    # Lease of 2 s, trust margin and one heartbeat: well under 2 s + 0.5 s + slack.
    assert took < 2.0 + 0.5 + 2.0, f"fail-over took {took:.2f}s"
    wait_for(lambda: pg_cluster.all_terminal(ids), 90, "every task terminal")
    assert pg_cluster.counts(ids)["success"] == len(ids)
    effects = pg_cluster.effects_of("record")
    assert set(effects) == set(ids), "a task never ran"
    assert pg_cluster.scalar("SELECT count(*) FROM task WHERE status = 'running'") == 0
    # Only tasks in flight on the killed instance may have run twice: each
    # duplicate has an execution there (finished, its row not yet written).
    twice = {t for t, n in effects.items() if n > 1}
    on_killed = pg_cluster.tasks_run_by(first[1])
    assert twice <= on_killed, f"ran twice without the killed instance: {twice - on_killed}"
    terms = {r.term for r in pg_cluster.query("SELECT DISTINCT term FROM task")}
    assert terms <= {first[2], new[2]}


@pytest.mark.pg
@pytest.mark.rabbit
def test_graceful_stop_hands_the_lease_over_at_once(pg_cluster: Cluster) -> None:
    pg_cluster.start(2)  # default timings: a 6 s lease, 3 s heartbeat
    first = wait_for(pg_cluster.master, 10, "a master")
    stopped_at = time.monotonic()
    pg_cluster.signal(first[1], signal.SIGTERM)
    new = pg_cluster.new_master(first, 10)
    took = time.monotonic() - stopped_at
    assert pg_cluster.wait_exit(first[1]) == 0
    assert new[2] == first[2] + 1
    # Without the resign + NOTIFY this would wait out the 6 s lease.
    assert took < 3.0, f"hand-over took {took:.2f}s"


@pytest.mark.pg
@pytest.mark.rabbit
def test_paused_master_is_fenced_and_dispatches_nothing(pg_cluster: Cluster, publisher) -> None:
    _fast(pg_cluster)
    pg_cluster.start(2)
    old = wait_for(pg_cluster.master, 10, "a master")
    pg_cluster.signal(old[1], signal.SIGSTOP)
    try:
        new = pg_cluster.new_master(old, 15)
        ids = publisher.publish_many([Record(n=i) for i in range(50)])
    finally:
        pg_cluster.signal(old[1], signal.SIGCONT)
    wait_for(lambda: pg_cluster.counts(ids)["success"] == len(ids), 30, "all successes")
    more = publisher.publish_many([Record(n=i) for i in range(50, 100)])
    wait_for(lambda: pg_cluster.counts(more)["success"] == len(more), 30, "more successes")
    terms = {r.term for r in pg_cluster.query("SELECT term FROM task")}
    assert terms == {new[2]}, f"the paused master dispatched under term {old[2]}"
    assert pg_cluster.master()[0] == new[0]
    assert max(pg_cluster.effects_of("record").values()) == 1


@pytest.mark.pg
@pytest.mark.rabbit
def test_rabbitmq_connections_closed_mid_run(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(2)
    wait_for(pg_cluster.master, 10, "a master")
    ids = publisher.publish_many([Record(n=i, sleep=0.01) for i in range(400)])
    wait_for(lambda: pg_cluster.counts(ids)["success"] >= 50, 60, "50 successes")
    subprocess.run(
        ["rabbitmqctl", "close_all_connections", "tasker acceptance test"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(lambda: pg_cluster.all_terminal(ids), 90, "every task terminal")
    assert pg_cluster.counts(ids)["success"] == len(ids)
    effects = pg_cluster.effects_of("record")
    assert set(effects) == set(ids)
    assert max(effects.values()) == 1, "a broker drop re-ran a task"
    assert all(p.poll() is None for p in pg_cluster.procs), "an instance died"


def test_embedded_default_two_instances_and_election(local_cluster: Cluster) -> None:
    from tasker import Tasker

    _fast(local_cluster)
    local_cluster.start(2)
    first = wait_for(local_cluster.master, 10, "a master")
    app = Tasker(local_cluster.db_url, broker=local_cluster.broker_url)
    try:
        ids = app.publish_many([Record(n=i) for i in range(100)])
        wait_for(lambda: local_cluster.counts(ids)["success"] == len(ids), 60, "100 successes")
        assert max(local_cluster.effects_of("record").values()) == 1
        local_cluster.signal(first[1], signal.SIGKILL)
        new = local_cluster.new_master(first, 15)
        assert new[2] == first[2] + 1
        more = app.publish_many([Record(n=i) for i in range(10)])
        wait_for(lambda: local_cluster.counts(more)["success"] == 10, 30, "work after fail-over")
    finally:
        app.close()


@pytest.mark.pg
@pytest.mark.rabbit
def test_just_worker_never_races(pg_cluster: Cluster, publisher) -> None:
    _fast(pg_cluster)
    (worker,) = pg_cluster.start(1, TASKER_JUST_WORKER="1")
    wid = pg_cluster.instance_of(worker)
    assert pg_cluster.scalar("SELECT master_eligible FROM instance WHERE id = :i", i=wid) is False
    first = pg_cluster.scalar("SELECT heartbeat FROM instance WHERE id = :i", i=wid)
    # Several beats of its own (500 ms each) go by: the lease stays free.
    wait_for(
        lambda: pg_cluster.scalar(
            "SELECT heartbeat > :t + interval '1.5 seconds' FROM instance WHERE id = :i",
            t=first,
            i=wid,
        ),
        10,
        "three beats of the just-worker",
    )
    assert pg_cluster.scalar("SELECT master_instance_id FROM core") is None
    (eligible,) = pg_cluster.start(1)
    master = wait_for(pg_cluster.master, 10, "a master")
    assert master[1] == eligible
    tid = publisher.publish(Record(n=1))
    wait_for(lambda: pg_cluster.counts([tid])["success"] == 1, 30, "the task to run")


def test_embedded_default_acks_every_message(local_cluster: Cluster) -> None:
    """On the folder broker each message is acked on its own once its tasks
    are written, packed ones too: none is left to come back at the next start."""
    from pathlib import Path

    from tasker import Tasker

    (pid,) = local_cluster.start(1)
    wait_for(local_cluster.master, 10, "a master")
    app = Tasker(local_cluster.db_url, broker=local_cluster.broker_url)
    try:
        ids = app.publish_many([Record(n=i) for i in range(400)])
        wait_for(lambda: local_cluster.counts(ids)["success"] == len(ids), 60, "400 successes")
    finally:
        app.close()
    local_cluster.signal(pid, signal.SIGTERM)
    assert local_cluster.wait_exit(pid) == 0
    folder = Path(local_cluster.broker_url.removeprefix("filesystem://"))
    assert sorted(p.name for p in folder.glob("*.msg")) == []
    assert "unacknowledged" not in local_cluster.logs()


@pytest.mark.pg
@pytest.mark.rabbit
def test_out_of_order_acks_keep_the_connection(pg_cluster: Cluster, publisher) -> None:
    """A long task acked after the short ones delivered behind it: RabbitMQ
    must never see a tag twice (it closes the channel: PRECONDITION_FAILED)."""
    (pid,) = pg_cluster.start(1)
    wait_for(pg_cluster.master, 10, "a master")
    ids = [publisher.publish(Record(n=0, sleep=1.5))]
    wait_for(lambda: pg_cluster.counts(ids)["running"] == 1, 10, "the long task running")
    ids += [publisher.publish(Record(n=i)) for i in range(1, 6)]
    wait_for(lambda: pg_cluster.counts(ids)["success"] == len(ids), 30, "every task done")
    pg_cluster.signal(pid, signal.SIGTERM)
    assert pg_cluster.wait_exit(pid) == 0
    logs = pg_cluster.logs()
    assert "PRECONDITION_FAILED" not in logs and "broker connection lost" not in logs
