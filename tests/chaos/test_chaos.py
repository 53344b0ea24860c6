"""Chaos: thousands of tasks on three instances while instances are killed and
restarted, every RabbitMQ connection is closed once and PostgreSQL restarts once.

At the end every task is terminal, none is lost, a task ran twice only when
one of its executions was on an instance that was killed, nothing is left
`running`, and exactly one live instance is master.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.acceptance.cluster import Cluster, pid_alive, wait_for
from tests.fixtures.jobs import Record

pytestmark = [pytest.mark.acceptance, pytest.mark.pg, pytest.mark.rabbit]

TASKS = 3000
CHAOS_S = 40.0


def restart_postgres() -> None:
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def close_rabbit_connections() -> None:
    subprocess.run(
        ["rabbitmqctl", "close_all_connections", "tasker chaos test"],
        check=True,
        capture_output=True,
        timeout=60,
    )


# A PostgreSQL restart can leave a psycopg connection that died mid-handshake
# to the garbage collector, which warns; what this test asserts is that no
# task is lost or run twice, so that warning must not fail it (seen once in
# a CI run; every assertion below held).
@pytest.fixture
def collect_dead_connections() -> Iterator[None]:
    """Collect the connections the restarts killed before this test ends:
    left to a later collection, the same warning failed another test (the
    Django tests, which ran next in a CI run)."""
    yield
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_chaos(collect_dead_connections: None, pg_cluster: Cluster, publisher) -> None:
    rng = random.Random(int(os.environ.get("TASKER_CHAOS_SEED", "7")))
    pg_cluster.set_timings(2000, 500)
    pg_cluster.start(3, TASKER_RECONNECT_INTERVAL="1", TASKER_SHUTDOWN_GRACE="2")
    ids = publisher.publish_many([Record(n=i, sleep=0.1) for i in range(TASKS)])
    publisher.engine.dispose()
    killed: set[int] = set()
    events: list[str] = []
    started = time.monotonic()
    did_rabbit = did_pg = False
    while time.monotonic() - started < CHAOS_S and not pg_cluster.all_terminal(ids):
        elapsed = time.monotonic() - started
        if not did_rabbit and elapsed > CHAOS_S * 0.3:
            close_rabbit_connections()
            did_rabbit = True
            events.append(f"{elapsed:5.1f}s closed all RabbitMQ connections")
        elif not did_pg and elapsed > CHAOS_S * 0.6:
            restart_postgres()
            did_pg = True
            events.append(f"{elapsed:5.1f}s restarted PostgreSQL")
        else:
            live = [p for p in pg_cluster.procs if p.poll() is None]
            victim = rng.choice(live)
            victim.send_signal(signal.SIGKILL)
            killed.add(victim.pid)
            victim.wait(10)
            (new,) = pg_cluster.start(1, TASKER_RECONNECT_INTERVAL="1", TASKER_SHUTDOWN_GRACE="2")
            events.append(f"{elapsed:5.1f}s kill -9 {victim.pid}, started {new}")
        time.sleep(rng.uniform(2.0, 4.0))  # the pace of the chaos itself, not a wait for state
    if not did_pg:  # the tasks finished early: still prove the restart is survived
        restart_postgres()
        events.append("restarted PostgreSQL after the tasks were done")
    extra = publisher.publish_many([Record(n=-1) for _ in range(20)])
    ids += extra
    wait_for(lambda: pg_cluster.all_terminal(ids), 180, "every task terminal", every=0.5)

    counts = pg_cluster.counts(ids)
    effects = pg_cluster.effects_of("record")
    pids_of: dict[int, set[int]] = defaultdict(set)
    for line in pg_cluster.effects.read_text().splitlines():
        _kind, tid, _attempt, pid = line.split()
        pids_of[int(tid)].add(int(pid))
    twice = {t for t, n in effects.items() if n > 1}
    bad_twice = {t for t in twice if not (pids_of[t] & killed)}
    print("\n".join(events))
    print(
        f"tasks: {len(ids)}  success: {counts['success']}  failed: {counts['failed']}  "
        f"executed: {len(effects)}  executed twice: {len(twice)}  "
        f"instances killed: {len(killed)}"
    )
    assert counts["success"] == len(ids), counts
    assert set(effects) == set(ids), "a task was lost"
    assert not bad_twice, f"ran twice without a killed instance: {sorted(bad_twice)[:10]}"
    assert pg_cluster.scalar("SELECT count(*) FROM task WHERE status = 'running'") == 0
    master = wait_for(pg_cluster.master, 15, "a master")
    assert pid_alive(master[1])
    assert pg_cluster.scalar("SELECT count(*) FROM core WHERE master_instance_id IS NOT NULL") == 1
