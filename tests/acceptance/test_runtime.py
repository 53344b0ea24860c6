"""One or two real instances on PostgreSQL + RabbitMQ: execution, failures, timeouts, bad input."""

from __future__ import annotations

import json
import signal

import kombu
import pytest

from tasker import brokers
from tests.acceptance.cluster import Cluster, pid_alive, wait_for
from tests.fixtures.jobs import Flaky, Hard, Record, Slow

pytestmark = [pytest.mark.acceptance, pytest.mark.pg, pytest.mark.rabbit]


def test_two_instances_run_every_task_exactly_once(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(2)
    ids = publisher.publish_many([Record(n=i) for i in range(400)])
    wait_for(lambda: pg_cluster.counts(ids)["success"] == len(ids), 60, "400 successes")
    effects = pg_cluster.effects_of("record")
    assert set(effects) == set(ids)
    assert max(effects.values()) == 1, "a task ran twice"
    rows = pg_cluster.query("SELECT attempts, retry, result, worker_fqdn FROM task")
    assert {r.attempts for r in rows} == {1}
    assert all(json.loads(r.result)["n"] >= 0 and r.worker_fqdn.strip() for r in rows)
    masters = pg_cluster.query("SELECT master_instance_id FROM core")
    live = {r.id for r in pg_cluster.query("SELECT id FROM instance")}
    assert masters[0].master_instance_id in live and len(live) == 2


def test_retry_then_fail_counts_runs_exactly(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(1)
    tid = publisher.publish(Flaky(), retry=3)
    wait_for(lambda: pg_cluster.counts([tid])["failed"] == 1, 30, "the flaky task to fail")
    row = pg_cluster.query("SELECT attempts, retry, errlog FROM task WHERE id = :i", i=tid)[0]
    assert row.attempts == 3 and row.retry == 0
    assert row.errlog.count("[attempt ") == 3
    assert "RuntimeError: flaky run 3" in row.errlog
    assert pg_cluster.effects_of("flaky")[tid] == 3


def test_soft_timeout_fails_the_run_and_frees_the_slot(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(1)
    slow = publisher.publish(Slow(sleep=20))
    wait_for(lambda: pg_cluster.counts([slow])["failed"] == 1, 15, "the slow task to time out")
    row = pg_cluster.query("SELECT errlog FROM task WHERE id = :i", i=slow)[0]
    assert "timeout" in row.errlog
    # The abandoned thread still sleeps; the topic's single slot must be free again.
    nxt = publisher.publish(Slow(sleep=0))
    wait_for(lambda: pg_cluster.counts([nxt])["success"] == 1, 15, "the next slow task")


def test_hard_timeout_kills_the_child_process(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(1)
    tid = publisher.publish(Hard())
    wait_for(lambda: pg_cluster.counts([tid])["failed"] == 1, 30, "the spinning task to fail")
    assert "timeout" in pg_cluster.scalar("SELECT errlog FROM task WHERE id = :i", i=tid)
    (child,) = pg_cluster.effect_pids("hard")
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to be gone")


def test_kill_9_leaves_no_child_running(pg_cluster: Cluster, publisher) -> None:
    (pid,) = pg_cluster.start(1)
    publisher.publish(Hard(), timeout=60)
    child = wait_for(lambda: pg_cluster.effect_pids("hard"), 30, "the child to start")[0]
    assert pid_alive(child)
    pg_cluster.signal(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(child), 5, f"child {child} to die with its parent")


def test_bad_input_fails_at_once_without_burning_runs(pg_cluster: Cluster, publisher) -> None:
    pg_cluster.start(1)
    with publisher.transaction() as conn:
        from tasker import store

        bad = store.task_insert_many(
            conn,
            rows=[
                {"topic": "t.record", "input": "{not json", "timeout_s": 5, "retry": 3},
                {"topic": "t.record", "input": '{"sleep": 0}', "timeout_s": 5, "retry": 3},
                {"topic": "t.record", "input": '{"n": "one"}', "timeout_s": 5, "retry": 3},
            ],
        )
    wait_for(lambda: pg_cluster.counts(bad)["failed"] == 3, 30, "the bad tasks to fail")
    rows = {r.id: r for r in pg_cluster.query("SELECT id, retry, attempts, errlog FROM task")}
    assert "not valid JSON" in rows[bad[0]].errlog
    assert "missing field $.n" in rows[bad[1]].errlog
    assert "field $.n must be int, got str" in rows[bad[2]].errlog
    assert all(rows[i].retry == 3 for i in bad), "bad input burned runs"
    assert not pg_cluster.effects_of("record")


def test_garbage_messages_are_dropped_and_work_goes_on(
    pg_cluster: Cluster, publisher, amqp_url: str
) -> None:
    pg_cluster.start(1)
    with kombu.Connection(amqp_url) as conn:
        producer = conn.Producer()
        q = brokers.queue_name("t.record")
        for body in (b"not json", b'{"tasks": "nope"}', brokers.encode_body([(999999, 1)])):
            producer.publish(body, routing_key=q, content_type="application/json")
    tid = publisher.publish(Record(n=1))
    wait_for(lambda: pg_cluster.counts([tid])["success"] == 1, 30, "a good task after garbage")
    wait_for(lambda: "no such task" in pg_cluster.logs(), 10, "the missing-task log line")
    assert "not valid JSON" in pg_cluster.logs()
    with kombu.Connection(amqp_url) as conn:
        left = conn.SimpleQueue(brokers.queue_name("t.record"))
        assert left.qsize() == 0, "garbage was not acked"
        left.close()


def test_sigterm_mid_run_hands_back_and_exits_0(pg_cluster: Cluster, publisher) -> None:
    (pid,) = pg_cluster.start(1, TASKER_SHUTDOWN_GRACE="0.5")
    ids = publisher.publish_many([Record(n=i, sleep=5) for i in range(4)])
    wait_for(lambda: pg_cluster.counts(ids)["running"] == 4, 30, "4 running")
    pg_cluster.signal(pid, signal.SIGTERM)
    assert pg_cluster.wait_exit(pid, 20) == 0
    rows = pg_cluster.query("SELECT status, retry, attempts, errlog FROM task")
    assert {r.status for r in rows} == {"pending"}, "something was left running"
    assert {r.retry for r in rows} == {3}, "a hand-back charged a run"
    assert pg_cluster.scalar("SELECT count(*) FROM instance") == 0
    assert pg_cluster.scalar("SELECT master_instance_id FROM core") is None
    pg_cluster.start(1)
    publisher.publish(Record(n=99))
    wait_for(lambda: pg_cluster.counts(ids)["success"] == 4, 60, "handed-back tasks to finish")


def test_second_signal_stops_at_once(pg_cluster: Cluster, publisher) -> None:
    (pid,) = pg_cluster.start(1, TASKER_SHUTDOWN_GRACE="60")
    ids = publisher.publish_many([Record(n=i, sleep=30) for i in range(2)])
    wait_for(lambda: pg_cluster.counts(ids)["running"] == 2, 30, "2 running")
    pg_cluster.signal(pid, signal.SIGTERM)
    wait_for(lambda: "stopping (again" in pg_cluster.logs(), 10, "the first signal")
    pg_cluster.signal(pid, signal.SIGINT)
    assert pg_cluster.wait_exit(pid, 10) == 0
    assert pg_cluster.counts(ids)["pending"] == 2
