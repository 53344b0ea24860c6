"""The retry policy per class through `tasker.testing` (the real state machine
and store), on SQLite and PostgreSQL: `retry_on`, `tasker.Fail`, `backoff`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from tasker import Tasker, testing
from tasker.schema import task
from tests.fixtures.policy import Policied


def row(app: Tasker, task_id: int) -> Any:
    with app.transaction() as conn:
        return conn.execute(sa.select(task).where(task.c.id == task_id)).one()


def test_each_policy_path_ends_as_the_policy_says(app: Tasker) -> None:
    app.register(Policied)
    ids = {k: app.publish(Policied(kind=k)) for k in ("ok", "conn", "value", "fail")}
    assert testing.run_until_idle(app) == {"success": 1, "retry": 1, "failed": 2}

    conn = row(app, ids["conn"])  # in retry_on: a run used, the next one `backoff` later
    assert (conn.status, conn.retry, conn.attempts) == ("retry", 2, 1)
    gap = conn.exec_after - conn.updated
    assert dt.timedelta(seconds=0.9) <= gap <= dt.timedelta(seconds=1.1), gap
    assert "ConnectionError: gateway down" in conn.errlog

    value = row(app, ids["value"])  # not in retry_on: failed now, runs left or not
    assert (value.status, value.attempts) == ("failed", 1)
    assert "ValueError: bad amount (not in retry_on: no more runs)" in value.errlog

    fail = row(app, ids["fail"])
    assert (fail.status, fail.attempts) == ("failed", 1)
    assert "Fail: card declined (tasker.Fail: no more runs)" in fail.errlog
    assert app.result(ids["fail"], timeout=1).success is False
