"""The runtime in this process (`app.start()` / `app.stop()`), on SQLite and
PostgreSQL with the server-less folder broker: the stats hook, periodic
tasks (also with two apps racing for master), `ctx.release` and results."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, db
from tasker.schema import task
from tests.conftest import core_set_timings
from tests.waiting import wait_for

FAST_HEARTBEAT_MS = 200
FAST_LEASE_MS = 1200


@pytest.fixture
def make_app(db_url: str, local_broker: str) -> Iterator[Callable[..., Tasker]]:
    """Apps on the same database and broker; every one is stopped and closed."""
    engine = db.make_engine(db_url)
    with db.transaction(engine) as conn:  # short beats so elections take ms, not seconds
        core_set_timings(
            conn, master_out_of_date_ms=FAST_LEASE_MS, instance_heartbeat_ms=FAST_HEARTBEAT_MS
        )
    engine.dispose()
    apps: list[Tasker] = []

    def make(*classes: type[MsgQ], **kw: Any) -> Tasker:
        a = Tasker(db_url, broker=local_broker, **kw)
        a.register(*classes)
        apps.append(a)
        return a

    yield make
    for a in apps:
        a.close()


def rows(app: Tasker, topic: str) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.topic == topic).order_by(task.c.id)).all()


# --- classes ------------------------------------------------------------------


class Echo(MsgQ):
    topic = "inproc.echo"
    spec = 0.1
    value: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.log(f"echo {self.value}")
        return {"value": self.value, "list": [1, "two", None]}


class Broken(MsgQ):
    topic = "inproc.broken"
    spec = 0.1
    retry = 1

    def exec(self, ctx: Context, worker_id: int) -> object:
        raise RuntimeError("broken on purpose")


class Tick(MsgQ):
    topic = "inproc.tick"
    spec = 0.1
    periodic = "*/1 * * * * *"
    note: str = "tick"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return self.note


RELAY_RUNS: list[tuple[int, float]] = []  # (attempt, monotonic time) of each run
RELAY_LOCK = threading.Lock()


class Relay(MsgQ):
    """Releases itself on its first run, succeeds on the next."""

    topic = "inproc.relay"
    spec = 0.1

    def exec(self, ctx: Context, worker_id: int) -> object:
        with RELAY_LOCK:
            RELAY_RUNS.append((ctx.attempt, time.monotonic()))
            first = len(RELAY_RUNS) == 1
        if first:
            ctx.release(0.2)
            return None
        return "second run"


# --- tests ----------------------------------------------------------------------


def test_stats_hook_sees_publish_and_success(make_app: Callable[..., Tasker]) -> None:
    seen: list[tuple[str, str, dt.datetime, float]] = []
    lock = threading.Lock()

    def hook(topic: str, status: str, at: dt.datetime, duration: float) -> None:
        with lock:
            seen.append((topic, status, at, duration))

    app = make_app(Echo, stats=hook)
    before = dt.datetime.now(dt.timezone.utc)
    tid = app.publish(Echo(value=3))
    with lock:
        assert [(t, s) for t, s, _, _ in seen] == [(Echo.topic, "pending")]
        _, _, at, took = seen[0]
    assert at.tzinfo is not None and at >= before - dt.timedelta(seconds=1)
    assert took >= 0

    app.start()
    assert app.result(tid, timeout=15).success
    done = wait_for(lambda: [x for x in list(seen) if x[1] == "success"], what="the success stat")
    assert len(done) == 1
    topic, _, at, took = done[0]
    assert topic == Echo.topic
    assert at >= before and at.tzinfo is not None
    assert took >= 0
    app.stop()
    assert [s for _, s, _, _ in seen] == ["pending", "success"]


def test_result_returns_value_and_failure(make_app: Callable[..., Tasker]) -> None:
    app = make_app(Echo, Broken)
    ok = app.publish(Echo(value=7))
    bad = app.publish(Broken())
    app.start()
    res = app.result(ok, timeout=15)
    assert res.success is True
    assert res.status == "success"
    assert res.result == {"value": 7, "list": [1, "two", None]}
    assert res.error is None
    fail = app.result(bad, timeout=15)
    assert fail.success is False
    assert fail.status == "failed"
    assert fail.result is None
    assert fail.error is not None and "broken on purpose" in fail.error
    (row,) = [r for r in rows(app, Echo.topic) if r.id == ok]
    assert "echo 7" in row.log
    assert row.attempts == 1 and row.worker_id == 0


def test_release_puts_back_without_charging_and_runs_again(
    make_app: Callable[..., Tasker],
) -> None:
    RELAY_RUNS.clear()
    app = make_app(Relay)
    tid = app.publish(Relay(), retry=2)
    app.start()
    res = app.result(tid, timeout=15)
    assert res.success and res.result == "second run"
    assert [a for a, _ in RELAY_RUNS] == [1, 2]
    # released with a 0.2 s delay: the second run did not start at once
    assert RELAY_RUNS[1][1] - RELAY_RUNS[0][1] >= 0.15
    (row,) = rows(app, Relay.topic)
    assert row.status == "success"
    assert row.retry == 2  # no run charged by the release
    assert row.attempts == 2
    assert row.errlog == ""


def periodic_times(app: Tasker) -> list[dt.datetime]:
    return [r.periodic_at for r in rows(app, Tick.topic)]


def assert_one_row_per_fire_time(times: list[dt.datetime]) -> None:
    assert all(t is not None for t in times)
    assert len(times) == len(set(times)), f"duplicate fire times: {times}"
    ordered = sorted(times)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ordered)]
    assert all(g == 1.0 for g in gaps), f"not consecutive seconds: {ordered}"
    assert all(t.microsecond == 0 for t in ordered)


def test_periodic_one_row_per_fire_time(make_app: Callable[..., Tasker]) -> None:
    app = make_app(Tick)
    runner = app.start()
    wait_for(lambda: runner.is_master, what="election")
    started = dt.datetime.now(dt.timezone.utc)
    wait_for(
        lambda: sum(t > started for t in periodic_times(app)) >= 2,
        timeout=10,
        what="two fire times after start",
    )
    wait_for(
        lambda: all(r.status == "success" for r in rows(app, Tick.topic)),
        timeout=15,
        what="every periodic task to run",
    )
    app.stop()
    times = periodic_times(app)
    assert_one_row_per_fire_time(times)
    assert all(r.result == '"tick"' for r in rows(app, Tick.topic))


def test_periodic_two_apps_one_row_per_fire_time(make_app: Callable[..., Tasker]) -> None:
    a = make_app(Tick)
    b = make_app(Tick)
    ra = a.start()
    wait_for(lambda: ra.is_master, what="first app elected")
    rb = b.start()
    started = dt.datetime.now(dt.timezone.utc)
    wait_for(
        lambda: sum(t > started for t in periodic_times(a)) >= 2,
        what="fire times with two apps",
    )
    assert not rb.is_master
    # hand over: the first app resigns, the second takes the lease and
    # catches up on fire times without inserting any twice
    a.stop()
    wait_for(lambda: rb.is_master, what="second app elected")
    handed = dt.datetime.now(dt.timezone.utc)
    wait_for(
        lambda: sum(t > handed for t in periodic_times(b)) >= 2,
        what="fire times under the second master",
    )
    b.stop()
    assert_one_row_per_fire_time(periodic_times(b))
