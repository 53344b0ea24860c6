"""Cluster-wide limits and pause in the master's Dispatcher, driven pass by
pass (`run_once`) on SQLite and PostgreSQL with the folder broker: claims
never exceed `global_concurrency` beside what is in flight, nor the rate
rate limit (its state kept in the database, so a new master goes on counting);
a paused topic is not dispatched, publishing still works, and resume
dispatches it again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin, limits, store
from tasker.limits import Rate
from tasker.metrics import Metrics
from tasker.runtime import triggers
from tasker.runtime.dispatch import Dispatcher, DispatcherConfig
from tasker.runtime.lease import Lease
from tasker.schema import task, topic
from tests.integration.test_services import elector, register, supervise
from tests.waiting import wait_for

CAPS = {"concurrency": 4, "prefetch": 4}  # per instance: 8 a sweep may hold


class Capped(MsgQ):
    topic = "lp.capped"
    global_concurrency = 3
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Rated(MsgQ):
    topic = "lp.rated"
    rate_limit = "3/h"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def master(app: Tasker, cls: type[MsgQ], fatal: list[str], **kw: Any) -> tuple[Dispatcher, int]:
    """A dispatcher under a fresh lease of its own instance; returns it and its term."""
    lease = Lease()
    iid = register(app, {cls.topic: CAPS})
    elector(app, lease, iid, fatal, topics=lambda: {cls.topic: CAPS}).run_once()
    term = lease.term()
    assert term is not None
    d = Dispatcher(
        app.db, app.broker, lease, supervise(fatal), DispatcherConfig(window_s=15, **kw),
        specs={cls.topic: triggers.make_trigger(1)}, instance_id=lambda: iid,
        limits={cls.topic: limits.limits_of(cls)},
    )  # fmt: skip
    return d, term


def claimed(app: Tasker, name: str) -> set[int]:
    with app.transaction() as conn:
        rows = conn.execute(
            sa.select(task.c.id).where(task.c.topic == name, task.c.token.isnot(None))
        )
        return set(rows.scalars())


def test_global_concurrency_caps_claims_beside_what_is_in_flight(app: Tasker) -> None:
    ids = app.publish_many([Capped(n=i) for i in range(10)])
    fatal: list[str] = []
    d, _ = master(app, Capped, fatal)
    assert d.run_once().dispatched == 3
    first = claimed(app, Capped.topic)
    assert len(first) == 3  # not 8: the consumers could hold more, the cluster may not
    d.run_once()
    assert claimed(app, Capped.topic) == first  # dispatched, not started: still in flight
    with app.transaction() as conn:
        started = store.task_start_if_token(
            conn, pairs=[(i, t) for i, t in _tokens(conn, first).items()], instance_id=1, fqdn="h"
        )
    assert len(started) == 3
    d.run_once()
    assert claimed(app, Capped.topic) == first  # running counts too
    done = started[0]
    with app.transaction() as conn:
        store.task_finish_if_running_many(
            conn, transition="succeed", rows=[{"tid": done.id, "wid": done.worker_id}]
        )
    d.run_once()
    now = claimed(app, Capped.topic)
    assert done.id not in now and first - {done.id} <= now
    assert len(now - first) == 1 and (now - first) <= set(ids)  # one freed, one more
    d.stop()
    assert not fatal


def _tokens(conn: sa.Connection, ids: set[int]) -> dict[int, int]:
    rows = conn.execute(sa.select(task.c.id, task.c.token).where(task.c.id.in_(ids)))
    return dict(rows.all())


def _db_now(app: Tasker) -> dt.datetime:
    with app.transaction() as conn:
        return store.now(conn)


def _set_tat(app: Tasker, name: str, tat: dt.datetime | None) -> None:
    with app.transaction() as conn:
        conn.execute(sa.delete(topic).where(topic.c.name == name))
        conn.execute(sa.insert(topic).values(name=name, rate_tat=tat))


def _tat(app: Tasker, name: str) -> dt.datetime:
    with app.transaction() as conn:
        row = conn.execute(
            sa.select(topic.c.rate_tat, topic.c.rate_window).where(topic.c.name == name)
        ).one()
    assert row.rate_window is None  # the calendar columns are left alone
    assert row.rate_tat is not None
    return row.rate_tat  # type: ignore[no-any-return]


def test_rate_limit_state_is_kept_in_the_database_across_masters(app: Tasker) -> None:
    app.publish_many([Rated(n=i) for i in range(10)])
    rate = Rate(3, 3600)  # a start every 1224 s, a batch may reach 72 s ahead
    step = dt.timedelta(microseconds=limits.emission_us(rate))
    # A stored time an hour ahead (as after the clock went back): nothing yet,
    # and the next sweep waits until the next claim is allowed.
    _set_tat(app, Rated.topic, _db_now(app) + dt.timedelta(hours=1))
    fatal: list[str] = []
    d, term = master(app, Rated, fatal)
    swept = d.run_once()
    assert swept.dispatched == 0 and claimed(app, Rated.topic) == set()
    assert swept.wait_s <= 1.0
    assert d._next[Rated.topic] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=57)
    # A stored time long past: one claim (no burst: starts are spread).
    _set_tat(app, Rated.topic, _db_now(app) - dt.timedelta(hours=5))
    d.wake_topic(Rated.topic)
    before = _db_now(app)
    assert d.run_once().dispatched == 1
    first = claimed(app, Rated.topic)
    tat = _tat(app, Rated.topic)
    assert before + step <= tat <= _db_now(app) + step  # written with the claim
    assert d._next[Rated.topic] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=18)
    d.wake_topic(Rated.topic)
    d.run_once()
    assert claimed(app, Rated.topic) == first
    d.stop()
    # A new master (a new term) reads the same state: no reset.
    with app.transaction() as conn:
        store.core_resign(conn, instance_id=d.instance_id(), term=term)
    d2, term2 = master(app, Rated, fatal)
    assert term2 == term + 1
    d2.run_once()
    assert _tat(app, Rated.topic) == tat
    # The earlier term's claim is due again for the new master, but the
    # limit counts claims, not tasks: none now.
    with app.transaction() as conn:
        terms = set(conn.execute(sa.select(task.c.term).where(task.c.token.isnot(None))).scalars())
    assert terms == {term}
    d2.stop()
    assert not fatal


def test_a_topic_without_limits_writes_no_counter(app: Tasker) -> None:
    app.publish_many([Capped(n=i) for i in range(3)])
    fatal: list[str] = []
    d, _ = master(app, Capped, fatal)
    d.run_once()
    d.stop()
    with app.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(topic)).scalar() == 0


def test_pause_stops_dispatch_publishing_works_resume_dispatches(app: Tasker) -> None:
    fatal: list[str] = []
    d, _ = master(app, Capped, fatal)
    admin.pause(app, Capped.topic)
    admin.pause(app, Capped.topic)  # twice is harmless
    ids = app.publish_many([Capped(n=i) for i in range(2)])  # publishing still works
    assert admin.paused_topics(app) == {Capped.topic}
    assert admin.status(app)["paused"] == [Capped.topic]
    d.run_once()
    d.wake_topic(Capped.topic)
    d.run_once()
    assert claimed(app, Capped.topic) == set()
    admin.resume(app, Capped.topic)
    assert admin.paused_topics(app) == set()
    # Without a NOTIFY (SQLite) the master sees the resume within a second.
    wait_for(lambda: d.run_once() is not None and claimed(app, Capped.topic) == set(ids), 5,
             "the resumed topic dispatched")  # fmt: skip
    d.stop()
    assert not fatal


def test_pause_refuses_bad_topics_and_the_gauge_shows_it(app: Tasker) -> None:
    # The same rule as publish (topics.topic_problem): a newline is refused too.
    for bad in ["", "  ", "x" * 201, "a\x00b", "\ud800", 5, None, "a\nb", "tab\there"]:
        try:
            admin.pause(app, bad)  # type: ignore[arg-type]
        except Exception as exc:
            assert type(exc).__name__ == "ConfigurationError", exc
        else:
            raise AssertionError(f"pause({bad!r}) was accepted")
    assert admin.paused_topics(app) == set()
    app.register(Capped, Rated)
    admin.pause(app, "not.served.yet")
    admin.pause(app, Rated.topic)
    m = Metrics.create(app)
    sample = m.registry.get_sample_value
    assert sample("tasker_topic_paused", {"topic": Rated.topic}) == 1.0
    assert sample("tasker_topic_paused", {"topic": "not.served.yet"}) == 1.0
    assert sample("tasker_topic_paused", {"topic": Capped.topic}) == 0.0
    admin.resume(app, Rated.topic)
    assert sample("tasker_topic_paused", {"topic": Rated.topic}) == 0.0
