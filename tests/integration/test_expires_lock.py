"""`expires` and `lock` (DESIGN 1) on SQLite and PostgreSQL: what publish
writes, the master's claim of locked tasks, the start refusing an expired
task and the expiry pass settling it like any terminal state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import (
    ConfigurationError,
    Context,
    MsgQ,
    Tasker,
    admin,
    outcome,
    pipelines,
    store,
    testing,
)
from tasker.exceptions import InvalidTime
from tasker.schema import task
from tasker.store import dialect
from tests.fixtures.policy import Expiring, PerCustomer, Policied, Report
from tests.waiting import wait_for


def row(app: Tasker, task_id: int) -> Any:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.id == task_id)).one()


def db_now(app: Tasker) -> dt.datetime:
    with app.transaction() as conn:
        return dialect.now(conn)


def wait_past(app: Tasker, at: dt.datetime) -> None:
    """Until the database clock has passed `at` (the clock expiry is judged by)."""
    wait_for(lambda: db_now(app) > at, timeout=10, what=f"the database clock to pass {at}")


# --- what publish writes ---------------------------------------------------------


def test_a_plain_task_has_neither_column(app: Tasker) -> None:
    app.register(Expiring, PerCustomer)

    class Plain(MsgQ):
        topic = "policy.plain"

        def exec(self, ctx: Context, worker_id: int) -> object:
            return None

    r = row(app, app.publish(Plain()))
    assert (r.expires_at, r.lock_key) == (None, None)


def test_expires_is_counted_from_the_database_clock_and_publish_overrides_the_class(
    app: Tasker,
) -> None:
    a = row(app, app.publish(Expiring()))  # the class's 1 s
    assert dt.timedelta(seconds=0.99) <= a.expires_at - a.created <= dt.timedelta(seconds=1.01)
    b = row(app, app.publish(Expiring(), expires=dt.timedelta(hours=2)))
    assert b.expires_at - b.created == dt.timedelta(hours=2)
    at = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)  # far future: kept exactly
    assert row(app, app.publish(Expiring(), expires=at)).expires_at == at


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, 0, 10**30, "soon", True])
def test_a_bad_expires_is_refused_and_nothing_is_written(app: Tasker, bad: Any) -> None:
    app.register(Expiring)
    with pytest.raises(InvalidTime, match="expires"):
        app.publish(Expiring(), expires=bad)
    with app.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(task)).scalar() == 0


def test_the_lock_key_is_formatted_from_the_payload_or_given(app: Tasker) -> None:
    assert row(app, app.publish(PerCustomer(customer_id=42))).lock_key == "customer:42"
    odd = "client:caf\u00e9 \u2603 \U0001f600 \u05d0\u200f"  # no control: kept exactly
    assert row(app, app.publish(PerCustomer(customer_id=1), lock=odd)).lock_key == odd


@pytest.mark.parametrize(
    ("lock", "says"),
    [("", "empty"), ("x" * 256, "at most 255"), ("a\x00b", "NUL"), ("\udc80", "surrogate"),
     (5, "text")],
)
def test_a_bad_lock_key_is_refused_at_publish(app: Tasker, lock: Any, says: str) -> None:
    app.register(PerCustomer)
    with pytest.raises(ConfigurationError, match=says):
        app.publish(PerCustomer(), lock=lock)
    with app.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(task)).scalar() == 0


# --- expiry -------------------------------------------------------------------------


def test_an_expired_task_never_runs_and_settles_its_group_and_waiters(app: Tasker) -> None:
    app.register(Expiring, Report)
    members = app.group([Expiring(code="late"), Expiring(code="kept")], then=Report())
    late, kept = members
    with app.transaction() as conn:  # `kept` gets a long life; `late` keeps its 1 s
        conn.execute(sa.update(task).where(task.c.id == kept).values(expires_at=None))
    wait_past(app, row(app, late).expires_at)
    assert testing.run_until_idle(app) == {"success": 2}  # `kept` and the callback
    r = row(app, late)
    assert (r.status, r.attempts, r.started) == ("failed", 0, None)
    assert outcome.EXPIRED_REASON in r.errlog and r.errlog.startswith("[expired on ")
    res = app.result(late, timeout=1)
    assert res.success is False and "expired" in (res.error or "")
    with app.transaction() as conn:
        callback = conn.execute(
            sa.select(task).where(task.c.id > max(members)).order_by(task.c.id)
        ).all()
    assert len(callback) == 1 and callback[0].status == "success"
    assert callback[0].result == "[false, true]" and "expired" in callback[0].input


def test_the_start_refuses_an_expired_row_even_when_it_was_dispatched(app: Tasker) -> None:
    app.register(Expiring)
    tid = app.publish(Expiring(), expires=0.3)
    with app.transaction() as conn:
        pairs = store.task_claim_inprocess(conn, topic=Expiring.topic, limit=5, window_s=5)
    assert [p[0] for p in pairs] == [tid]
    wait_past(app, row(app, tid).expires_at)
    with app.transaction() as conn:
        assert store.task_start_if_token(conn, pairs=pairs, instance_id=1, fqdn="h") == []
        assert store.task_expire_due(conn, note="gone\n", limit=10) == [tid]
        assert store.task_expire_due(conn, note="gone\n", limit=10) == []  # once
    r = row(app, tid)
    assert (r.status, r.errlog, r.token, r.attempts) == ("failed", "gone\n", None, 0)


def test_an_admin_retry_of_an_expired_task_runs_it(app: Tasker) -> None:
    app.register(Expiring)
    tid = app.publish(Expiring(), expires=0.2)
    wait_past(app, row(app, tid).expires_at)
    testing.run_until_idle(app)
    assert row(app, tid).status == "failed"
    admin.retry(app, [tid])  # a fresh chance: a new deadline, not the one that passed
    assert testing.run_until_idle(app) == {"success": 1}


def backdated(app: Tasker, tid: int, *, published_s_ago: float, span_s: float) -> None:
    """Make `tid` look published `published_s_ago` with an expiry `span_s` after that."""
    with app.transaction() as conn:
        now = dialect.now(conn)
        created = now - dt.timedelta(seconds=published_s_ago)
        conn.execute(
            sa.update(task).where(task.c.id == tid)
            .values(created=created, expires_at=created + dt.timedelta(seconds=span_s))
        )  # fmt: skip


def renewed(r: Any, span_s: float) -> bool:
    """`r.expires_at` is `span_s` after the requeue (`updated`): on PostgreSQL
    both are the transaction's now(); SQLite's clock moves between the
    requeue statement and the renewal, by milliseconds (more on a busy box)."""
    after = r.expires_at - r.updated
    return dt.timedelta(seconds=span_s - 0.05) <= after <= dt.timedelta(seconds=span_s + 5)


def test_a_retry_gives_a_passed_expiry_its_span_again_from_now(app: Tasker) -> None:
    app.register(Expiring, Policied)
    expired = app.publish(Expiring())
    backdated(app, expired, published_s_ago=3600, span_s=60)
    failed = app.publish(Policied(kind="fail"), expires=60)  # fails at once; deadline goes by
    ahead = app.publish(Policied(kind="fail"), expires=3600)  # fails; deadline still ahead
    plain = app.publish(Policied(kind="fail"))  # no expiry
    testing.run_until_idle(app)
    assert {row(app, i).status for i in (expired, failed, ahead, plain)} == {"failed"}
    assert outcome.EXPIRED_REASON in row(app, expired).errlog
    backdated(app, failed, published_s_ago=600, span_s=60)
    kept = row(app, ahead).expires_at

    assert sorted(admin.retry(app, [expired, failed, ahead, plain])) == sorted(
        [expired, failed, ahead, plain]
    )
    for tid in (expired, failed):
        r = row(app, tid)
        assert r.status == "pending" and renewed(r, 60), r
    assert row(app, ahead).expires_at == kept
    assert row(app, plain).expires_at is None
    assert testing.run_until_idle(app) == {"success": 1, "failed": 3}  # ran, never expired
    assert row(app, expired).status == "success"


def test_the_dashboard_and_the_cli_retry_renew_a_passed_expiry_too(
    app: Tasker, db_url: str, local_broker: str, tmp_path: Any
) -> None:
    from tasker.web.server import create_app
    from tests.integration.test_web_actions import TOKEN, call

    app.register(Expiring)
    ids = [app.publish(Expiring(code=str(i))) for i in range(3)]
    for tid in ids:
        backdated(app, tid, published_s_ago=3600, span_s=30)
    testing.run_until_idle(app)
    assert {row(app, i).status for i in ids} == {"failed"}
    web = create_app(app, allow_actions=True, token=TOKEN)
    status, _, _ = call(web, "POST", f"/api/tasks/{ids[0]}/retry")
    assert status == 200
    status, _, body = call(web, "POST", "/api/tasks/retry", body={"status": "failed"})
    assert status == 200 and body["count"] == 2
    for tid in ids:
        r = row(app, tid)
        assert r.status == "pending" and renewed(r, 30), r
    assert testing.run_until_idle(app) == {"success": 3}
    with app.transaction() as conn:  # expired again, then `tasker retry` from the shell
        conn.execute(sa.update(task).where(task.c.id == ids[0]).values(status="failed"))
    backdated(app, ids[0], published_s_ago=3600, span_s=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=db_url, TASKER_BROKER_URL=local_broker)
    p = subprocess.run([sys.executable, "-m", "tasker.cli", "retry", str(ids[0])], env=env,
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = row(app, ids[0])
    assert r.status == "pending" and renewed(r, 30), r


# --- locks: the claim -------------------------------------------------------------


def master_claim(app: Tasker, topic: str) -> list[int]:
    with app.transaction() as conn:
        won = store.core_attempt_elect(conn, instance_id=1, fqdn="h")
        assert won is not None
        pairs = store.task_claim_due(
            conn, topic=topic, limit=100, term=won.term, instance_id=1, window_s=30
        )
    return [p[0] for p in pairs]


def start(app: Tasker, ids: list[int]) -> list[Any]:
    with app.transaction() as conn:
        stmt = sa.select(task.c.id, task.c.token).where(task.c.id.in_(ids))
        tokens = dict(conn.execute(stmt).all())
        return store.task_start_if_token(
            conn, pairs=[(i, tokens[i]) for i in ids], instance_id=1, fqdn="h"
        )


def finish(app: Tasker, started: list[Any], transition: str = "succeed") -> None:
    with app.transaction() as conn:
        store.task_finish_if_running_many(
            conn, transition=transition, rows=[{"tid": s.id, "wid": s.worker_id} for s in started]
        )


def test_the_claim_takes_the_first_task_per_key_and_only_when_the_key_is_free(
    app: Tasker,
) -> None:
    app.register(PerCustomer)
    a1 = app.publish(PerCustomer(customer_id=1, n=1))
    b1 = app.publish(PerCustomer(customer_id=2, n=1))
    a2 = app.publish(PerCustomer(customer_id=1, n=2))
    a0 = app.publish(PerCustomer(customer_id=1, n=0), priority=5)  # first by priority
    free = app.publish(PerCustomer(customer_id=3), lock=None)
    with app.transaction() as conn:  # one without a key beside them
        conn.execute(sa.update(task).where(task.c.id == free).values(lock_key=None))
    assert sorted(master_claim(app, PerCustomer.topic)) == sorted([a0, b1, free])
    assert master_claim(app, PerCustomer.topic) == []  # a0 in flight holds key 1
    s = start(app, [a0])
    assert master_claim(app, PerCustomer.topic) == []  # running holds it too
    finish(app, s)
    assert master_claim(app, PerCustomer.topic) == [a1]  # then (priority, id) order
    finish(app, start(app, [a1]), "retry")  # a retry keeps its place: a2 waits for it
    assert master_claim(app, PerCustomer.topic) == [a1]
    finish(app, start(app, [a1]))
    assert master_claim(app, PerCustomer.topic) == [a2]


def test_a_cancelled_or_failed_holder_frees_its_key(app: Tasker) -> None:
    app.register(PerCustomer)
    first = app.publish(PerCustomer(customer_id=9, n=1))
    second = app.publish(PerCustomer(customer_id=9, n=2))
    assert master_claim(app, PerCustomer.topic) == [first]
    finish(app, start(app, [first]), "fail")
    assert master_claim(app, PerCustomer.topic) == [second]


def test_run_until_idle_runs_a_key_in_order(app: Tasker) -> None:
    app.register(PerCustomer)
    ids = [app.publish(PerCustomer(customer_id=i % 2, n=i)) for i in range(6)]
    assert testing.run_until_idle(app) == {"success": 6}
    with app.transaction() as conn:
        rows = conn.execute(sa.select(task.c.id, task.c.started).where(task.c.id.in_(ids))).all()
    started = {r.id: r.started for r in rows}
    for key in (0, 1):
        mine = [i for n, i in enumerate(ids) if n % 2 == key]
        assert sorted(mine, key=lambda i: started[i]) == mine


# --- chain steps and group callbacks take their class's expires and lock ----------


class Order(MsgQ):
    """The first step: its result is the next step's input."""

    topic = "policy.order"
    customer_id: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return {"customer_id": self.customer_id, "amount": 5}


