"""PostgreSQL plans of the hot statements with a large history table.

The consumer's batched statements must reach their rows through the
primary key, and the master's claim through the partial "due" index, even
when the table holds hundreds of thousands of finished tasks. The exact SQL
and parameters SQLAlchemy sends are captured and explained as they are.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import db, store

pytestmark = pytest.mark.pg

TOPIC = "plan.t"
HISTORY = 200_000
PENDING = 50


@pytest.fixture(scope="module")
def big_url(pg_template: str) -> Iterator[str]:
    """One database with a large history, shared by the tests of this module."""
    from tests.conftest import _pg_admin, _pg_url

    name = f"tasker_plan_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    url = _pg_url(name)
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO task (topic, status, input, result, timeout, retry, attempts,
                                      exec_after, worker_id, worker_fqdn, log, errlog,
                                      created, updated, started, finished, term,
                                      token, dispatched, instance_id, periodic_at)
                    SELECT CASE WHEN g % 4 = 0 THEN 'plan.other' ELSE :topic END,
                           'success', '{"n":' || g || '}', '1', 5000, 3, 1,
                           now() - g * interval '1 second', 0, 'host-a' || chr(10), '', '',
                           now() - g * interval '1 second', now() - g * interval '1 second',
                           now() - g * interval '1 second', now() - g * interval '1 second', 1,
                           NULL, NULL, 1, NULL
                    FROM generate_series(1, :n) AS g
                    """
                ),
                {"topic": TOPIC, "n": HISTORY},
            )
            conn.execute(
                sa.text(
                    """
                    INSERT INTO task (topic, status, input, timeout, retry, attempts,
                                      exec_after, worker_id, worker_fqdn, log, errlog,
                                      created, updated, term, token, dispatched)
                    SELECT :topic, 'pending', '{"n":' || g || '}', 5000, 3, 0,
                           now() - interval '1 minute', 0, '', '', '',
                           now(), now(), 1, 1000000 + g, now() - interval '1 hour'
                    FROM generate_series(1, :n) AS g
                    """
                ),
                {"topic": TOPIC, "n": PENDING},
            )
        with engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            # Statistics from every row (the sample covers the table), so the
            # plans below do not depend on which rows ANALYZE happened to draw;
            # autovacuum stays out of the way while the tests run.
            auto.execute(sa.text("ALTER TABLE task SET (autovacuum_enabled = off)"))
            auto.execute(sa.text("ALTER TABLE task ALTER COLUMN status SET STATISTICS 10000"))
            auto.execute(sa.text("ANALYZE task"))
        yield url
    finally:
        engine.dispose()
        with _pg_admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(big_url: str) -> Iterator[sa.Engine]:
    e = db.make_engine(big_url)
    yield e
    e.dispose()


Captured = list[tuple[str, Any, bool]]


@contextlib.contextmanager
def recording(engine: sa.Engine) -> Iterator[Captured]:
    """Every statement the engine sends meanwhile, with its parameters."""
    sent: Captured = []

    def listener(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        sent.append((statement, parameters, executemany))

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def capture(engine: sa.Engine, call: Callable[[sa.Connection], Any]) -> tuple[Captured, Any]:
    """Run `call` in a transaction that is rolled back; returns what was sent."""
    with recording(engine) as sent, engine.connect() as conn:
        trans = conn.begin()
        try:
            value = call(conn)
        finally:
            trans.rollback()
    return sent, value


def explain(engine: sa.Engine, statement: str, parameters: Any) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) on a raw psycopg cursor with the very same SQL and parameters."""
    raw = engine.raw_connection()
    try:
        plan = explain_on(raw.cursor(), statement, parameters)
        raw.rollback()
    finally:
        raw.close()
    return plan


def explain_on(cur: Any, statement: str, parameters: Any, analyze: bool = False) -> dict[str, Any]:
    opts = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    cur.execute(f"EXPLAIN ({opts}) " + statement, parameters)
    (plan,) = cur.fetchone()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return plan[0]["Plan"]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def task_scans(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(node type, index) of every node that reads the task table or its indexes."""
    out = []
    for n in nodes(plan):
        rel = n.get("Relation Name")
        index = n.get("Index Name")
        if rel == "task" or (index is not None and (index == "task_pkey" or "task" in index)):
            out.append((n["Node Type"], index))
    return out


