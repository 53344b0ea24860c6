"""Publishing through the app on both databases."""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import MsgQ, PayloadError, Tasker, TaskTimeout, store
from tasker.exceptions import ConfigurationError, DuplicateTopic, TaskNotFound


class Add(MsgQ):
    topic = "math.add"
    timeout = 2.5
    retry = 4
    a: int
    b: int = 0

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return self.a + self.b


def test_publish_uses_class_defaults_and_overrides(app: Tasker) -> None:
    first = app.publish(Add(a=1))
    second = app.publish(Add(a=2), timeout=10, retry=5)
    with app.transaction() as conn:
        r1 = store.task_get(conn, task_id=first)
        r2 = store.task_get(conn, task_id=second)
    assert (r1.topic, r1.status, r1.input, r1.timeout, r1.retry) == (
        "math.add",
        "pending",
        '{"a":1,"b":0}',
        2500,
        4,
    )
    assert (r2.timeout, r2.retry) == (10_000, 5)
    assert r1.exec_after <= r1.created + dt.timedelta(seconds=1)


def test_publish_delayed(app: Tasker) -> None:
    when = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    tid = app.publish(Add(a=1), exec_after=when)
    later = app.publish(Add(a=1), exec_after=dt.timedelta(hours=1))
    with app.transaction() as conn:
        assert store.task_get(conn, task_id=tid).exec_after == when
        r = store.task_get(conn, task_id=later)
    assert dt.timedelta(minutes=59) < r.exec_after - r.created < dt.timedelta(minutes=61)


def test_publish_many_returns_ids_in_order(app: Tasker) -> None:
    ids = app.publish_many([Add(a=i) for i in range(500)])
    assert len(ids) == 500 and ids == sorted(ids)
    with app.transaction() as conn:
        assert store.task_get(conn, task_id=ids[123]).input == '{"a":123,"b":0}'


def test_publish_errors_lose_nothing(app: Tasker) -> None:
    class Clash(MsgQ):
        topic = "math.add"
        a: int

        def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
            return None

    app.publish(Add(a=1))
    with pytest.raises(DuplicateTopic):
        app.publish(Clash(a=1))
    with pytest.raises(PayloadError):
        app.publish_raw("math.add", "{nope")
    with pytest.raises(PayloadError, match=r"missing field \$\.a"):
        app.publish_raw("math.add", "{}")
    with pytest.raises(ConfigurationError):
        app.publish(Add(a=1), retry=0)
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        app.publish(Add(a=object()))  # type: ignore[arg-type]
    with app.transaction() as conn:
        assert store.task_status_many(conn, ids=list(range(1, 10))) == {1: "pending"}


def test_two_apps_share_nothing(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = Tasker(db_url, broker=f"filesystem://{tmp_path}/a")
    b = Tasker(f"sqlite:///{tmp_path}/other.db", broker=f"filesystem://{tmp_path}/b")
    try:
        a.register(Add)
        assert "math.add" in a.registry and "math.add" not in b.registry
        assert a.engine is not b.engine
    finally:
        a.close()
        b.close()


def test_result_waits_and_times_out(app: Tasker) -> None:
    tid = app.publish(Add(a=1))
    with pytest.raises(TaskTimeout):
        app.result(tid, timeout=0.2)
    with pytest.raises(TaskNotFound):
        app.result(10**9, timeout=0.1)


def test_publish_many_rate_is_measured_not_asserted(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    app = Tasker(pg_url, broker=f"filesystem://{tmp_path}/b")
    try:
        t0 = time.perf_counter()
        ids = app.publish_many([Add(a=i) for i in range(5000)])
        rate = len(ids) / (time.perf_counter() - t0)
        print(f"publish_many on PostgreSQL: {rate:.0f} tasks/s")
        assert len(set(ids)) == 5000
    finally:
        app.close()
