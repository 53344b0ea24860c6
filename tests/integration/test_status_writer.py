"""The status writer driven pass by pass (`run_once`) on SQLite and PostgreSQL:
a batch the database refuses is split, the bad outcome becomes a failure
saying why, and the outcomes beside it are written and acked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tasker import Context, MsgQ, Tasker, outcome, store
from tasker.runtime.consumer.state import ConsumerState, Job
from tasker.runtime.consumer.writer import StatusWriter, Written
from tasker.runtime.service import Supervision
from tasker.runtime.stats import as_hook


class Job1(MsgQ):
    topic = "w.job"
    concurrency = 4

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def _claimed(app: Tasker, n: int) -> tuple[int, list[tuple[int, int]]]:
    ids = app.publish_many([Job1() for _ in range(n)])
    with app.transaction() as conn:
        iid = store.instance_register(conn, fqdn="h", pid=1, topics={}, master_eligible=True)
        won = store.core_attempt_elect(conn, instance_id=iid, fqdn="h")
    assert won is not None
    with app.transaction() as conn:
        pairs = store.task_claim_due(
            conn, topic=Job1.topic, limit=n, term=won.term, instance_id=iid, window_s=15
        )
    assert sorted(p[0] for p in pairs) == ids
    return iid, pairs


def _writer(app: Tasker, state: ConsumerState, iid: int, fatal: list[str]) -> StatusWriter:
    return StatusWriter(
        app.db, state, Supervision(fatal.append, 2, 0.01), instance_id=lambda: iid, fqdn="h",
        stats=as_hook(None), respawn=lambda topic: None, on_prefetch_change=lambda: None,
    )  # fmt: skip


def test_a_refused_outcome_fails_alone_and_its_neighbours_are_written(app: Tasker) -> None:
    iid, pairs = _claimed(app, 3)
    state = ConsumerState({Job1.topic: Job1}, prefetch=0, host="h")
    state.new_connection()
    state.received(Job1.topic, SimpleNamespace(delivery_tag=1), pairs)
    fatal: list[str] = []
    writer = _writer(app, state, iid, fatal)
    assert writer.run_once() == Written(0.0, 0, 3)  # the starts
    jobs: list[Job] = [state.lanes[Job1.topic].ready.get_nowait() for _ in pairs]
    assert all(state.begin(j, 60.0) is not None for j in jobs)
    poison = outcome.Decision("retry", take=1, err="e", delay_s=1e18)  # no database stores this
    decisions: list[Any] = [outcome.succeeded(1), poison, outcome.succeeded(3)]
    for job, d in zip(jobs, decisions, strict=True):
        assert state.finish(job, d, "log line\n")
    writer.run_once()
    with app.transaction() as conn:
        rows = {r.id: r for r in (store.task_get(conn, task_id=j.task_id) for j in jobs)}
    good, bad, good2 = (rows[j.task_id] for j in jobs)
    assert (good.status, good.result, good2.status, good2.result) == (
        "success",
        "1",
        "success",
        "3",
    )
    assert bad.status == "retry" and bad.retry == 2
    assert "could not store this outcome (retry)" in bad.errlog
    assert not fatal
    acks = state.take_acks()
    assert [(a[2], a[3]) for a in acks] == [(1, True)]  # the message is acked once all are written
    writer.stop()