class Charge(MsgQ):
    """A later step (or a callback) with every per-row setting of its own."""

    topic = "policy.charge"
    expires = 120.0
    lock = "customer:{customer_id}"
    priority = 3
    customer_id: int = 0
    amount: int = 0
    results: list = dataclasses.field(default_factory=list)  # type: ignore[type-arg]

    def exec(self, ctx: Context, worker_id: int) -> object:
        return {"customer_id": self.customer_id, "amount": self.amount}


def rows_after(app: Tasker, first: int) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.id > first).order_by(task.c.id)).all()


def near(delta: dt.timedelta, seconds: float) -> bool:
    return dt.timedelta(seconds=seconds - 0.05) <= delta <= dt.timedelta(seconds=seconds + 0.05)


def test_a_later_chain_step_gets_its_class_expires_lock_and_priority(app: Tasker) -> None:
    first = app.chain([Order(customer_id=7), Charge, "policy.charge"])
    assert testing.run_until_idle(app) == {"success": 3}
    second, third = rows_after(app, first)
    for r in (second, third):
        assert r.lock_key == "customer:7" and r.priority == 3, r
        assert near(r.expires_at - r.created, 120), r  # counted from when the step is written
    assert row(app, first).lock_key is None  # Order has no lock


def test_a_later_step_that_expired_never_runs_and_ends_the_chain(app: Tasker) -> None:
    class Fleeting(MsgQ):
        topic = "policy.fleeting"
        expires = 0.2

        def exec(self, ctx: Context, worker_id: int) -> object:
            return "ran"

    first = app.chain([Order(customer_id=1), Fleeting])
    (started,) = start(app, master_claim(app, Order.topic))
    with app.transaction() as conn:  # the first step succeeds: the step after it is written
        rows = [{"tid": started.id, "wid": started.worker_id, "result": "{}", "linked": True}]
        store.task_finish_if_running_many(conn, transition="succeed", rows=rows)
    (step,) = rows_after(app, first)
    assert step.expires_at is not None
    wait_past(app, step.expires_at)
    testing.run_until_idle(app)
    r = row(app, step.id)
    assert (r.status, r.attempts) == ("failed", 0) and outcome.EXPIRED_REASON in r.errlog
    res = app.result(first, timeout=1)
    assert res.success is False and "expired" in (res.error or "")


