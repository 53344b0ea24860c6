"""The master remembers the last fire time of each periodic topic in `topic`
(DESIGN 7), so a purge or retention of old rows never makes a fire time run
again; catch-up after a gap, on SQLite and PostgreSQL. The master's pass is
driven with an explicit `now`, so nothing waits for a clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin, cron, store, when
from tasker.runtime.election import Elector
from tasker.runtime.lease import Lease
from tasker.runtime.maintenance import Maintenance, MaintenanceConfig
from tasker.runtime.periodic import PeriodicInserter, periodic_row
from tasker.runtime.service import Supervision
from tasker.schema import task, topic

LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


class Every5(MsgQ):
    topic = "pm.every5"
    periodic = "*/5 * * * * *"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Every20(MsgQ):
    topic = "pm.every20"
    periodic = "*/20 * * * * *"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Weekly(MsgQ):
    topic = "pm.weekly"
    periodic = "0 3 * * MON"
    timezone = "Europe/Berlin"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def master(app: Tasker, *classes: type[MsgQ]) -> tuple[PeriodicInserter, int]:
    """A periodic inserter of an elected master, and its term."""
    fatal: list[str] = []
    lease = Lease()
    with app.transaction() as conn:
        iid = store.instance_register(conn, fqdn="h", pid=1, topics={}, master_eligible=True)
    Elector(app.db, lease, Supervision(fatal.append), instance_id=lambda: iid,
            eligible=True, fqdn="h").run_once()  # fmt: skip
    term = lease.term()
    assert term is not None, fatal
    inserter = PeriodicInserter(app.db, lease, Supervision(fatal.append), classes=list(classes),
                                instance_id=lambda: iid, on_inserted=lambda _t: None)  # fmt: skip
    return inserter, term


def fire_times(app: Tasker, name: str) -> list[dt.datetime]:
    with app.transaction() as conn:
        stmt = sa.select(task.c.periodic_at).where(task.c.topic == name)
        return sorted(when.as_utc(r) for r in conn.execute(stmt).scalars())


def finish(app: Tasker, at: dt.datetime, status: str, cls: type[MsgQ]) -> None:
    """Mark the periodic task of fire time `at` as ended long ago."""
    with app.transaction() as conn:
        conn.execute(
            sa.update(task)
            .where(task.c.topic == cls.topic, task.c.periodic_at == at)
            .values(status=status, finished=LONG_AGO)
        )


def test_a_purge_after_a_failed_run_does_not_reinsert_purged_fire_times(app: Tasker) -> None:
    inserter, term = master(app, Every5)
    t0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.timezone.utc)
    for k in range(5):  # fire times t0 .. t0+20s, each inserted when due
        assert inserter.insert_due(Every5, term, t0 + dt.timedelta(seconds=5 * k)) == 1
    times = fire_times(app, Every5.topic)
    assert times == [t0 + dt.timedelta(seconds=5 * k) for k in range(5)]
    finish(app, times[0], "failed", Every5)  # the first run failed
    for at in times[1:]:
        finish(app, at, "success", Every5)
    assert admin.purge(app, dt.timedelta(seconds=1)) == 4
    assert inserter.insert_due(Every5, term, t0 + dt.timedelta(seconds=21)) == 0
    assert fire_times(app, Every5.topic) == [t0]
    assert inserter.insert_due(Every5, term, t0 + dt.timedelta(seconds=25)) == 1  # the next one


def test_retention_of_last_weeks_run_does_not_rerun_it(app: Tasker) -> None:
    schedule = cron.parse(Weekly.periodic, Weekly.timezone)
    week1 = schedule.next_after(dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
    assert week1 is not None
    week2 = schedule.next_after(week1)
    assert week2 is not None
    inserter, term = master(app, Weekly)
    assert inserter.insert_due(Weekly, term, week1 + dt.timedelta(seconds=1)) == 1
    finish(app, week1, "failed", Weekly)  # one old failed run
    assert inserter.insert_due(Weekly, term, week2 + dt.timedelta(seconds=1)) == 1
    finish(app, week2, "success", Weekly)
    config = MaintenanceConfig(keep_success_days=1)
    assert Maintenance(app.db, Lease(), Supervision(print), config).retention() == 1
    # Days later (each pass reads what the master remembers from the database,
    # as a new master after a deploy does):
    assert inserter.insert_due(Weekly, term, week2 + dt.timedelta(days=3)) == 0
    assert fire_times(app, Weekly.topic) == [week1]


def test_latest_after_five_minutes_without_a_master_inserts_one(app: Tasker) -> None:
    inserter, term = master(app, Every20)
    t0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert inserter.insert_due(Every20, term, t0) == 1
    later = t0 + dt.timedelta(minutes=5, seconds=3)
    assert inserter.insert_due(Every20, term, later) == 1
    assert fire_times(app, Every20.topic) == [t0, t0 + dt.timedelta(minutes=5)]


def test_all_after_five_minutes_inserts_every_missed_one_oldest_first(app: Tasker) -> None:
    cls: Any = type("Every20All", (Every20,), {"catch_up": "all"})
    inserter, term = master(app, cls)
    t0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert inserter.insert_due(cls, term, t0) == 1
    assert inserter.insert_due(cls, term, t0 + dt.timedelta(minutes=5, seconds=3)) == 15
    with app.transaction() as conn:
        rows = conn.execute(
            sa.select(task.c.periodic_at).where(task.c.topic == cls.topic).order_by(task.c.id)
        ).scalars()
        by_id = [when.as_utc(r) for r in rows]
    assert by_id == [t0 + dt.timedelta(seconds=20 * k) for k in range(16)]


def test_the_last_fire_time_is_kept_in_topic_and_read_once_from_task_after_an_upgrade(
    app: Tasker,
) -> None:
    t0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.timezone.utc)
    inserter, term = master(app, Every5)
    with app.transaction() as conn:  # a row the previous release inserted
        store.task_insert_periodic(conn, row=periodic_row(Every5, t0), term=term,
                                   instance_id=inserter.instance_id())  # fmt: skip
        assert store.topic_periodic_last(conn, name=Every5.topic) is None
    assert inserter.insert_due(Every5, term, t0 + dt.timedelta(seconds=11)) == 2
    with app.transaction() as conn:
        kept = conn.execute(sa.select(topic.c.periodic_last).where(topic.c.name == Every5.topic))
        assert when.as_utc(kept.scalar_one()) == t0 + dt.timedelta(seconds=10)
        conn.execute(sa.delete(task))  # every row gone: the topic still remembers
    assert inserter.insert_due(Every5, term, t0 + dt.timedelta(seconds=12)) == 0
    assert fire_times(app, Every5.topic) == []

