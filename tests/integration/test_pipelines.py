"""Chains, groups and result topics through the real store, on SQLite and
PostgreSQL: executions are claimed, started, run by `execute` and finished
by the store's own statements (one transaction each, as a consumer or the
rescuer writes them), or by the status writer's batched finish."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker, admin, outcome, store
from tasker.exceptions import ConfigurationError, PayloadError, TaskTimeout
from tasker.runtime.consumer.state import ConsumerState, Job
from tasker.runtime.consumer.writer import StatusWriter
from tasker.runtime.execute import execute
from tasker.runtime.service import Supervision
from tasker.runtime.stats import as_hook
from tasker.schema import task, task_group, task_outbox
from tasker.states import Status
from tests.fixtures.pipelines import Add, Bill, Boom, Report, Words
from tests.integration.runner import Runner


@pytest.fixture
def papp(app: Tasker) -> Tasker:
    app.register(Add, Boom, Words, Report, Bill)
    return app


def rows_of(app: Tasker, where: Any) -> list[Any]:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(where).order_by(task.c.id)).all()


# --- chains -------------------------------------------------------------------


def test_a_chain_runs_each_step_on_the_previous_result(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add", Add])
    assert Runner(papp).run_all() == 3
    steps = rows_of(papp, task.c.chain_id == first)
    assert [(s.chain_step, s.status, json.loads(s.input)) for s in steps] == [
        (1, "success", {"n": 1, "sleep": 0.0}),
        (2, "success", {"n": 2}),
        (3, "success", {"n": 3}),
    ]
    assert json.loads(steps[0].chain_next) == [
        {"topic": "p.add", "timeout": 5000, "retry": 3, "result_topic": None, "priority": 0},
        {"topic": "p.add", "timeout": 5000, "retry": 3, "result_topic": None, "priority": 0},
    ]
    assert steps[2].chain_next is None
    res = papp.result(first, timeout=5)
    assert (res.success, res.result, res.task_id) == (True, {"n": 4}, steps[2].id)


def test_a_later_step_keeps_its_class_priority(papp: Tasker) -> None:
    class Urgent(Add):
        topic = "p.urgent"
        priority = 7

    papp.register(Urgent)
    first = papp.chain([Add(n=1), Urgent])
    Runner(papp).run_all()
    steps = rows_of(papp, task.c.chain_id == first)
    assert [(s.topic, s.priority, s.status) for s in steps] == [
        ("p.add", 0, "success"),
        ("p.urgent", 7, "success"),
    ]


def test_a_failed_step_stops_the_chain_and_is_the_result(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.boom", "p.add"])
    Runner(papp).run_all()
    steps = rows_of(papp, task.c.chain_id == first)
    assert [(s.chain_step, s.topic, s.status) for s in steps] == [
        (1, "p.add", "success"),
        (2, "p.boom", "failed"),
    ]
    res = papp.result(first, timeout=5)
    assert not res.success and res.task_id == steps[1].id
    assert "boom at n=2" in (res.error or "")


def test_a_result_that_does_not_fit_the_next_step_fails_it_as_bad_input(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.words"])
    Runner(papp).run_all()
    res = papp.result(first, timeout=5)
    assert not res.success
    assert "bad input: the result of chain step 1 does not decode into p.words (step 2)" in (
        res.error or ""
    )
    assert "(step 2): unknown field $.n" in (res.error or "")
    (step2,) = rows_of(papp, (task.c.chain_id == first) & (task.c.chain_step == 2))
    assert step2.retry == 3  # bad input burns no run


def test_a_step_that_succeeds_again_starts_its_successor_once(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add"])
    runner = Runner(papp)
    runner.run_all()
    with papp.transaction() as conn:
        assert store.task_requeue_if_finished(conn, ids=[first], runs=1, note="again\n") == [first]
    runner.run_all()
    assert len(rows_of(papp, task.c.chain_id == first)) == 2


def test_chain_refuses_what_cannot_run(papp: Tasker) -> None:
    with pytest.raises(ConfigurationError, match="step 2: topic"):
        papp.chain([Add(n=1), "x" * 201])
    with pytest.raises(PayloadError, match="step 2: give its topic or MsgQ class"):
        papp.chain([Add(n=1), Add(n=2)])
    with pytest.raises(PayloadError, match="step 1 must be a MsgQ instance"):
        papp.chain(["p.add"])  # type: ignore[list-item]
    with pytest.raises(PayloadError, match="non-empty list"):
        papp.chain([])
    assert rows_of(papp, task.c.id > 0) == []  # nothing was written


# --- groups -------------------------------------------------------------------


def test_the_callback_is_written_once_with_every_result_in_member_order(papp: Tasker) -> None:
    ids = papp.group([Add(n=10), Boom(n=1), Add(n=20)], then=Report(label="x"))
    runner = Runner(papp)
    rows = runner.start(Add.topic) + runner.start(Boom.topic)
    by_id = {r.id: r for r in rows}
    # Finish out of order, one transaction each: only the last writes the callback.
    runner.finish(by_id[ids[2]], outcome.succeeded({"n": 21}))
    runner.finish(by_id[ids[1]], outcome.failed(retry_left=1, attempt=1, reason="nope"))
    assert rows_of(papp, task.c.topic == Report.topic) == []
    runner.finish(by_id[ids[0]], outcome.succeeded({"n": 11}))
    (callback,) = rows_of(papp, task.c.topic == Report.topic)
    payload = json.loads(callback.input)
    assert payload["label"] == "x"
    got = [(r["id"], r["success"], r["result"]) for r in payload["results"]]
    assert got == [(ids[0], True, {"n": 11}), (ids[1], False, None), (ids[2], True, {"n": 21})]
    assert "nope" in payload["results"][1]["error"] and payload["results"][0]["error"] is None
    with papp.transaction() as conn:
        g = conn.execute(sa.select(task_group)).one()
    assert (g.callback_id, g.size, g.done) == (callback.id, 3, 3)
    runner.run_all()
    assert papp.result(callback.id, timeout=5).result == {"label": "x", "ids": ids, "ok": 2}


def test_cancelled_and_rescued_members_count_as_ended(papp: Tasker) -> None:
    ids = papp.group([Add(n=1), Add(n=2), Add(n=3)], then=Report())
    runner = Runner(papp)
    assert admin.cancel(papp, [ids[0]]) == [ids[0]]  # pending: cancelled at once
    rows = {r.id: r for r in runner.start(Add.topic)}
    runner.finish(rows[ids[1]], outcome.succeeded({"n": 3}))
    last = rows[ids[2]]
    fail = outcome.failed(retry_left=1, attempt=1, reason="rescued")
    finishes = [store.Finish(last.id, last.worker_id, fail, linked=last.linked)]
    with papp.transaction() as conn:
        store.task_rescue_many(conn, term=runner.term, instance_id=runner.iid,
                               finishes=finishes)  # fmt: skip
    (callback,) = rows_of(papp, task.c.topic == Report.topic)
    results = json.loads(callback.input)["results"]
    assert [r["success"] for r in results] == [False, True, False]
    assert "cancelled" in results[0]["error"] and "rescued" in results[2]["error"]


def test_an_empty_group_calls_back_at_once(papp: Tasker) -> None:
    assert papp.group([], then=Report(label="none")) == []
    (callback,) = rows_of(papp, task.c.topic == Report.topic)
    assert json.loads(callback.input) == {"label": "none", "results": []}


def test_group_refuses_a_callback_without_results(papp: Tasker) -> None:
    with pytest.raises(ConfigurationError, match="needs a field `results"):
        papp.group([Add(n=1)], then=Add(n=0))
    with pytest.raises(PayloadError):
        papp.group([Add(n=1)], then="p.report")  # type: ignore[arg-type]
    assert rows_of(papp, task.c.id > 0) == []


# --- the status writer's batched finish ---------------------------------------


def test_the_batched_finish_writes_the_next_step_and_the_outbox(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add"])
    bill = papp.publish(Bill(n=7))
    plain = papp.publish(Add(n=100))
    runner = Runner(papp)
    state = ConsumerState({Add.topic: Add, Bill.topic: Bill}, prefetch=0, host="h")
    state.new_connection()
    for tag, topic in enumerate((Add.topic, Bill.topic), start=1):
        with papp.transaction() as conn:
            pairs = store.task_claim_due(conn, topic=topic, limit=10, term=runner.term,
                                         instance_id=runner.iid, window_s=60)  # fmt: skip
        state.received(topic, SimpleNamespace(delivery_tag=tag), pairs)
    woken: list[bool] = []
    fatal: list[str] = []
    writer = StatusWriter(
        papp.db, state, Supervision(fatal.append, 2, 0.01), instance_id=lambda: runner.iid,
        fqdn="h", stats=as_hook(None), respawn=lambda topic: None,
        on_prefetch_change=lambda: None, on_results=lambda: woken.append(True),
    )  # fmt: skip
    writer.run_once()  # the starts
    jobs: list[Job] = [state.lanes[Add.topic].ready.get_nowait() for _ in range(2)]
    jobs.append(state.lanes[Bill.topic].ready.get_nowait())
    linked = {j.task_id: j.task.linked for j in jobs if j.task}
    assert linked == {first: True, bill: True, plain: False}
    for job in jobs:
        assert state.begin(job, 60.0) is not None and job.task is not None
        decision, log_text = execute(state.lanes[job.delivery.topic].cls, job.task, host="h")
        assert state.finish(job, decision, log_text)
    writer.run_once()  # one transaction: three outcomes, the next step, the outbox row
    assert woken and not fatal
    (step2,) = rows_of(papp, (task.c.chain_id == first) & (task.c.chain_step == 2))
    assert (step2.status, json.loads(step2.input)) == ("pending", {"n": 2})
    with papp.transaction() as conn:
        (box,) = conn.execute(sa.select(task_outbox)).all()
    assert box.queue == "t.billing.results"
    assert json.loads(box.body) == {
        "id": bill, "topic": "p.bill", "success": True, "error": None, "result": {"billed": 7}
    }  # fmt: skip
    writer.stop()


# --- results --------------------------------------------------------------------


def test_result_times_out_and_names_the_step_it_waits_for(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add"])
    runner = Runner(papp)
    (row,) = runner.start(Add.topic)
    runner.finish(row, outcome.succeeded({"n": 2}))
    with pytest.raises(TaskTimeout, match=r"still pending \(chain step 2"):
        papp.result(first, timeout=0.2)


def test_a_group_row_goes_with_its_purged_callback(papp: Tasker) -> None:
    papp.group([], then=Report())
    assert len(rows_of(papp, task.c.topic == Report.topic)) == 1
    with papp.transaction() as conn:
        conn.execute(sa.update(task).values(status="success", finished=sa.func.current_timestamp()))
        assert store.task_purge_batch(conn, statuses=[Status.SUCCESS], older_than_s=-60,
                                      limit=10) == 1  # fmt: skip
        assert conn.execute(sa.select(task_group)).all() == []


def test_a_plain_finish_runs_no_statement_of_its_own(papp: Tasker) -> None:
    """Tasks outside chains and groups, without a result topic, finish in the
    batch's one statement: the link logic costs them nothing."""
    papp.publish_many([Add(n=i) for i in range(3)])
    rows = Runner(papp).start(Add.topic)
    assert [r.linked for r in rows] == [False] * 3
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    sa.event.listen(papp.db.engine, "before_cursor_execute", count)
    try:
        decision = outcome.succeeded({"n": 1})
        with papp.transaction() as conn:
            store.task_finish_many(
                conn, [store.Finish(r.id, r.worker_id, decision, linked=r.linked) for r in rows]
            )
    finally:
        sa.event.remove(papp.db.engine, "before_cursor_execute", count)
    assert [s.split()[0] for s in statements if not s.startswith("BEGIN")] == ["UPDATE"]