def show(name: str, statement: str, parameters: Any, plan: dict[str, Any]) -> None:
    print(f"--- {name}\n{statement}\n{parameters!r}\n{json.dumps(plan, indent=1)}")


def assert_on_pkey(plan: dict[str, Any]) -> None:
    scans = task_scans(plan)
    assert not [s for s in scans if s[0] == "Seq Scan"], f"sequential scan of task: {scans}"
    reads = [s for s in scans if s[0] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")]
    assert reads, f"no index read of task: {scans}"
    assert all(index == "task_pkey" for _, index in reads), f"not on task_pkey: {scans}"


def _is(statement: str, verb: str) -> bool:
    """`UPDATE task ...`, or `WITH ... UPDATE task ...` (the fenced claim)."""
    text = statement.lstrip().upper()
    return text.startswith(verb) or (text.startswith("WITH") and f"{verb} TASK" in text)


def one_statement(sent: Captured, verb: str) -> tuple[str, Any, bool]:
    found = [s for s in sent if _is(s[0], verb) and " task" in s[0]]
    assert len(found) == 1, f"expected one {verb} on task, got {sent}"
    return found[0]


def pending_pairs(engine: sa.Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT id, token FROM task WHERE status = 'pending' ORDER BY id")
        ).all()
    assert len(got) == PENDING
    return [(r.id, r.token) for r in got]


def test_history_is_large(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'task'")).scalar()
    assert n is not None and n >= HISTORY * 0.9  # ANALYZE saw the history


def test_start_if_token_uses_primary_key(engine: sa.Engine) -> None:
    pairs = pending_pairs(engine)
    sent, started = capture(
        engine,
        lambda conn: store.task_start_if_token(conn, pairs=pairs, instance_id=1, fqdn="h"),
    )
    assert len(started) == PENDING  # the captured statement really moved the rows
    statement, parameters, many = one_statement(sent, "UPDATE")
    assert not many
    plan = explain(engine, statement, parameters)
    show("task_start_if_token", statement, parameters, plan)
    assert_on_pkey(plan)


def test_finish_if_running_many_uses_primary_key(engine: sa.Engine) -> None:
    pairs = pending_pairs(engine)

    def start_then_finish(conn: sa.Connection) -> int:
        rows = store.task_start_if_token(conn, pairs=pairs, instance_id=1, fqdn="h")
        return store.task_finish_if_running_many(
            conn,
            transition="succeed",
            rows=[{"tid": r.id, "wid": r.worker_id, "result": "1"} for r in rows],
        )

    sent, changed = capture(engine, start_then_finish)
    assert changed == PENDING
    updates = [s for s in sent if s[0].lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 2, sent
    statement, parameters, many = updates[1]
    assert not many and len(json.loads(parameters["rows"])) == PENDING  # one statement
    plan = explain(engine, statement, parameters)
    show("task_finish_if_running_many", statement, parameters, plan)
    assert_on_pkey(plan)


def test_claim_due_uses_the_due_index(engine: sa.Engine) -> None:
    with db.transaction(engine) as conn:
        won = store.core_attempt_elect(conn, instance_id=1, fqdn="h")
    assert won is not None

    sent, claimed = capture(
        engine,
        lambda conn: store.task_claim_due(
            conn, topic=TOPIC, limit=500, term=won.term, instance_id=1, window_s=0
        ),
    )
    assert len(claimed) == PENDING
    statement, parameters, many = one_statement(sent, "UPDATE")
    assert not many
    plan = explain(engine, statement, parameters)
    show("task_claim_due", statement, parameters, plan)
    scans = task_scans(plan)
    assert not [s for s in scans if s[0] == "Seq Scan"], f"sequential scan of task: {scans}"
    assert "ix_task_due" in {index for _, index in scans}, f"due index not used: {scans}"
    # The claimed rows themselves are found by primary key, not by a join over task.
    assert ("Index Scan", "task_pkey") in scans, f"claimed rows not found by id: {scans}"


def rows_read(plan: dict[str, Any]) -> int:
    """Rows the scans of task produced plus those they threw away (EXPLAIN ANALYZE)."""
    return sum(
        int(n.get("Actual Rows", 0)) + int(n.get("Rows Removed by Filter", 0))
        for n in nodes(plan)
        if n["Node Type"] in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")
        and n.get("Relation Name") == "task"
    )


def test_finish_of_one_task_does_not_read_every_running_row(engine: sa.Engine) -> None:
    """With statistics taken while nothing ran (the usual quiet moment), a
    burst of running tasks must not turn each guarded finish into a read of
    the whole running set: one task, one row."""
    running = 5_000

    def burst_then_finish(conn: sa.Connection) -> Any:
        conn.execute(
            sa.text(
                """
                INSERT INTO task (topic, status, input, timeout, retry, attempts, exec_after,
                                  worker_id, worker_fqdn, log, errlog, created, updated,
                                  started, term, instance_id)
                SELECT :topic, 'running', '{}', 5000, 3, 1, now(), 7000000 + g, 'h' || chr(10),
                       '', '', now(), now(), now(), 1, 1
                FROM generate_series(1, :n) AS g
                """
            ),
            {"topic": TOPIC, "n": running},
        )
        tid, wid = conn.execute(
            sa.text("SELECT id, worker_id FROM task WHERE status = 'running' ORDER BY id DESC")
        ).first()  # type: ignore[misc]
        changed = store.task_finish_if_running_many(
            conn, transition="succeed", rows=[{"tid": tid, "wid": wid, "result": "1"}]
        )
        assert changed == 1
        statement, parameters, _ = sent[-1]
        params = parameters[0] if isinstance(parameters, list) else parameters
        # The same statement on another running row, executed for real (rolled back).
        other = conn.execute(
            sa.text("SELECT id, worker_id FROM task WHERE status = 'running' ORDER BY id")
        ).first()
        assert other is not None
        params = {**params, "tids": [other.id], "wids": [other.worker_id]}
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return statement, params, explain_on(cur, statement, params, analyze=True)

    with recording(engine) as sent, engine.connect() as conn:
        trans = conn.begin()
        try:
            statement, params, plan = burst_then_finish(conn)
        finally:
            trans.rollback()
    show("task_finish_if_running_many with 5000 running (EXPLAIN ANALYZE)", statement, params, plan)
    assert rows_read(plan) <= 2, f"one finish read {rows_read(plan)} rows: {task_scans(plan)}"


def test_claim_with_a_large_backlog_finds_rows_by_id(engine: sa.Engine) -> None:
    """The claim picks ids first, then updates by key. (`id IN (SELECT ...)`
    turned into a hash join over a scan of task when the table was mostly
    backlog; with this history PostgreSQL avoids that anyway, so this guards
    the shape of the plan rather than reproducing that case.)"""
    with db.transaction(engine) as conn:
        won = store.core_attempt_elect(conn, instance_id=1, fqdn="h")
    assert won is not None
    with recording(engine) as sent, engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.execute(
                sa.text(
                    "INSERT INTO task (topic, status, input, timeout, retry, exec_after, "
                    "created, updated) SELECT :topic, 'pending', '{}', 5000, 3, now(), now(), "
                    "now() FROM generate_series(1, 20000)"
                ),
                {"topic": TOPIC},
            )
            conn.execute(sa.text("ANALYZE task"))
            claimed = store.task_claim_due(
                conn, topic=TOPIC, limit=100, term=won.term, instance_id=1, window_s=0
            )
            assert len(claimed) == 100
            statement, parameters, _ = one_statement(sent, "UPDATE")
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            plan = explain_on(cur, statement, parameters, analyze=True)
        finally:
            trans.rollback()
    show("task_claim_due with 20000 due (EXPLAIN ANALYZE)", statement, parameters, plan)
    scans = task_scans(plan)
    assert not [s for s in scans if s[0] == "Seq Scan"], f"sequential scan of task: {scans}"
    assert ("Index Scan", "task_pkey") in scans, f"claimed rows not found by id: {scans}"


def test_claim_reads_priorities_in_index_order_without_sorting(engine: sa.Engine) -> None:
    """ix_task_due is (topic, priority DESC, exec_after, id): the claim walks
    it in claim order, so no Sort node, whatever the priorities; and the
    rows come out highest priority first."""
    with db.transaction(engine) as conn:
        won = store.core_attempt_elect(conn, instance_id=1, fqdn="h")
    assert won is not None
    with recording(engine) as sent, engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.execute(
                sa.text(
                    "INSERT INTO task (topic, status, input, timeout, retry, exec_after, "
                    "created, updated, priority) SELECT :topic, 'pending', '{}', 5000, 3, "
                    "now() - interval '1 minute', now(), now(), g % 3 "
                    "FROM generate_series(1, 3000) AS g"
                ),
                {"topic": TOPIC},
            )
            conn.execute(sa.text("ANALYZE task"))
            claimed = store.task_claim_due(
                conn, topic=TOPIC, limit=100, term=won.term, instance_id=1, window_s=0
            )
            prios = conn.execute(
                sa.text("SELECT priority FROM task WHERE id = ANY(:ids)"),
                {"ids": [c[0] for c in claimed]},
            ).scalars()
            assert len(claimed) == 100 and set(prios) == {2}
            statement, parameters, _ = one_statement(sent, "UPDATE")
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            plan = explain_on(cur, statement, parameters, analyze=True)
        finally:
            trans.rollback()
    show("task_claim_due with priorities (EXPLAIN ANALYZE)", statement, parameters, plan)
    scans = task_scans(plan)
    assert "ix_task_due" in {index for _, index in scans}, f"due index not used: {scans}"
    assert not [n for n in nodes(plan) if n["Node Type"] in ("Sort", "Incremental Sort")], plan
    due = [n for n in nodes(plan) if n.get("Index Name") == "ix_task_due"]
    read = sum(int(n["Actual Rows"]) + int(n.get("Rows Removed by Filter", 0)) for n in due)
    # EXPLAIN ANALYZE runs the claim a second time in the same transaction:
    # it steps over the 100 rows the first run claimed, then takes 100 more.
    assert read <= 200, f"the due index gave {read} rows for a claim of 100"


def test_claim_steps_over_no_delayed_task(engine: sa.Engine) -> None:
    """20,000 tasks delayed by a day beside a few due ones: the claim reads
    the due ones and stops at the first delayed one, as it did before
    priorities (the priority-0 band is bounded by exec_after; the other
    bands are empty probes)."""
    with db.transaction(engine) as conn:
        won = store.core_attempt_elect(conn, instance_id=1, fqdn="h")
    assert won is not None
    with recording(engine) as sent, engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.execute(
                sa.text(
                    "INSERT INTO task (topic, status, input, timeout, retry, exec_after, "
                    "created, updated) SELECT 'plan.delayed', 'pending', '{}', 5000, 3, "
                    "now() + CASE WHEN g <= 5 THEN interval '-1 s' "
                    "ELSE interval '1 day' + g * interval '1 s' END, now(), now() "
                    "FROM generate_series(1, 20005) AS g"
                )
            )
            conn.execute(sa.text("ANALYZE task"))
            claimed = store.task_claim_due(
                conn, topic="plan.delayed", limit=500, term=won.term, instance_id=1, window_s=0
            )
            assert len(claimed) == 5
            assert store.task_any_due(conn, topic="plan.delayed")
            statement, parameters, _ = one_statement(sent, "UPDATE")
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            plan = explain_on(cur, statement, parameters, analyze=True)
        finally:
            trans.rollback()
    show("task_claim_due beside 20000 delayed (EXPLAIN ANALYZE)", statement, parameters, plan)
    scans = task_scans(plan)
    assert not [s for s in scans if s[0] == "Seq Scan"], f"sequential scan of task: {scans}"
    # Index entries checked inside the index (exec_after) are not counted as
    # rows anywhere: the pages read tell. 20,000 entries fill about 100 pages.
    due = [n for n in nodes(plan) if n.get("Index Name") == "ix_task_due"]
    pages = sum(int(n["Shared Hit Blocks"]) + int(n["Shared Read Blocks"]) for n in due)
    assert pages <= 30, f"the claim read {pages} pages of the due index: delayed tasks were read"