def test_a_later_step_lock_uses_the_class_default_when_the_result_lacks_the_field(
    app: Tasker,
) -> None:
    class Note(MsgQ):
        topic = "policy.note"

        def exec(self, ctx: Context, worker_id: int) -> object:
            return {"amount": 1}  # no customer_id: Charge decodes it as 0

    first = app.chain([Note(), Charge])
    assert testing.run_until_idle(app) == {"success": 2}
    (step,) = rows_after(app, first)
    assert step.lock_key == "customer:0"


def test_a_group_callback_gets_its_class_expires_lock_and_priority(app: Tasker) -> None:
    members = app.group([Order(customer_id=1), Order(customer_id=2)], then=Charge(customer_id=9))
    assert testing.run_until_idle(app) == {"success": 3}
    (callback,) = rows_after(app, max(members))
    assert callback.topic == Charge.topic
    assert (callback.lock_key, callback.priority) == ("customer:9", 3)
    assert near(callback.expires_at - callback.created, 120)  # from when it is written


def test_a_chain_by_name_and_publish_raw_take_the_declared_expires_and_lock(app: Tasker) -> None:
    # A distributor without Charge: the instances serving it declared its settings.
    with app.transaction() as conn:
        store.topic_declare_many(conn, rows=[pipelines.declaration(Charge)])
    distributor = Tasker(app.database_url, broker=app.broker.url)
    try:
        first = distributor.chain([Order(customer_id=4), Charge.topic])
        raw = distributor.publish_raw(Charge.topic, {"customer_id": 5, "amount": 1})
        given = distributor.publish_raw(Charge.topic, {"customer_id": 6}, expires=9, lock="mine")
        fallback = distributor.publish_raw(Charge.topic, {"amount": 2})  # the class's default
    finally:
        distributor.close()
    app.register(Order, Charge)  # the instance that serves them
    assert testing.run_until_idle(app) == {"success": 5}
    (step,) = [r for r in rows_after(app, first) if r.id not in (raw, given, fallback)]
    assert (step.lock_key, step.priority) == ("customer:4", 3)
    assert near(step.expires_at - step.created, 120)
    r = row(app, raw)
    assert (r.lock_key, r.priority) == ("customer:5", 3) and near(r.expires_at - r.created, 120)
    r = row(app, given)
    assert r.lock_key == "mine" and near(r.expires_at - r.created, 9)
    assert row(app, fallback).lock_key == "customer:0"