def test_a_damaged_chain_next_stops_the_chain_not_the_finish(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add"])
    bill = papp.publish(Bill(n=1))
    with papp.transaction() as conn:  # what a hand-written UPDATE could leave
        conn.execute(sa.update(task).where(task.c.id == first).values(chain_next='[{"topic": 3}]'))
    runner = Runner(papp)
    rows = runner.start(Add.topic) + runner.start(Bill.topic)
    by_id = {r.id: r for r in rows}
    runner.finish(by_id[first], outcome.succeeded({"n": 2}))
    runner.finish(by_id[bill], outcome.Decision("succeed", result="not json"))
    assert [r.status for r in rows_of(papp, task.c.chain_id == first)] == ["success"]
    with papp.transaction() as conn:
        (box,) = conn.execute(sa.select(task_outbox)).all()
    assert json.loads(box.body)["result"] == "not json"


def test_run_until_idle_runs_chains_and_groups_to_the_end(papp: Tasker) -> None:
    from tasker import testing

    first = papp.chain([Add(n=1), "p.add", "p.add"])
    members = papp.group([Add(n=5), Boom()], then=Report(label="g"))
    assert testing.run_until_idle(papp, timeout=30) == {"success": 5, "failed": 1}
    assert papp.result(first, timeout=1).result == {"n": 4}
    (callback,) = rows_of(papp, task.c.topic == Report.topic)
    assert json.loads(callback.result) == {"label": "g", "ids": members, "ok": 1}


def test_a_running_member_cancelled_by_an_admin_ends_the_group(papp: Tasker) -> None:
    (member,) = papp.group([Add(n=1)], then=Report())
    runner = Runner(papp)
    (row,) = runner.start(Add.topic)
    assert admin.cancel_tasks(papp, [member]).requested == [member]
    assert rows_of(papp, task.c.topic == Report.topic) == []  # still running
    runner.finish(row, outcome.cancelled(attempt=1, was=None, how="ctx.check()", host="h"))
    (callback,) = rows_of(papp, task.c.topic == Report.topic)
    (result,) = json.loads(callback.input)["results"]
    assert (result["id"], result["success"]) == (member, False)
    assert "cancelled" in result["error"]
