"""Chains, groups and result topics with real `tasker run` processes: two
instances on PostgreSQL + RabbitMQ, and one on the embedded default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kombu
import pytest

from tasker import Tasker, brokers
from tests.acceptance.cluster import Cluster, wait_for
from tests.fixtures.pipelines import RESULTS_QUEUE, TOPICS, Add, Bill, Boom, Report, Words

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.pipelines"


def make_app(db_url: str, broker_url: str) -> Tasker:
    app = Tasker(db_url, broker=broker_url)
    app.register(Add, Boom, Words, Report, Bill)
    return app


@pytest.fixture
def pg_app(pg_url: str, amqp_url: str) -> Iterator[Tasker]:
    with kombu.Connection(amqp_url) as conn:  # leftovers of an earlier test
        channel = conn.channel()
        names = [brokers.queue_name(t) for t in TOPICS] + [RESULTS_QUEUE]
        for name in names:
            q = kombu.Queue(name, durable=True).bind(channel)
            q.declare()
            q.purge()
    app = make_app(pg_url, amqp_url)
    yield app
    app.close()


@pytest.fixture
def local_app(sqlite_url: str, local_broker: str) -> Iterator[Tasker]:
    app = make_app(sqlite_url, local_broker)
    yield app
    app.close()


def take_results(url: str, n: int, timeout: float = 60) -> dict[int, dict[str, Any]]:
    """Consume the result queue with plain kombu until `n` distinct ids came
    (at least once: a repeat is deduplicated by id, as a distributor would)."""
    got: dict[int, dict[str, Any]] = {}
    conn = brokers.Broker(url, reconnect_retries=3, reconnect_interval_s=0.5).connect()
    try:
        q = conn.SimpleQueue(kombu.Queue(RESULTS_QUEUE, durable=True, routing_key=RESULTS_QUEUE))

        def one_more() -> bool:
            try:
                message = q.get(timeout=0.5)
            except q.Empty:
                return len(got) >= n
            body = json.loads(message.body)
            got[body["id"]] = body
            message.ack()
            return len(got) >= n

        wait_for(one_more, timeout, f"{n} outcomes on {RESULTS_QUEUE}", every=0)
        q.close()
    finally:
        conn.release()
    return got


# --- chains ---------------------------------------------------------------------


def test_chains_run_across_two_instances(pg_cluster: Cluster, pg_app: Tasker) -> None:
    pids = pg_cluster.start(2, module=MODULE)
    firsts = [pg_app.chain([Add(n=i, sleep=0.02), "p.add", "p.add"]) for i in range(40)]
    for i, first in enumerate(firsts):
        res = pg_app.result(first, timeout=60)
        assert (res.success, res.result) == (True, {"n": i + 3})
    rows = pg_cluster.query("SELECT chain_id, chain_step, status FROM task ORDER BY id")
    assert len(rows) == 120 and {r.status for r in rows} == {"success"}
    assert sorted((r.chain_id, r.chain_step) for r in rows) == [
        (f, s) for f in firsts for s in (1, 2, 3)
    ]
    effects = pg_cluster.effects_of("add")
    assert len(effects) == 120 and max(effects.values()) == 1  # each step ran once
    assert set(pg_cluster.effect_pids("add")) == set(pids)  # both instances took steps


def test_a_chain_stops_at_its_failed_step_on_the_embedded_default(
    local_cluster: Cluster, local_app: Tasker
) -> None:
    local_cluster.start(1, module=MODULE)
    ok = local_app.chain([Add(n=1), "p.add"])
    stopped = local_app.chain([Add(n=1), "p.boom", "p.add"])
    unfit = local_app.chain([Add(n=1), Words])
    assert local_app.result(ok, timeout=60).result == {"n": 3}
    res = local_app.result(stopped, timeout=60)
    assert not res.success and "boom at n=2" in (res.error or "")
    steps = local_cluster.query(
        "SELECT chain_step, status FROM task WHERE chain_id = :c ORDER BY chain_step", c=stopped
    )
    assert [tuple(s) for s in steps] == [(1, "success"), (2, "failed")]
    res = local_app.result(unfit, timeout=60)
    assert not res.success and "does not decode into p.words" in (res.error or "")
    assert local_cluster.effects_of("words") == {}  # bad input never ran exec


# --- groups ---------------------------------------------------------------------


def check_callbacks(cluster: Cluster, labels: list[str]) -> None:
    wait_for(
        lambda: cluster.scalar(
            "SELECT count(*) FROM task WHERE topic = 'p.report' AND status = 'success'"
        ) == len(labels),
        60,
        "every callback to succeed",
    )  # fmt: skip
    reports = cluster.query("SELECT id, input FROM task WHERE topic = 'p.report'")
    assert sorted(json.loads(r.input)["label"] for r in reports) == sorted(labels)
    groups = cluster.query("SELECT size, done, callback_id FROM task_group")
    assert sorted(g.callback_id for g in groups) == sorted(r.id for r in reports)
    effects = cluster.effects_of("report")
    assert set(effects) == {r.id for r in reports} and max(effects.values()) == 1


def test_group_callbacks_run_once_when_two_instances_race(
    pg_cluster: Cluster, pg_app: Tasker
) -> None:
    pg_cluster.start(2, module=MODULE)
    # Pairs of members of the same length end at about the same moment,
    # often on the two instances: the last-member race, 150 times over.
    labels = [str(i) for i in range(150)]
    members = {
        label: pg_app.group([Add(n=i), Add(n=i)], then=Report(label=label))
        for i, label in enumerate(labels)
    }
    check_callbacks(pg_cluster, labels)
    for report in pg_cluster.query("SELECT input FROM task WHERE topic = 'p.report'"):
        payload = json.loads(report.input)
        ids = members[payload["label"]]
        assert [r["id"] for r in payload["results"]] == ids
        assert all(r["success"] and r["result"]["n"] == int(payload["label"]) + 1
                   for r in payload["results"])  # fmt: skip


def test_a_group_with_a_failing_member_calls_back_on_the_embedded_default(
    local_cluster: Cluster, local_app: Tasker
) -> None:
    local_cluster.start(1, module=MODULE)
    ids = local_app.group([Add(n=1), Boom(n=2), Add(n=3)], then=Report(label="mixed"))
    check_callbacks(local_cluster, ["mixed"])
    (callback,) = local_cluster.query("SELECT id FROM task WHERE topic = 'p.report'")
    res = local_app.result(callback.id, timeout=10)
    assert res.result == {"label": "mixed", "ids": ids, "ok": 2}


# --- result topics --------------------------------------------------------------


def test_outcomes_reach_the_result_queue_from_two_instances(
    pg_cluster: Cluster, pg_app: Tasker, amqp_url: str
) -> None:
    pg_cluster.start(2, module=MODULE)
    ids = pg_app.publish_many([Bill(n=i, fail=i % 5 == 0) for i in range(60)])
    got = take_results(amqp_url, len(ids))
    assert set(got) == set(ids)
    rows = {r.id: r for r in pg_cluster.query("SELECT id, status, result FROM task")}
    for tid, message in got.items():
        assert message["topic"] == "p.bill"
        assert message["success"] == (rows[tid].status == "success")
        if message["success"]:
            assert message["result"] == json.loads(rows[tid].result)
        else:
            assert "refused" in message["error"]
    wait_for(lambda: pg_cluster.scalar("SELECT count(*) FROM task_outbox") == 0, 30,
             "the outbox to empty")  # fmt: skip
    assert len({pid for pid in pg_cluster.effect_pids("bill")}) == 2


def test_outcomes_reach_the_result_queue_on_the_embedded_default(
    local_cluster: Cluster, local_app: Tasker, local_broker: str
) -> None:
    local_cluster.start(1, module=MODULE)
    ids = local_app.publish_many([Bill(n=i, fail=i == 2) for i in range(5)])
    got = take_results(local_broker, len(ids))
    assert set(got) == set(ids)
    assert [got[i]["success"] for i in ids] == [True, True, False, True, True]
