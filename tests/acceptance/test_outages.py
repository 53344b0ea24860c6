"""Database and broker outages: ride them out, or give up loudly after the configured tries."""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest

from tests.acceptance.cluster import Cluster, wait_for
from tests.conftest import PG_ADMIN
from tests.fixtures.jobs import Record

pytestmark = [pytest.mark.acceptance, pytest.mark.pg, pytest.mark.rabbit]


def _cut_database(name: str, allow: bool) -> None:
    """Refuse (or allow again) connections to one database and drop the live ones."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if allow else 'false'}")
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def _db_name(cluster: Cluster) -> str:
    return cluster.db_url.rsplit("/", 1)[1]


def test_database_outage_is_ridden_out(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(2, TASKER_RECONNECT_INTERVAL="0.5")
    ids = publisher.publish_many([Record(n=i, sleep=0.05) for i in range(300)])
    wait_for(lambda: pg_cluster.counts(ids)["success"] >= 30, 60, "30 successes")
    name = _db_name(pg_cluster)
    pg_cluster.engine.dispose()
    publisher.engine.dispose()
    _cut_database(name, allow=False)
    try:
        # Keep it down until both instances have failed and retried a few times.
        wait_for(lambda: pg_cluster.logs().count("try 3 of") >= 2, 30, "retries during the outage")
    finally:
        _cut_database(name, allow=True)
    wait_for(lambda: pg_cluster.all_terminal(ids), 120, "every task terminal")
    assert pg_cluster.counts(ids)["success"] == len(ids)
    effects = pg_cluster.effects_of("record")
    assert set(effects) == set(ids)
    assert all(p.poll() is None for p in pg_cluster.procs), "an instance gave up too early"


def test_database_gone_for_good_exits_non_zero(pg_cluster: Cluster) -> None:
    (pid,) = pg_cluster.start(1, TASKER_RECONNECT_RETRIES="2", TASKER_RECONNECT_INTERVAL="0.2")
    wait_for(pg_cluster.master, 10, "a master")
    pg_cluster.engine.dispose()
    _cut_database(_db_name(pg_cluster), allow=False)
    try:
        code = pg_cluster.wait_exit(pid, 30)
    finally:
        _cut_database(_db_name(pg_cluster), allow=True)
    assert code == 1
    assert "gave up on the database after 2 retries" in pg_cluster.logs()


def test_broker_gone_for_good_exits_non_zero(pg_cluster: Cluster, amqp_url: str) -> None:
    vhost = f"tasker-test-{uuid.uuid4().hex[:8]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        (pid,) = pg_cluster.start(
            1,
            TASKER_BROKER_URL=amqp_url.rstrip("/") + "/" + vhost,
            TASKER_RECONNECT_RETRIES="2",
            TASKER_RECONNECT_INTERVAL="0.2",
        )
        wait_for(pg_cluster.master, 10, "a master")
    finally:
        subprocess.run([*ctl, "delete_vhost", vhost], check=True, capture_output=True, timeout=60)
    assert pg_cluster.wait_exit(pid, 60) == 1
    assert "gave up on the broker" in pg_cluster.logs()
    assert "guest:***@" in pg_cluster.logs() and "guest:guest@" not in pg_cluster.logs()
