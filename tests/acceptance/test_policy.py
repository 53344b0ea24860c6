"""Retry policy and per-key locks with real `tasker run` processes (DESIGN 1:
`retry_on`, `tasker.Fail`, `backoff`, `lock`): two instances on PostgreSQL +
RabbitMQ and on the embedded default (SQLite + the folder broker)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tasker import Tasker, brokers
from tests.acceptance.cluster import Cluster, wait_for
from tests.acceptance.test_claims import most_at_once
from tests.fixtures.policy import Expiring, PerCustomer, Policied, Report

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.policy"
CLASSES = (Policied, Expiring, PerCustomer, Report)


@pytest.fixture(params=["pg", "local"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, Tasker]]:
    if request.param == "pg":
        db_url, broker_url = request.getfixturevalue("pg_url"), request.getfixturevalue("amqp_url")
        with kombu.Connection(broker_url) as conn:
            channel = conn.channel()
            for cls in CLASSES:
                q = kombu.Queue(brokers.queue_name(cls.topic), durable=True).bind(channel)
                q.declare()
                q.purge()
    else:
        db_url, broker_url = (
            request.getfixturevalue("sqlite_url"), request.getfixturevalue("local_broker")
        )
    c = Cluster(db_url, broker_url, tmp_path)
    c.set_timings(out_of_date_ms=2000, heartbeat_ms=500)
    app = Tasker(db_url, broker=broker_url)
    app.register(*CLASSES)
    yield c, app
    app.close()
    c.close()
    print(c.logs())


def executions(c: Cluster, kind: str) -> list[tuple[float, float, int, int]]:
    """(start, end, task id, pid) of each execution of `kind`, by start."""
    rows = [ln.split() for ln in c.effects.read_text().splitlines()] if c.effects.exists() else []
    return sorted((float(r[4]), float(r[5]), int(r[1]), int(r[3])) for r in rows if r[0] == kind)


def test_per_key_locks_hold_across_two_instances_in_order(cluster) -> None:  # type: ignore[no-untyped-def]
    c, app = cluster
    c.start(2, module=MODULE)  # 8 slots between them
    wait_for(c.master, 15, "a master")
    ids = {k: [] for k in (1, 2, 3)}  # type: dict[int, list[int]]
    for n in range(5):  # interleaved, so ids of one key are not contiguous
        for k in ids:
            ids[k].append(app.publish(PerCustomer(customer_id=k, n=n, hold=0.15)))
    every = [i for k in ids for i in ids[k]]
    wait_for(lambda: c.counts(every)["success"] == len(every), 90, "every locked task done")
    spans = []
    for k, mine in ids.items():
        runs = executions(c, f"lock{k}")
        assert [r[2] for r in runs] == mine, f"key {k} ran out of (priority, id) order"
        assert most_at_once([(s, e) for s, e, _, _ in runs]) == 1, f"key {k} overlapped"
        spans += [(s, e) for s, e, _, _ in runs]
    assert most_at_once(spans) >= 2, "different keys never ran side by side"
    sql = "SELECT count(*) FROM task WHERE lock_key IS NOT NULL AND attempts <> 1"
    assert c.scalar(sql) == 0  # nothing dropped, nothing ran twice


def test_the_retry_policy_in_real_instances(cluster) -> None:  # type: ignore[no-untyped-def]
    c, app = cluster
    c.start(1, module=MODULE)
    wait_for(c.master, 15, "a master")
    ids = {k: app.publish(Policied(kind=k)) for k in ("ok", "conn", "value", "fail")}
    wait_for(lambda: c.all_terminal(list(ids.values())), 60, "every policy task ended")
    assert app.result(ids["ok"], timeout=1).success
    for kind, says in (("value", "not in retry_on"), ("fail", "tasker.Fail")):
        res = app.result(ids[kind], timeout=1)
        assert res.success is False and says in (res.error or "")
        assert len(executions(c, f"policy-{kind}")) == 1  # no second run
    conn = executions(c, "policy-conn")
    assert len(conn) == Policied.retry  # every run used, then failed
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(conn)]
    assert all(g >= 0.95 for g in gaps), f"backoff = 1 s not respected: {gaps}"
    assert app.result(ids["conn"], timeout=1).success is False
