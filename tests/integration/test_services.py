"""Each runtime service driven pass by pass (`run_once`), on SQLite and
PostgreSQL with the folder broker: the beat and the lease, dispatch, rescue,
periodic inserts, maintenance, and the rule that an instance whose loops
stopped working stops beating."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, brokers, store
from tasker.runtime import triggers
from tasker.runtime.dispatch import Dispatcher, DispatcherConfig
from tasker.runtime.election import Elector
from tasker.runtime.lease import Lease
from tasker.runtime.maintenance import Maintenance, MaintenanceConfig
from tasker.runtime.periodic import PeriodicInserter
from tasker.runtime.rescue import Rescuer, RescuerConfig
from tasker.runtime.service import Supervision
from tasker.schema import instance, task


class Job(MsgQ):
    topic = "s.job"
    concurrency = 2

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Every(MsgQ):
    topic = "s.every"
    periodic = "* * * * * *"  # every second

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def register(app: Tasker, topics: dict[str, dict[str, int]] | None = None) -> int:
    with app.transaction() as conn:
        return store.instance_register(
            conn, fqdn="h", pid=1, topics=topics or {}, master_eligible=True
        )


def elector(app: Tasker, lease: Lease, iid: int, fatal: list[str], **kw: Any) -> Elector:
    return Elector(app.db, lease, supervise(fatal, max_failures=2, retry_s=0.01),
                   instance_id=lambda: iid, eligible=True, fqdn="h", **kw)  # fmt: skip


def supervise(fatal: list[str], **kw: Any) -> Supervision:
    return Supervision(fatal.append, **kw)


def rescuer(app: Tasker, lease: Lease, me: int, fatal: list[str]) -> Rescuer:
    return Rescuer(app.db, lease, supervise(fatal), RescuerConfig(grace_s=5, host="h"),
                   instance_id=lambda: me)  # fmt: skip


def test_one_lease_per_term_and_resign_hands_it_over(app: Tasker) -> None:
    fatal: list[str] = []
    a_lease, b_lease = Lease(), Lease()
    elected: list[int] = []
    a = elector(app, a_lease, register(app), fatal, on_elected=elected.append)
    b = elector(app, b_lease, register(app), fatal)
    a.run_once()
    b.run_once()
    assert (a_lease.term(), b_lease.term(), elected) == (1, None, [1])
    assert a.step_down()
    assert a_lease.term() is None
    b.run_once()
    assert b_lease.term() == 2
    a.run_once()  # a stepped down for good: it beats but never races again
    assert a_lease.term() is None and b_lease.term() == 2
    assert not fatal


def test_an_instance_whose_services_stopped_does_not_beat(app: Tasker) -> None:
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    e = elector(app, lease, iid, fatal, health=lambda: "service(s) stopped working: writer")
    with app.transaction() as conn:
        before = conn.execute(sa.select(instance.c.heartbeat).where(instance.c.id == iid)).scalar()
    e.run_once()
    with app.transaction() as conn:
        after = conn.execute(sa.select(instance.c.heartbeat).where(instance.c.id == iid)).scalar()
    assert after == before  # no beat
    assert lease.term() is None
    assert fatal == ["service(s) stopped working: writer"]


def test_dispatch_claims_within_capacity_and_publishes(app: Tasker, local_broker: str) -> None:
    ids = app.publish_many([Job() for _ in range(5)])
    fatal: list[str] = []
    lease = Lease()
    caps = {Job.topic: {"concurrency": 2, "prefetch": 1}}
    iid = register(app, caps)
    elector(app, lease, iid, fatal, topics=lambda: caps).run_once()
    d = Dispatcher(
        app.db, app.broker, lease, supervise(fatal), DispatcherConfig(window_s=15),
        specs={Job.topic: triggers.make_trigger(1)}, instance_id=lambda: iid,
    )  # fmt: skip
    d.run_once()
    d.stop()
    with app.broker.connect() as conn:
        q = app.broker.queue(Job.topic).bind(conn.channel())
        got = []
        while (m := q.get(no_ack=True)) is not None:
            got += brokers.decode_body(m.body)
    assert len(got) == 3  # two slots plus a prefetch of one
    with app.transaction() as c:
        tokens = dict(c.execute(sa.select(task.c.id, task.c.token).where(task.c.id.in_(ids))).all())
    assert sorted(got) == sorted((i, tokens[i]) for i in ids if tokens[i] is not None)
    assert not fatal


def test_dispatch_does_nothing_without_the_lease(app: Tasker) -> None:
    app.publish(Job())
    fatal: list[str] = []
    iid = register(app, {Job.topic: {"concurrency": 2, "prefetch": 1}})
    d = Dispatcher(
        app.db, app.broker, Lease(), supervise(fatal), DispatcherConfig(window_s=15),
        specs={Job.topic: triggers.make_trigger(1)}, instance_id=lambda: iid,
    )  # fmt: skip
    d.run_once()
    d.stop()
    with app.transaction() as c:
        assert c.execute(sa.select(task.c.token)).scalar() is None


def test_rescue_retries_the_task_of_a_dead_instance(app: Tasker) -> None:
    (task_id,) = app.publish_many([Job()])
    fatal: list[str] = []
    lease = Lease()
    me, dead = register(app), register(app)
    elector(app, lease, me, fatal).run_once()
    term = lease.term()
    assert term is not None
    with app.transaction() as conn:
        (pair,) = store.task_claim_due(conn, topic=Job.topic, limit=1, term=term,
                                       instance_id=me, window_s=15)  # fmt: skip
        store.task_start_if_token(conn, pairs=[pair], instance_id=dead, fqdn="gone")
        store.instance_delete(conn, instance_id=dead)
    assert rescuer(app, lease, me, fatal).run_once().rescued == 1
    with app.transaction() as conn:
        row = store.task_get(conn, task_id=task_id)
    assert (row.status, row.retry) == ("retry", 2)
    assert f"instance {dead} stopped beating" in row.errlog


def test_periodic_inserts_one_task_per_fire_time(app: Tasker) -> None:
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    elector(app, lease, iid, fatal).run_once()
    inserted: list[str] = []
    p = PeriodicInserter(app.db, lease, supervise(fatal), classes=[Job, Every],
                         instance_id=lambda: iid, on_inserted=inserted.append)  # fmt: skip
    first = p.run_once().inserted
    second = p.run_once().inserted  # same second, or the next: never twice for one fire time
    with app.transaction() as conn:
        times = conn.execute(sa.select(task.c.periodic_at).where(task.c.topic == Every.topic)).all()
    assert 1 <= len(times) <= 2 and len(set(times)) == len(times)
    assert first + second == len(times)
    assert inserted and set(inserted) == {Every.topic}
    with app.transaction() as conn:
        assert json.loads(conn.execute(sa.select(task.c.input).limit(1)).scalar()) == {}


def test_maintenance_forgets_dead_instances(app: Tasker) -> None:
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    old = register(app)
    elector(app, lease, iid, fatal).run_once()
    with app.transaction() as conn:
        conn.execute(
            sa.update(instance)
            .where(instance.c.id == old)
            .values(heartbeat=sa.text("'2000-01-01'"))
        )
    m = Maintenance(app.db, lease, supervise(fatal), MaintenanceConfig(keep_success_days=None))
    assert m.run_once().forgotten == 1
    with app.transaction() as conn:
        assert [r.id for r in store.instance_list(conn)] == [iid]


def test_dispatch_serves_topics_only_other_instances_know(app: Tasker) -> None:
    """A consumer running another module gets work whichever instance is master."""
    other = {"s.other": {"concurrency": 1, "prefetch": 0}}
    (tid,) = [app.publish_raw("s.other", {"x": 1})]
    fatal: list[str] = []
    lease = Lease()
    caps = {Job.topic: {"concurrency": 2, "prefetch": 1}}
    me = register(app, caps)
    register(app, other)
    elector(app, lease, me, fatal, topics=lambda: caps).run_once()
    d = Dispatcher(
        app.db, app.broker, lease, supervise(fatal), DispatcherConfig(window_s=15),
        specs={Job.topic: triggers.make_trigger(1)}, instance_id=lambda: me,
    )  # fmt: skip
    d.run_once()  # learns the topic
    d.run_once()  # its first sweep
    d.stop()
    with app.broker.connect() as conn:
        q = app.broker.queue("s.other").bind(conn.channel())
        m = q.get(no_ack=True)
        assert m is not None and [p[0] for p in brokers.decode_body(m.body)] == [tid]
    assert not fatal


def test_step_down_logs_resigned_only_when_the_lease_was_given_up(
    app: Tasker, caplog: pytest.LogCaptureFixture
) -> None:
    fatal: list[str] = []
    a_lease, b_lease = Lease(), Lease()
    a = elector(app, a_lease, register(app), fatal)
    b = elector(app, b_lease, register(app), fatal)
    a.run_once()
    a_term = a_lease.term()
    assert a_term is not None
    with app.transaction() as conn:  # b takes over while a still trusts its renewal
        assert store.core_resign(conn, instance_id=a.instance_id(), term=a_term)
    assert b.run_once().term == a_term + 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasker.runtime.election"):
        assert not a.step_down()
        assert "resigned master" not in caplog.text and "nothing to resign" in caplog.text
        assert b.step_down() and "resigned master" in caplog.text
    assert not fatal
