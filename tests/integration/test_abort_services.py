"""Abort driven service by service (`run_once`) on SQLite and PostgreSQL: the
beat hands the consumer its instance's cancel requests, the status writer
records a cancelled execution as failed (never retried), a task cancelled
before its start never runs, a graceful stop records a cancelled execution
as cancelled rather than handing it back, and the master's rescue finishes
the cancelled task of a dead instance (or one a live instance did not heed
in time) as cancelled instead of retrying it."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin, outcome, store
from tasker.runtime.consumer import Consumer
from tasker.runtime.consumer.state import ConsumerState, Job
from tasker.runtime.consumer.writer import StatusWriter
from tasker.runtime.lease import Lease
from tasker.runtime.rescue import Rescuer, RescuerConfig
from tasker.runtime.service import Supervision
from tasker.runtime.stats import as_hook
from tasker.schema import task
from tests.integration.test_services import elector, register


class Long(MsgQ):
    topic = "ab.long"
    concurrency = 4

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def claim(app: Tasker, iid: int, lease: Lease, n: int) -> list[tuple[int, int]]:
    """Claim n due tasks under our lease; returns their (id, token) pairs."""
    term = lease.term()
    assert term is not None
    with app.transaction() as conn:
        return store.task_claim_due(conn, topic=Long.topic, limit=n, term=term,
                                    instance_id=iid, window_s=15)  # fmt: skip


def consumer(app: Tasker, iid: int, fatal: list[str]) -> tuple[ConsumerState, StatusWriter]:
    state = ConsumerState({Long.topic: Long}, prefetch=0, host="h")
    state.new_connection()
    writer = StatusWriter(
        app.db, state, Supervision(fatal.append, 2, 0.01), instance_id=lambda: iid, fqdn="h",
        stats=as_hook(None), respawn=lambda topic: None, on_prefetch_change=lambda: None,
    )  # fmt: skip
    return state, writer


def row(app: Tasker, task_id: int) -> object:
    with app.transaction() as conn:
        return store.task_get(conn, task_id=task_id)


def test_the_beat_hands_over_cancels_and_the_writer_records_them(app: Tasker) -> None:
    ids = app.publish_many([Long() for _ in range(3)])
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    state, writer = consumer(app, iid, fatal)
    beat = elector(app, lease, iid, fatal, on_cancel=state.cancel_requested)
    beat.run_once()
    state.received(Long.topic, SimpleNamespace(delivery_tag=1), claim(app, iid, lease, 3))
    writer.run_once()  # the starts
    jobs: list[Job] = [state.lanes[Long.topic].ready.get_nowait() for _ in ids]
    ctxs = [Context(j.task_id, Long.topic, 1, 0) for j in jobs]
    for job, ctx in zip(jobs, ctxs, strict=True):
        assert state.begin(job, 60.0, ctx) is not None

    polite, returns, untouched = jobs
    assert admin.cancel_tasks(app, [polite.task_id, returns.task_id]).requested == sorted(
        [polite.task_id, returns.task_id]
    )
    beat.run_once()  # reads this instance's requests in its transaction
    assert [c.cancelled for c in ctxs] == [True, True, False]
    assert (polite.cancelled, returns.cancelled, untouched.cancelled) == (True, True, False)

    failure = outcome.failed(retry_left=3, attempt=1, reason="TaskCancelled: stop")
    assert state.finish(polite, failure, "")
    assert state.finish(returns, outcome.succeeded({"done": 1}), "")
    assert state.finish(untouched, outcome.succeeded(2), "")
    writer.run_once()
    for job in (polite, returns):
        r = row(app, job.task_id)
        assert (r.status, r.retry, r.result) == ("failed", 3, None)
        assert outcome.CANCELLED_REASON in r.errlog
    assert "TaskCancelled: stop" in row(app, polite.task_id).errlog
    assert row(app, untouched.task_id).status == "success"
    with app.transaction() as conn:
        assert store.task_cancel_wanted(conn, instance_id=iid) == []  # none left running
    assert not fatal
    writer.stop()


def test_a_task_cancelled_before_its_start_never_runs(app: Tasker) -> None:
    (tid,) = app.publish_many([Long()])
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    state, writer = consumer(app, iid, fatal)
    elector(app, lease, iid, fatal).run_once()
    pairs = claim(app, iid, lease, 1)
    # Claimed (not yet started) when the admin cancels: it fails at once; the
    # later start finds no due row and drops the message as stale.
    assert admin.cancel_tasks(app, [tid]).cancelled == [tid]
    state.received(Long.topic, SimpleNamespace(delivery_tag=1), pairs)
    writer.run_once()
    assert state.lanes[Long.topic].ready.empty()
    assert row(app, tid).status == "failed"
    assert [(a[2], a[3]) for a in state.take_acks()] == [(1, True)]
    assert not fatal
    writer.stop()


def test_rescue_finishes_a_dead_instances_cancelled_task_as_cancelled(app: Tasker) -> None:
    ids = app.publish_many([Long(), Long()])
    fatal: list[str] = []
    lease = Lease()
    me, dead = register(app), register(app)
    elector(app, lease, me, fatal).run_once()
    pairs = claim(app, me, lease, 2)
    with app.transaction() as conn:
        store.task_start_if_token(conn, pairs=pairs, instance_id=dead, fqdn="gone")
        store.instance_delete(conn, instance_id=dead)
    assert admin.cancel_tasks(app, [ids[0]]).requested == [ids[0]]
    r = Rescuer(app.db, lease, Supervision(fatal.append), RescuerConfig(grace_s=5, host="h"),
                instance_id=lambda: me)  # fmt: skip
    assert r.run_once().rescued == 2
    cancelled, other = row(app, ids[0]), row(app, ids[1])
    assert (cancelled.status, cancelled.retry) == ("failed", 3)
    assert outcome.CANCELLED_REASON in cancelled.errlog and "master" in cancelled.errlog
    assert (other.status, other.retry) == ("retry", 2)  # not cancelled: retried as before
    assert not fatal


def test_a_request_that_missed_its_execution_stops_the_next_start(app: Tasker) -> None:
    (tid,) = app.publish_many([Long()])
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    elector(app, lease, iid, fatal).run_once()
    pairs = claim(app, iid, lease, 1)
    with app.transaction() as conn:
        (started,) = store.task_start_if_token(conn, pairs=pairs, instance_id=iid, fqdn="h")
    assert admin.cancel_tasks(app, [tid]).requested == [tid]
    # The instance stopped before it learned of the request and handed the task back.
    with app.transaction() as conn:
        back = [store.Finish(tid, started.worker_id, outcome.handed_back())]
        assert store.task_finish_many(conn, back) == 1
    state, writer = consumer(app, iid, fatal)
    state.received(Long.topic, SimpleNamespace(delivery_tag=1), claim(app, iid, lease, 1))
    writer.run_once()
    job = state.lanes[Long.topic].ready.get_nowait()
    ctx = Context(tid, Long.topic, 2, 0)
    assert state.begin(job, 60.0, ctx) is not None
    assert job.cancelled and ctx.cancelled  # the worker records it cancelled without running it
    writer.stop()


def test_graceful_stop_records_a_cancelled_execution_as_cancelled(app: Tasker) -> None:
    ids = app.publish_many([Long(), Long()])
    fatal: list[str] = []
    lease = Lease()
    iid = register(app)
    elector(app, lease, iid, fatal).run_once()
    c = Consumer(
        app.db, app.broker, Supervision(fatal.append, 2, 0.01), classes={Long.topic: Long},
        instance_id=lambda: iid, fqdn="h", stats=as_hook(None), prefetch=0, max_wait_s=60,
        on_prefetch_change=lambda: None,
    )  # fmt: skip
    c.state.new_connection()
    c.state.received(Long.topic, SimpleNamespace(delivery_tag=1), claim(app, iid, lease, 2))
    c.writer.run_once()
    jobs = [c.state.lanes[Long.topic].ready.get_nowait() for _ in ids]
    for job in jobs:
        assert c.state.begin(job, 60.0, Context(job.task_id, Long.topic, 1, 0)) is not None
    admin.cancel_tasks(app, [jobs[0].task_id])
    c.cancel_requested([(jobs[0].task_id, jobs[0].task.worker_id)])  # type: ignore[union-attr]
    assert c.hand_back() == 2  # the grace ended with both still running
    cancelled, handed = row(app, jobs[0].task_id), row(app, jobs[1].task_id)
    assert (cancelled.status, cancelled.retry) == ("failed", 3)
    assert "the instance stopped before exec did" in cancelled.errlog
    assert (handed.status, handed.retry, handed.errlog) == ("pending", 3, "")
    c.writer.stop()
    assert not fatal


def test_rescue_finishes_a_cancel_a_live_instance_did_not_heed(app: Tasker) -> None:
    ids = app.publish_many([Long(), Long()])
    fatal: list[str] = []
    lease = Lease()
    me = register(app)
    elector(app, lease, me, fatal).run_once()
    pairs = claim(app, me, lease, 2)
    with app.transaction() as conn:
        store.task_start_if_token(conn, pairs=pairs, instance_id=me, fqdn="h")
    assert admin.cancel_tasks(app, ids).requested == ids
    r = Rescuer(app.db, lease, Supervision(fatal.append), RescuerConfig(grace_s=5, host="h"),
                instance_id=lambda: me)  # fmt: skip
    assert r.run_once().rescued == 0  # the live instance has two heartbeats to do it itself
    with app.transaction() as conn:  # the first request is older than the lease plus the grace
        conn.execute(
            sa.update(task).where(task.c.id == ids[0])
            .values(cancel_requested=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
        )  # fmt: skip
    assert r.run_once().rescued == 1
    assert (row(app, ids[0]).status, row(app, ids[1]).status) == ("failed", "running")
    assert outcome.CANCELLED_REASON in row(app, ids[0]).errlog
    assert not fatal
