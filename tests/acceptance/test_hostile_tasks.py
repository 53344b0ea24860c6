"""Nothing a task does can stop an instance (DESIGN 6, "Fault isolation").

One real `tasker run tests.fixtures.hostile` instance per backend (PostgreSQL +
RabbitMQ, then SQLite + the folder broker) runs every hostile task of
`hostile_cases.CASES` at once, beside ordinary tasks that finish at the same
moment (so their outcomes share the status writer's batches). Then:

- each hostile task has its own recorded outcome, at once (not at its 30 s
  timeout), with the real reason in errlog and one run charged at most;
- the ordinary tasks beside them ran once and succeeded;
- tasks published afterwards still run on the same instance;
- SIGTERM still stops the instance with exit code 0.

Selecting cases with -k runs only those in the batch (see `_selected`), so a
single case can be watched alone.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker
from tasker.schema import task
from tests.acceptance.cluster import Cluster
from tests.acceptance.hostile_cases import CASES, UTC, Case, assert_outcome
from tests.fixtures.hostile import Canary, Hostile, HostileChild

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.hostile"
# Only a deadline: an outcome recorded late, or by the timeout path, fails its
# own checks (lag, "timeout" in errlog). Lower it to watch failing cases faster.
OUTCOME_WAIT_S = float(os.environ.get("TASKER_TEST_OUTCOME_WAIT", "45"))
COMPANIONS = 8
SYNC_S = 2.5  # how far ahead every task of the batch is told to act


@dataclass
class Batch:
    pid: int
    acted_at: dt.datetime
    ids: dict[str, int]  # case name -> task id
    rows: dict[int, Any]
    runs: dict[int, int]
    companions: list[int]
    canaries: list[int] = field(default_factory=list)
    canary_status: dict[int, str] = field(default_factory=dict)


def _selected(request: pytest.FixtureRequest) -> list[Case]:
    """The cases whose tests this session runs (all of them unless -k narrows it)."""
    names = set()
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if item.module is request.module and spec is not None and "case" in spec.params:
            names.add(spec.params["case"].name)
    return [c for c in CASES if c.name in names]


def _rows(cluster: Cluster, ids: list[int]) -> dict[int, Any]:
    with cluster.engine.begin() as conn:
        rows = conn.execute(sa.select(task).where(task.c.id.in_(ids))).all()
    return {r.id: r for r in rows}


@pytest.fixture(scope="module")
def batch(module_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Batch]:
    cluster = module_cluster
    (pid,) = cluster.start(1, module=MODULE, TASKER_SHUTDOWN_GRACE="5")
    app = Tasker(cluster.db_url, broker=cluster.broker_url)
    app.register(Hostile, HostileChild, Canary)
    try:
        cases = _selected(request)
        until = time.time() + SYNC_S
        msgs = [
            (HostileChild if c.child else Hostile)(kind=c.kind, arg=c.arg, park=c.park, until=until)
            for c in cases
        ]
        ids = {c.name: app.publish(m, retry=c.retry) for c, m in zip(cases, msgs, strict=True)}
        companions = app.publish_many(
            [Hostile(kind="ok", park=False, until=until) for _ in range(COMPANIONS)]
        )
        watched = [*ids.values(), *companions]
        deadline = time.monotonic() + OUTCOME_WAIT_S
        while time.monotonic() < deadline and not _settled_ids(cluster, watched):
            time.sleep(0.1)
        got = Batch(
            pid=pid,
            acted_at=dt.datetime.fromtimestamp(until, UTC),
            ids=ids,
            rows=_rows(cluster, watched),
            runs=dict(cluster.effects_of("hostile")),
            companions=companions,
        )
        # Published after the hostile ones: they must still run on this instance.
        got.canaries = [
            *app.publish_many([Canary(n=i) for i in range(4)]),
            *app.publish_many([Hostile(kind="ok", park=False) for _ in range(4)]),
            app.publish(HostileChild(kind="ok", park=False)),
        ]
        deadline = time.monotonic() + min(15, OUTCOME_WAIT_S)
        while time.monotonic() < deadline:
            got.canary_status = _statuses(cluster, got.canaries)
            if all(s == "success" for s in got.canary_status.values()):
                break
            time.sleep(0.1)
        yield got
    finally:
        app.close()


def _statuses(cluster: Cluster, ids: list[int]) -> dict[int, str]:
    with cluster.engine.begin() as conn:
        rows = conn.execute(sa.select(task.c.id, task.c.status).where(task.c.id.in_(ids))).all()
    return {r.id: r.status for r in rows}


def _settled_ids(cluster: Cluster, ids: list[int]) -> bool:
    with cluster.engine.begin() as conn:
        rows = conn.execute(
            sa.select(task.c.status, task.c.attempts).where(task.c.id.in_(ids))
        ).all()
    return len(rows) == len(ids) and all(r.attempts >= 1 and r.status != "running" for r in rows)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_task_becomes_its_own_outcome(batch: Batch, case: Case) -> None:
    tid = batch.ids[case.name]
    row = batch.rows.get(tid)
    if row is not None and (row.status == "running" or row.attempts == 0):
        pytest.fail(
            f"{case.name}: still {row.status} (attempts {row.attempts}) "
            f"{OUTCOME_WAIT_S:g}s after it acted: no outcome was recorded"
        )
    assert_outcome(case, row, batch.acted_at, batch.runs.get(tid, 0))


def test_tasks_beside_hostile_ones_ran_once_and_succeeded(batch: Batch) -> None:
    bad = {
        tid: (getattr(batch.rows.get(tid), "status", None), batch.runs.get(tid, 0))
        for tid in batch.companions
        if getattr(batch.rows.get(tid), "status", None) != "success" or batch.runs.get(tid) != 1
    }
    assert not bad, f"ordinary tasks batched with hostile ones: id -> (status, runs) {bad}"
    assert all(batch.rows[t].attempts == 1 and batch.rows[t].retry == 3 for t in batch.companions)


def test_tasks_published_afterwards_still_run(batch: Batch) -> None:
    assert batch.canary_status and all(s == "success" for s in batch.canary_status.values()), (
        f"tasks published after the hostile ones: {batch.canary_status}"
    )


def test_sigterm_still_exits_0(batch: Batch, module_cluster: Cluster) -> None:
    """Last in the module: the instance that ran every hostile task stops cleanly."""
    module_cluster.signal(batch.pid, signal.SIGTERM)
    assert module_cluster.wait_exit(batch.pid, 30) == 0
    assert module_cluster.scalar("SELECT count(*) FROM task WHERE status = 'running'") == 0
