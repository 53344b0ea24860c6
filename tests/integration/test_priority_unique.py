"""Priorities and unique keys through the real statements, on SQLite and
PostgreSQL: claim order, every publish path (single, batch, COPY), the
partial unique index under concurrent publishers, and admin retry of a task
whose key a live task now holds."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import sqlalchemy as sa

from tasker import Context, DuplicateTask, MsgQ, Tasker, admin, store
from tasker.schema import task
from tests.integration.test_admin import elect, run_to


class Job(MsgQ):
    topic = "pu.job"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Urgent(MsgQ):
    topic = "pu.urgent"
    priority = 7
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def claim(app: Tasker, topic: str, limit: int) -> list[int]:
    term = elect(app)
    with app.transaction() as conn:
        pairs = store.task_claim_due(
            conn, topic=topic, limit=limit, term=term, instance_id=1, window_s=60
        )
    return [p[0] for p in pairs]


def column(app: Tasker, name: str, ids: list[int]) -> list[object]:
    with app.transaction() as conn:
        got = dict(conn.execute(sa.select(task.c.id, task.c[name]).where(task.c.id.in_(ids))).all())
    return [got[i] for i in ids]


def count(app: Tasker, **where: object) -> int:
    stmt = sa.select(sa.func.count()).select_from(task)
    for k, v in where.items():
        stmt = stmt.where(task.c[k] == v)
    with app.transaction() as conn:
        return int(conn.execute(stmt).scalar_one())


# --- priorities ---------------------------------------------------------------


def test_a_sweep_claims_higher_priorities_first_fifo_among_equals(app: Tasker) -> None:
    low = app.publish_many([Job(n=i) for i in range(3)])
    high = [app.publish(Job(n=10 + i), priority=5) for i in range(2)]
    below = app.publish(Job(n=20), priority=-1)
    mid = app.publish_many([Job(n=30), Job(n=31)], priority=2)
    first = claim(app, Job.topic, 5)
    assert first == high + mid + low[:1]  # in claim order: messages go out in it
    rest = claim(app, Job.topic, 10)
    assert rest == [*low[1:], below]
    assert column(app, "priority", high + mid + low + [below]) == [5, 5, 2, 2, 0, 0, 0, -1]


def test_priority_comes_from_the_class_unless_publish_overrides_it(app: Tasker) -> None:
    a = app.publish(Urgent())
    b = app.publish(Urgent(), priority=0)
    c = app.publish_raw(Urgent.topic, {"n": 1})
    d = admin.publish(app, Urgent.topic, '{"n": 2}', priority=-3)
    e = app.publish_raw("pu.unregistered", {}, priority=4)
    assert column(app, "priority", [a, b, c, d, e]) == [7, 0, 7, -3, 4]


@pytest.mark.parametrize("bad", [True, 1.5, "9", 2**31, -(2**31) - 1])
def test_bad_priority_is_refused_and_nothing_is_written(app: Tasker, bad: object) -> None:
    with pytest.raises(Exception, match="priority"):
        app.publish(Job(), priority=bad)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="priority"):
        app.publish_many([Job(), Job()], priority=bad)  # type: ignore[arg-type]
    assert count(app) == 0


def test_a_large_batch_carries_priority_and_keys_on_every_path(app: Tasker) -> None:
    """90 rows: the 60 keyless ones by COPY on PostgreSQL (from store.COPY_MIN_ROWS),
    the keyed ones by insert-or-find."""
    keys = [f"k{i % 5}" if i % 3 == 0 else None for i in range(90)]
    assert sum(k is None for k in keys) >= store.COPY_MIN_ROWS
    ids = app.publish_many([Job(n=i) for i in range(90)], priority=3, unique_keys=keys)
    assert len(ids) == 90
    assert set(column(app, "priority", sorted(set(ids)))) == {3}
    first_of = {}
    for i, k in zip(ids, keys, strict=True):
        if k is not None:
            assert first_of.setdefault(k, i) == i  # later duplicates get the first's id
    assert count(app) == 60 + 5
    assert column(app, "unique_key", list(first_of.values())) == list(first_of)


# --- unique keys --------------------------------------------------------------


def test_a_live_key_returns_the_live_task_and_inserts_nothing(app: Tasker) -> None:
    a = app.publish(Job(n=1), unique_key="report:2026-11")
    assert app.publish(Job(n=2), unique_key="report:2026-11") == a
    assert app.publish_raw(Job.topic, {"n": 3}, unique_key="report:2026-11") == a
    with pytest.raises(DuplicateTask) as err:
        app.publish(Job(n=4), unique_key="report:2026-11", on_conflict="raise")
    assert err.value.task_id == a and err.value.unique_key == "report:2026-11"
    assert str(a) in str(err.value)
    other_topic = app.publish(Urgent(), unique_key="report:2026-11")
    assert other_topic != a
    assert count(app, topic=Job.topic) == 1
    # Running still holds the key; once finished, the key is free again.
    assert run_to(app, Job.topic, "running") == [a]
    assert app.publish(Job(n=5), unique_key="report:2026-11") == a
    with app.transaction() as conn:
        conn.execute(sa.update(task).where(task.c.id == a).values(status="success"))
    b = app.publish(Job(n=6), unique_key="report:2026-11")
    assert b != a
    assert app.publish(Job(n=7), unique_key="report:2026-11") == b


def test_a_batch_with_raise_writes_nothing(app: Tasker) -> None:
    held = app.publish(Job(), unique_key="x")
    with pytest.raises(DuplicateTask):
        app.publish_many([Job(n=1), Job(n=2)], unique_keys=[None, "x"], on_conflict="raise")
    with pytest.raises(DuplicateTask, match="twice"):
        app.publish_many([Job(n=1), Job(n=2)], unique_keys=["y", "y"], on_conflict="raise")
    assert count(app) == 1
    ids = app.publish_many([Job(), Job(), Job()], unique_keys=["x", "z", "x"])
    assert ids[0] == ids[2] == held and ids[1] not in (held, None)
    assert column(app, "unique_key", [ids[1]]) == ["z"]
    assert count(app) == 2


@pytest.mark.pg
def test_concurrent_publishers_of_one_key_make_one_task(pg_url: str, local_broker: str) -> None:
    """The partial unique index decides, not a read-then-write: eight
    threads (eight connections) publish the same key at once."""
    app = Tasker(pg_url, broker=local_broker)
    barrier = threading.Barrier(8)
    got: list[int] = []

    def one() -> None:
        barrier.wait()
        got.append(app.publish(Job(), unique_key="once"))

    try:
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 8 and len(set(got)) == 1
        assert count(app, unique_key="once") == 1
    finally:
        app.close()


def test_retry_of_a_task_whose_key_is_held_is_skipped_with_a_reason(app: Tasker) -> None:
    old = app.publish(Job(n=1), unique_key="k")
    assert run_to(app, Job.topic, "fail") == [old]
    older = app.publish(Job(n=2), unique_key="k")
    assert run_to(app, Job.topic, "fail") == [older]
    live = app.publish(Job(n=3), unique_key="k")
    assert admin.retry_blocked(app, [old, older]) == {old: live, older: live}
    assert admin.retry(app, [old, older]) == []
    assert admin.retry(app, status="failed") == []
    with app.transaction() as conn:
        conn.execute(sa.update(task).where(task.c.id == live).values(status="success"))
    # Two finished tasks of one key: only the newest goes back.
    assert admin.retry_blocked(app, [old, older, live]) == {old: live, older: live}
    assert admin.retry(app, [old, older]) == [older]
    assert count(app, status="pending") == 1


def test_the_in_process_claim_of_tasker_testing_keeps_priority_order(app: Tasker) -> None:
    low = app.publish_many([Job(n=i) for i in range(3)])
    high = app.publish_many([Job(n=10 + i) for i in range(2)], priority=4)
    with app.transaction() as conn:
        pairs = store.task_claim_inprocess(conn, topic=Job.topic, limit=4, window_s=60)
    assert [p[0] for p in pairs] == [*high, *low[:2]]


def test_a_large_batch_mixing_class_priorities(app: Tasker) -> None:
    """COPY on PostgreSQL writes the priority column only when a row needs it:
    one class's priority among 60 default ones, and a batch of defaults."""
    ids = app.publish_many([*(Job(n=i) for i in range(60)), Urgent()])
    assert column(app, "priority", ids) == [0] * 60 + [7]
    plain = app.publish_many([Job(n=i) for i in range(60)])
    assert set(column(app, "priority", plain)) == {0}


class Report(MsgQ):
    topic = "pu.report"
    results: list = dataclasses.field(default_factory=list)  # type: ignore[type-arg]

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def test_chains_and_groups_start_with_their_class_priority(app: Tasker) -> None:
    app.register(Urgent, Job, Report)
    first = app.chain([Urgent(), Job.topic])
    members = app.group([Urgent(n=1), Job(n=2)], then=Report())
    assert column(app, "priority", [first, *members]) == [7, 7, 0]
