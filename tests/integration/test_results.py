"""Outcomes leaving a task: the group callback under a race on PostgreSQL,
the result publisher (outbox to broker, at least once, broker down), and
`app.result` woken by the database."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import sqlalchemy as sa

from tasker import Tasker, brokers, outcome, results, store
from tasker.exceptions import BrokerError
from tasker.runtime.outbox import ResultPublisher
from tasker.runtime.service import Supervision
from tasker.schema import task, task_group, task_outbox
from tests.fixtures.pipelines import RESULTS_QUEUE, Add, Bill, Report
from tests.integration.runner import Runner
from tests.waiting import wait_for


def make_app(url: str, broker: str, **settings: Any) -> Tasker:
    app = Tasker(url, broker=broker, **settings)
    app.register(Add, Report, Bill)
    return app


@pytest.fixture
def pg_app(pg_url: str, local_broker: str) -> Iterator[Tasker]:
    app = make_app(pg_url, local_broker)
    yield app
    app.close()


def callbacks(app: Tasker) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.topic == Report.topic)).all()


def finish(app: Tasker, row: Any, n: int, conn: sa.Connection | None = None) -> None:
    decision = outcome.succeeded({"n": n})
    finishes = [store.Finish(row.id, row.worker_id, decision, linked=row.linked)]
    if conn is not None:
        store.task_finish_many(conn, finishes)
        return
    with app.transaction() as own:
        store.task_finish_many(own, finishes)


# --- groups: two members ending at once ---------------------------------------


def test_the_member_that_waited_for_the_group_row_writes_the_callback(pg_app: Tasker) -> None:
    ids = pg_app.group([Add(n=1), Add(n=2)], then=Report())
    rows = {r.id: r for r in Runner(pg_app).start(Add.topic)}
    first = pg_app.db.engine.connect()
    tx = first.begin()
    finish(pg_app, rows[ids[0]], 2, conn=first)  # holds the group row, not committed
    second = threading.Thread(target=finish, args=(pg_app, rows[ids[1]], 3))
    second.start()
    with pg_app.transaction() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    def waits_for_a_lock() -> bool:
        with pg_app.transaction() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> :me"), {"me": pid}).scalar())  # fmt: skip

    wait_for(waits_for_a_lock, 10, "the second finish to wait for the group row")
    assert callbacks(pg_app) == []
    tx.commit()
    first.close()
    second.join(10)
    (callback,) = callbacks(pg_app)
    got = [(r["id"], r["result"]) for r in json.loads(callback.input)["results"]]
    assert got == [(ids[0], {"n": 2}), (ids[1], {"n": 3})]


def test_groups_raced_by_two_writers_call_back_exactly_once(pg_app: Tasker) -> None:
    groups = [pg_app.group([Add(n=i), Add(n=i)], then=Report(label=str(i))) for i in range(30)]
    rows = {r.id: r for r in Runner(pg_app).start(Add.topic)}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def side(k: int) -> None:
        try:
            for members in groups:
                barrier.wait(10)
                finish(pg_app, rows[members[k]], k)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=side, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    labels = sorted(json.loads(c.input)["label"] for c in callbacks(pg_app))
    assert labels == sorted(str(i) for i in range(30))
    with pg_app.transaction() as conn:
        done = conn.execute(sa.select(task_group.c.done, task_group.c.callback_id)).all()
    assert all(d.done == 2 and d.callback_id for d in done)


# --- the result publisher --------------------------------------------------------


def publisher(app: Tasker, fatal: list[str]) -> ResultPublisher:
    return ResultPublisher(app.db, app.broker, Supervision(fatal.append, 2, 0.01),
                           queues=[RESULTS_QUEUE])  # fmt: skip


def outbox(app: Tasker) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task_outbox).order_by(task_outbox.c.id)).all()


def drain(broker: brokers.Broker, n: int) -> list[dict[str, Any]]:
    """Take `n` messages from the result queue with plain kombu."""
    got: list[dict[str, Any]] = []
    with broker.connect() as conn:
        q = conn.SimpleQueue(broker.queue(RESULTS_QUEUE, exact=True), no_ack=False)
        try:
            while len(got) < n:
                message = q.get(timeout=10)
                got.append(json.loads(message.body))
                message.ack()
        finally:
            q.close()
    return got


def test_every_terminal_outcome_is_published_once_committed(app: Tasker) -> None:
    app.register(Add, Bill)
    ok, bad = app.publish(Bill(n=1)), app.publish(Bill(n=2, fail=True))
    Runner(app).run_all()
    assert [r.task_id for r in outbox(app)] == [ok, bad]
    fatal: list[str] = []
    p = publisher(app, fatal)
    p.declare()
    assert p.run_once().published == 2 and outbox(app) == [] and not fatal
    got = drain(app.broker, 2)
    assert [(m["id"], m["topic"], m["success"], m["result"]) for m in got] == [
        (ok, "p.bill", True, {"billed": 1}),
        (bad, "p.bill", False, None),
    ]
    assert "bill 2 refused" in got[1]["error"] and got[0]["error"] is None
    p.stop()


def test_outcomes_wait_in_the_outbox_while_the_broker_is_down(pg_url: str, amqp_url: str) -> None:
    down = make_app(pg_url, "amqp://guest:guest@127.0.0.1:1//", reconnect_retries=0)
    up = make_app(pg_url, amqp_url)
    with kombu.Connection(amqp_url) as conn:
        up.broker.queue(RESULTS_QUEUE, exact=True).bind(conn.channel()).declare()
        conn.SimpleQueue(up.broker.queue(RESULTS_QUEUE, exact=True)).clear()
    try:
        tid = down.publish(Bill(n=5))
        Runner(down).run_all()
        fatal: list[str] = []
        lost = publisher(down, fatal)
        with pytest.raises(BrokerError):
            lost.run_once()
        (row,) = outbox(down)  # kept, and let go at once for the next try
        assert (row.task_id, row.taken_until) == (tid, None)
        lost.stop()
        good = publisher(up, fatal)
        assert good.run_once().published == 1 and outbox(up) == []
        (message,) = drain(up.broker, 1)  # plain kombu, as any AMQP client would
        assert (message["id"], message["success"], message["result"]) == (tid, True, {"billed": 5})
        good.stop()
    finally:
        down.close()
        up.close()


# --- app.result -----------------------------------------------------------------


def test_result_is_woken_by_the_finish_notify(
    pg_app: Tasker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the NOTIFY the waiter would read the row again only after 60 s,
    # and time out at 30 s.
    monkeypatch.setattr(results, "SAFETY_READ_S", 60.0)
    tid = pg_app.publish(Add(n=1))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pg_app.result(tid, timeout=30)))
    waiter.start()
    (row,) = Runner(pg_app).start(Add.topic)

    def listening() -> bool:
        with pg_app.transaction() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%'")).scalar())  # fmt: skip

    wait_for(listening, 10, "the waiter to LISTEN")
    finish(pg_app, row, 2)
    waiter.join(30)
    assert got and (got[0].success, got[0].result) == (True, {"n": 2})


def test_stopping_the_publisher_sends_what_is_left(app: Tasker) -> None:
    app.register(Add, Bill)
    tid = app.publish(Bill(n=3))
    Runner(app).run_all()
    fatal: list[str] = []
    p = publisher(app, fatal)
    p.declare()
    p.stop()  # never started: the last pass still runs, then the connection closes
    assert outbox(app) == [] and p.flushed is not None and p.flushed.published == 1
    assert not fatal
    assert [m["id"] for m in drain(app.broker, 1)] == [tid]
