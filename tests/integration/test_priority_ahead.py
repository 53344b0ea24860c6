"""Priorities under prefetch in the master's Dispatcher, driven pass by pass
(`run_once`) on SQLite and PostgreSQL with the folder broker: a task claimed
ahead of a free slot is taken back when a higher priority becomes due, so
the slot goes to the higher task; a topic whose tasks share one priority
keeps its claims."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, limits, store
from tasker.runtime import triggers
from tasker.runtime.dispatch import Dispatcher, DispatcherConfig
from tasker.runtime.lease import Lease
from tasker.schema import task
from tests.integration.test_services import elector, register, supervise

ONE = {"concurrency": 1, "prefetch": 1}  # one running, one claimed ahead


class Job(MsgQ):
    topic = "pa.job"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def master(app: Tasker, fatal: list[str]) -> tuple[Dispatcher, int]:
    lease = Lease()
    iid = register(app, {Job.topic: ONE})
    elector(app, lease, iid, fatal, topics=lambda: {Job.topic: ONE}).run_once()
    d = Dispatcher(
        app.db, app.broker, lease, supervise(fatal), DispatcherConfig(window_s=15),
        specs={Job.topic: triggers.make_trigger(1)}, instance_id=lambda: iid,
        limits={Job.topic: limits.limits_of(Job)},
    )  # fmt: skip
    return d, iid


def tokens(app: Tasker) -> dict[int, int]:
    """The claimed tasks not started: id -> token."""
    with app.transaction() as conn:
        rows = conn.execute(sa.select(task.c.id, task.c.token).where(
            task.c.topic == Job.topic, task.c.token.isnot(None), task.c.status == "pending"))
        return dict(rows.all())  # fmt: skip


def start(app: Tasker, pairs: dict[int, int], iid: int) -> list[Any]:
    with app.transaction() as conn:
        return store.task_start_if_token(conn, pairs=list(pairs.items()), instance_id=iid,
                                         fqdn="h")  # fmt: skip


def status(app: Tasker, tid: int) -> str:
    with app.transaction() as conn:
        return str(conn.execute(sa.select(task.c.status).where(task.c.id == tid)).scalar_one())


def test_a_higher_priority_takes_the_place_claimed_ahead(app: Tasker) -> None:
    fatal: list[str] = []
    d, iid = master(app, fatal)
    running = app.publish(Job(n=0))
    d.run_once()
    assert len(start(app, tokens(app), iid)) == 1  # the one slot is busy
    low = app.publish(Job(n=1))
    d.wake_topic(Job.topic)
    d.run_once()
    ahead = tokens(app)
    assert set(ahead) == {low}  # claimed ahead of the free slot (prefetch 1)
    high = app.publish(Job(n=2), priority=5)
    d.wake_topic(Job.topic)
    d.run_once()  # takes the low claim back ...
    d.run_once()  # ... and claims the high one in its place
    now = tokens(app)
    assert set(now) == {high}, now
    # The consumer holding the low one's message finds its token moved on.
    assert start(app, ahead, iid) == []
    assert status(app, low) == "pending"
    assert status(app, running) == "running"
    d.stop()
    assert not fatal


def test_one_priority_keeps_its_claims_and_asks_nothing_more(app: Tasker) -> None:
    fatal: list[str] = []
    d, iid = master(app, fatal)
    app.publish(Job(n=0), priority=3)
    d.run_once()
    start(app, tokens(app), iid)
    app.publish_many([Job(n=i) for i in range(1, 5)], priority=3)
    d.wake_topic(Job.topic)
    d.run_once()
    first = tokens(app)
    assert len(first) == 1
    for _ in range(3):
        d.wake_topic(Job.topic)
        d.run_once()
    assert tokens(app) == first  # nothing taken back among equals
    assert d._ahead[Job.topic] == 3
    d.stop()
    assert not fatal
