"""An idle cluster costs the database next to nothing (PERFORMANCE: idle
cost), on real PostgreSQL: the master reads when each topic next falls due
instead of sweeping it every tick, its rescue rests while nothing runs, and
every guarantee still holds: a publish is swept at once, a delayed task
starts at its tick, a plain-SQL insert without `pg_notify` within
`IDLE_RECHECK_S`, a dead instance's task is rescued."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, defaults, store
from tasker.runtime.lease import Lease
from tasker.runtime.maintenance import Maintenance, MaintenanceConfig
from tasker.runtime.notify import Listener
from tasker.runtime.outbox import PublisherConfig, ResultPublisher
from tasker.runtime.quiet import QuietTopics
from tasker.runtime.rescue import Rescuer, RescuerConfig
from tasker.runtime.service import Supervision
from tasker.schema import task
from tests.conftest import PG_ADMIN
from tests.integration.test_services import elector, register, supervise
from tests.waiting import stays, wait_for

WINDOW_S = 15.0


class Job(MsgQ):
    topic = "idle.job"
    spec = 0.1
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


@pytest.fixture
def pg_app(pg_url: str, local_broker: str) -> Iterator[Tasker]:
    app = Tasker(pg_url, broker=local_broker)
    app.register(Job)
    yield app
    app.close()


def insert(app: Tasker, topic: str, *, delay_s: float = 0.0, priority: int = 0, **cols: Any) -> int:
    """A task row written by plain SQL, without NOTIFY."""
    with app.transaction() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO task (topic, input, timeout, retry, exec_after, priority) "
                "VALUES (:t, '{}', 5000, 3, now() + make_interval(secs => :d), :p) RETURNING id"
            ),
            {"t": topic, "d": delay_s, "p": priority},
        ).scalar_one()
        if cols:
            conn.execute(sa.update(task).where(task.c.id == row).values(**cols))
        return int(row)


def set_cols(app: Tasker, tid: int, sql: str) -> None:
    with app.transaction() as conn:
        conn.execute(sa.text(f"UPDATE task SET {sql} WHERE id = :i"), {"i": tid})


# --- what the master reads ------------------------------------------------------


def test_next_due_reads_when_each_topic_falls_due(pg_app: Tasker) -> None:
    insert(pg_app, "i.later", delay_s=30)
    insert(pg_app, "i.now")
    insert(pg_app, "i.prio", delay_s=20)
    insert(pg_app, "i.prio", delay_s=10, priority=5)  # another band comes first
    sent = insert(pg_app, "i.sent")
    set_cols(pg_app, sent, "dispatched = now(), term = 5, token = 1")  # claimed, not started
    with pg_app.transaction() as conn:
        due = store.task_next_due(
            conn, topics=["i.later", "i.now", "i.none", "i.prio", "i.sent"], term=5,
            window_s=WINDOW_S,
        )  # fmt: skip
        older_term = store.task_next_due(conn, topics=["i.sent"], term=6, window_s=WINDOW_S)
    assert due["i.none"] is None
    assert 28 < (due["i.later"] or 0) <= 30
    assert (due["i.now"] or 1) <= 0
    assert 8 < (due["i.prio"] or 0) <= 10
    assert 18 < (due["i.sent"] or 0) <= WINDOW_S + 5  # the redelivery window plus its timeout
    assert (older_term["i.sent"] or 1) <= 0  # an earlier master's claim is free at once


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def quiet(app: Tasker, clock: Clock, **kw: Any) -> QuietTopics:
    kw.setdefault("quiet_after_s", 0.0)  # the rules of resting, without the traffic rule
    return QuietTopics(app.db, listening=lambda: True, unsettled=lambda: False,
                       window_s=WINDOW_S, recheck_s=10.0, clock=clock, **kw)  # fmt: skip


def test_a_topic_with_traffic_is_swept_on_spec_without_reads(pg_app: Tasker) -> None:
    clock = Clock()
    q = quiet(pg_app, clock, quiet_after_s=5.0)
    q.notified("i.busy")
    assert q.to_sweep({"i.busy"}, 1) == {"i.busy"} and q.probes == 0  # as before: a sweep
    assert q.refresh_due(["i.busy"])
    clock.t += 5.0  # no NOTIFY named it for quiet_after_s: it may rest
    assert q.to_sweep({"i.busy"}, 1) == set() and q.probes == 1


def test_a_quiet_topic_is_read_again_on_notify_at_its_due_time_or_after_the_recheck(
    pg_app: Tasker,
) -> None:
    clock = Clock()
    q = quiet(pg_app, clock)
    insert(pg_app, "i.later", delay_s=1)
    assert q.to_sweep({"i.later", "i.none"}, 1) == set() and q.probes == 1
    clock.t += 0.5
    assert q.to_sweep({"i.later", "i.none"}, 1) == set() and q.probes == 1  # known: no read
    insert(pg_app, "i.none")  # plain SQL, no NOTIFY: not seen yet ...
    assert q.to_sweep({"i.none"}, 1) == set() and q.probes == 1
    q.notified("i.none")  # ... until a NOTIFY names the topic
    assert q.to_sweep({"i.none"}, 1) == {"i.none"} and q.probes == 2
    q.swept({"i.none"}, set(), 3)

    def tick() -> set[str]:
        clock.t += 0.2
        return q.to_sweep({"i.later"}, 1)

    # The delayed one: read again when the time it was due in has passed,
    # and swept at the first tick after its exec_after.
    wait_for(lambda: tick() == {"i.later"}, 10, "i.later due")
    insert(pg_app, "i.sql")  # never notified: seen at the recheck
    assert q.to_sweep({"i.sql"}, 1) == {"i.sql"}  # never read before: read now
    q.swept({"i.sql"}, set(), 1)
    insert(pg_app, "i.sql")
    assert q.to_sweep({"i.sql"}, 1) == {"i.sql"}  # swept: read again at its next tick


def test_a_due_topic_whose_sweep_sent_nothing_waits_for_freed_capacity(pg_app: Tasker) -> None:
    clock = Clock()
    q = quiet(pg_app, clock)
    insert(pg_app, "i.held")
    assert q.to_sweep({"i.held"}, 1) == {"i.held"}
    q.swept({"i.held"}, set(), 0)  # no consumer, a lock, a limit: nothing went out
    probes = q.probes
    assert q.to_sweep({"i.held"}, 1) == set() and q.probes == probes
    q.notified(store.CAPACITY_PREFIX + "i.other")  # an execution ended somewhere
    assert q.to_sweep({"i.held"}, 1) == {"i.held"}
    q.swept({"i.held"}, set(), 0)
    q.notified(store.INSTANCE_PREFIX + "7")  # an instance started: capacity may have come
    assert q.to_sweep({"i.held"}, 1) == {"i.held"}
    q.swept({"i.held"}, set(), 0)
    clock.t += 10  # or the recheck
    assert q.to_sweep({"i.held"}, 1) == {"i.held"}
    rated = quiet(pg_app, clock, rated=["i.held"])
    assert rated.to_sweep({"i.held"}, 1) == {"i.held"}
    rated.swept({"i.held"}, set(), 0)  # its allowance spent: swept at its next tick
    assert rated.to_sweep({"i.held"}, 1) == {"i.held"}


def test_a_notify_during_the_read_is_not_lost(
    pg_app: Tasker, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    q = quiet(pg_app, clock)
    read = store.task_next_due

    def read_then_notified(conn: Any, **kw: Any) -> dict[str, float | None]:
        due = read(conn, **kw)  # the read saw nothing due ...
        q.notified(store.CAPACITY_PREFIX + "i.x")  # ... then a retry was written and notified
        return due

    monkeypatch.setattr(store, "task_next_due", read_then_notified)
    assert q.to_sweep({"i.x", "i.y"}, 1) == set()
    monkeypatch.setattr(store, "task_next_due", read)
    probes = q.probes
    assert q.to_sweep({"i.x", "i.y"}, 1) == set() and q.probes == probes + 1  # i.x read again
    assert q.to_sweep({"i.x", "i.y"}, 1) == set() and q.probes == probes + 1  # both known now


def test_unsure_means_sweeping_on_spec(pg_app: Tasker) -> None:
    clock = Clock()
    listening, unsettled = [True], [False]
    q = QuietTopics(pg_app.db, listening=lambda: listening[0], unsettled=lambda: unsettled[0],
                    window_s=WINDOW_S, recheck_s=10.0, clock=clock)  # fmt: skip
    assert q.to_sweep({"i.a"}, 1) == set()  # nothing due: quiet
    listening[0] = False  # notifications may be missed
    assert q.to_sweep({"i.a"}, 1) == {"i.a"} and q.refresh_due(["i.a"])
    listening[0] = True
    assert q.to_sweep({"i.a"}, 1) == set()
    unsettled[0] = True  # a refused publish is undone and due at once
    assert q.to_sweep({"i.a"}, 1) == {"i.a"}
    unsettled[0] = False
    assert q.to_sweep({"i.a"}, 1) == set()
    probes = q.probes
    assert q.to_sweep({"i.a"}, 2) == set() and q.probes == probes + 1  # a new term reads again
    with pg_app.transaction() as conn:
        store.topic_set_paused(conn, name="i.p", paused=True)
    insert(pg_app, "i.p")
    assert q.to_sweep({"i.p"}, 2) == set()  # paused: not swept, however due
    with pg_app.transaction() as conn:
        store.topic_set_paused(conn, name="i.p", paused=False)
    q.notified(store.TOPIC_PREFIX + "i.p")  # what resume sends
    assert q.to_sweep({"i.p"}, 2) == {"i.p"}


def test_an_unknown_topic_or_a_new_instance_refreshes_the_live_instances(pg_app: Tasker) -> None:
    clock = Clock()
    q = quiet(pg_app, clock)
    assert q.refresh_due(["i.a"])
    assert not q.refresh_due(["i.a"])
    q.notified("i.a")  # a topic we sweep: nothing to learn
    assert not q.refresh_due(["i.a"])
    q.notified("i.new")  # a publish to a topic we do not sweep: learn who serves it
    assert q.refresh_due(["i.a"])
    q.notified(store.INSTANCE_PREFIX + "3")
    assert q.refresh_due(["i.a"])
    clock.t += 10
    assert q.refresh_due(["i.a"])


# --- an idle instance, end to end ----------------------------------------------------


def started_at(app: Tasker, tid: int) -> Any:
    with app.transaction() as conn:
        return conn.execute(
            sa.select(task.c.status, task.c.started, task.c.exec_after, task.c.created)
            .where(task.c.id == tid)
        ).one()  # fmt: skip


def test_an_idle_master_rests_and_still_starts_everything_on_time(
    pg_app: Tasker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "IDLE_RECHECK_S", 2.0)
    runner = pg_app.start()
    assert runner.quiet is not None and runner.listener is not None
    listener = runner.listener
    wait_for(lambda: runner.is_master and listener.listening, 15, "master and LISTEN")
    assert pg_app.result(pg_app.publish(Job(n=1)), timeout=15).success  # woken by NOTIFY
    probes = runner.quiet.probes
    # Idle: ticks every 0.1 s, yet the topic is read at most once per recheck.
    stays(lambda: runner.quiet is not None and runner.quiet.probes <= probes + 2, 3.0,
          "the idle topic read at most every IDLE_RECHECK_S")  # fmt: skip
    delayed = pg_app.publish(Job(n=2), exec_after=1.5)
    row = wait_for(lambda: (r := started_at(pg_app, delayed)).started and r, 15, "the delayed one")
    late = (row.started - row.exec_after).total_seconds()
    assert 0 <= late < 1.0  # its tick (0.1 s) after it fell due, as before
    plain = insert(pg_app, Job.topic)  # no pg_notify: seen at the recheck
    row = wait_for(lambda: (r := started_at(pg_app, plain)).started and r, 15, "the plain insert")
    assert (row.started - row.created).total_seconds() < 2.0 + 1.0


def test_the_rescue_rests_while_nothing_runs_and_watches_after_a_dispatch(
    pg_app: Tasker,
) -> None:
    fatal: list[str] = []
    lease = Lease()
    me = register(pg_app)
    elector(pg_app, lease, me, fatal).run_once()
    r = Rescuer(pg_app.db, lease, supervise(fatal), RescuerConfig(grace_s=5, host="h"),
                instance_id=lambda: me, listening=lambda: True)  # fmt: skip
    r.run_once()
    assert r.outlook is not None and not r.outlook.busy
    r.outlook = None
    r.run_once()
    assert r.outlook is None  # rested: not a statement
    with pg_app.transaction() as conn:  # a dead instance's running task
        dead = store.instance_register(conn, fqdn="d", pid=2, topics={}, master_eligible=False)
        conn.execute(sa.text("UPDATE instance SET heartbeat = now() - interval '1 hour' "
                             "WHERE id = :i"), {"i": dead})  # fmt: skip
    tid = insert(pg_app, Job.topic)
    set_cols(pg_app, tid, f"status = 'running', worker_id = 9, instance_id = {dead}, "
                          "started = now(), attempts = 1")  # fmt: skip
    r.touch()  # what a dispatch of this master does
    assert r.run_once().rescued == 1
    assert r.outlook is not None
    expiring = pg_app.publish(Job(n=3), expires=0.5, exec_after=60)
    r.touch()  # what the publish NOTIFY does
    wait_for(lambda: r.run_once().expired == 1, 10, "the expiry, though resting")
    assert started_at(pg_app, expiring).status == "failed"
    assert not fatal


# --- the shared connection and the listener ---------------------------------------


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_the_listener_says_when_notifications_can_be_missed(pg_app: Tasker) -> None:
    listens: list[int] = []
    fatal: list[str] = []
    listener = Listener(pg_app.db.url, Supervision(fatal.append), on_publish=lambda p: None,
                        on_core=lambda: None, on_listen=lambda: listens.append(1))  # fmt: skip
    try:
        assert not listener.listening
        listener.run_once()
        assert listener.listening and listens == [1]
        with pg_app.transaction() as conn:
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%'")).scalar_one()  # fmt: skip
        terminate(pid)
        wait_for(lambda: listener.run_once() and not listener.listening, 10, "the loss seen")
        listener.run_once()
        assert listener.listening and listens == [1, 1]  # LISTEN again: look at everything
    finally:
        listener.stop()
    assert not fatal


# --- the other idle loops ----------------------------------------------------------------


def test_retention_that_caught_up_looks_again_a_minute_later(pg_app: Tasker) -> None:
    old = "status = 'success', finished = now() - interval '30 days'"
    set_cols(pg_app, insert(pg_app, Job.topic), old)
    fatal: list[str] = []
    lease = Lease()
    elector(pg_app, lease, register(pg_app), fatal).run_once()
    m = Maintenance(pg_app.db, lease, supervise(fatal), MaintenanceConfig(keep_success_days=7))
    assert m.run_once().deleted == 1
    set_cols(pg_app, insert(pg_app, Job.topic), old)
    assert m.run_once().deleted == 0  # caught up: not a DELETE a second
    assert not fatal


def test_an_empty_outbox_is_read_less_and_less_often(pg_app: Tasker) -> None:
    p = ResultPublisher(pg_app.db, pg_app.broker, Supervision(print), PublisherConfig(),
                        queues=["idle.results"])  # fmt: skip
    try:
        waits = [p.run_once().wait_s for _ in range(6)]
    finally:
        p.stop()
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_an_instance_start_is_notified(pg_app: Tasker) -> None:
    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + str(pg_app.db.url.database),
                         autocommit=True) as conn:  # fmt: skip
        conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
        iid = register(pg_app)
        got = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
    assert got == [f"{store.INSTANCE_PREFIX}{iid}"]
