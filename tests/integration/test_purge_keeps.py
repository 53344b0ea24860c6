"""Purge and retention never delete what something live still needs, and ids
are never reused (DESIGN 2, "History is exact"), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tasker import Tasker, admin, store, testing
from tasker.exceptions import TaskNotFound
from tasker.runtime.execute import Started, execute
from tasker.runtime.lease import Lease
from tasker.runtime.maintenance import Maintenance, MaintenanceConfig
from tasker.runtime.service import Supervision
from tasker.schema import task, task_outbox
from tests.fixtures.pipelines import Add, Bill, Report, Words
from tests.integration.runner import Runner

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def papp(app: Tasker) -> Tasker:
    app.register(Add, Words, Report, Bill)
    return app


def finished_long_ago(app: Tasker) -> None:
    """Move every finish time two hours back, so a purge by age takes them."""
    ago = dt.datetime.now(dt.timezone.utc) - 2 * HOUR
    with app.transaction() as conn:
        conn.execute(sa.update(task).where(task.c.finished.isnot(None)).values(finished=ago))


def run_topic_once(runner: Runner, app: Tasker, topic: str) -> int:
    """Run the due tasks of one topic once (their successors stay pending)."""
    rows = runner.start(topic)
    for r in rows:
        decision, _log = execute(app.registry.get(r.topic), Started.from_row(r), host="h")
        runner.finish(r, decision)
    return len(rows)


def ids_left(app: Tasker) -> set[int]:
    with app.transaction() as conn:
        return set(conn.execute(sa.select(task.c.id)).scalars())


def test_a_member_of_a_group_that_has_not_called_back_stays(papp: Tasker) -> None:
    first, second = papp.group([Add(n=1), Words(text="w")], then=Report(label="g"))
    runner = Runner(papp)
    assert run_topic_once(runner, papp, "p.add") == 1  # the other member waits
    finished_long_ago(papp)
    assert admin.count_purge(papp, HOUR) == 0
    assert admin.purge(papp, HOUR) == 0
    assert {first, second} <= ids_left(papp)
    runner.run_all()  # the second member, then the callback
    with papp.transaction() as conn:
        callback = conn.execute(sa.select(task).where(task.c.topic == "p.report")).one()
    assert callback.status == "success"
    assert papp.result(callback.id, timeout=5).result == {"label": "g", "ids": [first, second],
                                                          "ok": 2}  # fmt: skip
    finished_long_ago(papp)  # called back: now the whole group may go
    assert admin.count_purge(papp, HOUR) == 3
    assert admin.purge(papp, HOUR) == 3
    assert ids_left(papp) == set()


def test_a_step_of_a_chain_that_has_not_ended_stays(papp: Tasker) -> None:
    first = papp.chain([Add(n=1), "p.add", "p.add"])
    runner = Runner(papp)
    assert run_topic_once(runner, papp, "p.add") == 1  # step 2 is now pending
    assert run_topic_once(runner, papp, "p.add") == 1  # step 3 is now pending
    finished_long_ago(papp)
    assert admin.count_purge(papp, HOUR) == 0
    assert admin.purge(papp, HOUR) == 0
    runner.run_all()
    res = papp.result(first, timeout=5)
    assert (res.success, res.result) == (True, {"n": 4})
    finished_long_ago(papp)  # the chain ended: its steps may go
    assert admin.purge(papp, HOUR) == 3
    with pytest.raises(TaskNotFound):
        papp.result(first, timeout=1)


def test_a_row_whose_result_message_is_unsent_stays(papp: Tasker) -> None:
    tid = papp.publish(Bill(n=5))
    Runner(papp).run_all()
    finished_long_ago(papp)
    assert admin.count_purge(papp, HOUR) == 0
    assert admin.purge(papp, HOUR) == 0
    with papp.transaction() as conn:
        outbox_ids = list(conn.execute(sa.select(task_outbox.c.id)).scalars())
        assert store.outbox_delete(conn, ids=outbox_ids) == 1  # as the publisher does once sent
    assert admin.count_purge(papp, HOUR) == 1
    assert admin.purge(papp, HOUR) == 1
    assert tid not in ids_left(papp)


def test_retention_keeps_a_live_chain_step(papp: Tasker) -> None:
    papp.chain([Add(n=1), "p.add"])
    plain = papp.publish(Add(n=7))
    runner = Runner(papp)
    assert run_topic_once(runner, papp, "p.add") == 2
    finished_long_ago(papp)
    config = MaintenanceConfig(keep_success_days=1 / 24)
    m = Maintenance(papp.db, Lease(), Supervision(print), config)
    assert m.retention() == 1
    left = ids_left(papp)
    assert plain not in left and len(left) == 2  # step 1 and the pending step 2


def test_ids_are_never_reused_after_a_purge(papp: Tasker) -> None:
    old = papp.publish_many([Add(n=1), Add(n=2), Add(n=3)])
    assert testing.run_until_idle(papp, timeout=10) == {"success": 3}
    finished_long_ago(papp)
    assert admin.purge(papp, HOUR) == 3
    new = papp.publish(Add(n=4))
    assert new == max(old) + 1
    with pytest.raises(TaskNotFound):
        papp.result(old[0], timeout=1)
    with pytest.raises(TaskNotFound):
        papp.result(max(old), timeout=1)


def test_group_ids_are_never_reused_after_a_purge(papp: Tasker) -> None:
    papp.group([], then=Report(label="a"))
    with papp.transaction() as conn:
        (gid,) = conn.execute(sa.text("SELECT id FROM task_group")).scalars()
    Runner(papp).run_all()
    finished_long_ago(papp)
    assert admin.purge(papp, HOUR) == 1  # the callback, and its group row with it
    papp.group([], then=Report(label="b"))
    with papp.transaction() as conn:
        assert list(conn.execute(sa.text("SELECT id FROM task_group")).scalars()) == [gid + 1]


def test_admin_purge_counts_what_it_deletes(papp: Tasker) -> None:
    papp.chain([Add(n=1), "p.add"])
    papp.publish_many([Add(n=5), Add(n=6)])
    run_topic_once(Runner(papp), papp, "p.add")
    finished_long_ago(papp)
    counted = admin.count_purge(papp, HOUR)
    assert counted == 2
    assert admin.purge(papp, HOUR, batch=1) == counted
