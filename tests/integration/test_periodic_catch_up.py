"""Periodic catch-up through the runtime in this process: a nightly job whose
last task is three nights old, started under each `catch_up` policy, on SQLite
and PostgreSQL with the folder broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, cron, db, store, when
from tasker.runtime.periodic import periodic_row
from tasker.schema import task
from tests.conftest import core_set_timings
from tests.integration.test_runtime_inprocess import FAST_HEARTBEAT_MS, FAST_LEASE_MS, wait_for

TZ = "Europe/Berlin"


def nightly_class(catch_up: str) -> type[MsgQ]:
    """A daily job at a local time about twelve hours away, so that no fire time is
    due while the test runs, whatever the hour."""
    local = dt.datetime.now(dt.timezone.utc).astimezone(cron.zone(TZ))
    line = f"{local.minute} {(local.hour + 12) % 24} * * *"

    def exec_(self: Any, ctx: Context, worker_id: int) -> object:
        return "night"

    attrs = {"topic": "t.nightly", "periodic": line, "timezone": TZ, "catch_up": catch_up}
    return type("Nightly", (MsgQ,), {**attrs, "spec": 0.1, "exec": exec_})


class Pulse(MsgQ):
    """Registered after Nightly: its first row proves Nightly's catch-up ran."""

    topic = "t.pulse"
    spec = 0.1
    periodic = "*/1 * * * * *"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


@pytest.fixture
def apps(db_url: str, local_broker: str) -> Iterator[Callable[..., Tasker]]:
    engine = db.make_engine(db_url)
    with db.transaction(engine) as conn:
        core_set_timings(
            conn, master_out_of_date_ms=FAST_LEASE_MS, instance_heartbeat_ms=FAST_HEARTBEAT_MS
        )
    engine.dispose()
    made: list[Tasker] = []

    def make(*classes: type[MsgQ]) -> Tasker:
        a = Tasker(db_url, broker=local_broker)
        a.register(*classes)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def fire_times(app: Tasker, topic: str) -> list[dt.datetime]:
    with app.transaction() as conn:
        stmt = sa.select(task.c.periodic_at).where(task.c.topic == topic)
        return sorted(when.as_utc(r.periodic_at) for r in conn.execute(stmt))


@pytest.mark.parametrize(("catch_up", "inserted"), [("all", 3), ("latest", 1), ("none", 0)])
def test_a_new_master_catches_up_on_missed_nights(
    apps: Callable[..., Tasker], catch_up: str, inserted: int
) -> None:
    nightly = nightly_class(catch_up)
    schedule = cron.parse(nightly.periodic, TZ)
    now = dt.datetime.now(dt.timezone.utc)
    nights = [schedule.latest_at_or_before(now)]
    for _ in range(3):
        nights.insert(0, schedule.latest_at_or_before(nights[0] - dt.timedelta(seconds=1)))
    last_done = nights[0]  # three nights ago; the three after it were missed
    app = apps(nightly, Pulse)
    with app.transaction() as conn:
        store.task_insert_many(conn, rows=[periodic_row(nightly, last_done)])
    started = app.start()
    try:
        wait_for(lambda: fire_times(app, Pulse.topic), timeout=15, what="the first pulse")
        assert fire_times(app, nightly.topic) == [last_done, *nights[4 - inserted :]]
        assert started.is_master
    finally:
        app.stop()
