"""Every transition of the state machine through the real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasker import db, store
from tasker.exceptions import IllegalTransition, LeadershipLost, SchemaMissing
from tasker.schema import task


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    e = db.make_engine(db_url)
    yield e
    e.dispose()


def insert(engine, n: int = 1, retry: int = 3) -> list[int]:  # type: ignore[no-untyped-def]
    rows = [
        {"topic": "t", "input": f'{{"n": {i}}}', "timeout_s": 5, "retry": retry} for i in range(n)
    ]
    with db.transaction(engine) as conn:
        return store.task_insert_many(conn, rows=rows)


def elect(engine, iid: int = 1) -> int:  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        row = store.core_attempt_elect(conn, instance_id=iid, fqdn="h")
    assert row is not None
    return row.term


def claim(engine, term: int, iid: int = 1, limit: int = 10):  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        return store.task_claim_due(
            conn, topic="t", limit=limit, term=term, instance_id=iid, window_s=60
        )


def start(engine, pairs):  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        return store.task_start_if_token(conn, pairs=pairs, instance_id=1, fqdn="host-a")


def finish(engine, name: str, rows) -> int:  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        return store.task_finish_if_running_many(conn, transition=name, rows=rows)


def row(engine, tid: int):  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        return store.task_get(conn, task_id=tid)


def running(engine, n: int = 1, retry: int = 3):  # type: ignore[no-untyped-def]
    ids = insert(engine, n, retry)
    started = start(engine, claim(engine, elect(engine)))
    assert sorted(r.id for r in started) == ids
    return started


def test_publish_claim_start_succeed(engine) -> None:  # type: ignore[no-untyped-def]
    ids = insert(engine, 3)
    term = elect(engine)
    pairs = claim(engine, term)
    assert [p[0] for p in pairs] == ids
    assert claim(engine, term) == []  # in flight: not claimed twice
    r = row(engine, ids[0])
    assert (r.status, r.term, r.dispatched is not None) == ("pending", term, True)
    started = start(engine, pairs)
    assert {s.worker_id for s in started} == {p[1] for p in pairs}
    assert start(engine, pairs) == []  # a duplicate message starts nothing
    r = row(engine, ids[0])
    assert (r.status, r.attempts, r.worker_fqdn, r.dispatched) == ("running", 1, "host-a\n", None)
    done = finish(
        engine,
        "succeed",
        [{"tid": s.id, "wid": s.worker_id, "result": '{"ok": 1}', "log": "hi\n"} for s in started],
    )
    assert done == 3
    r = row(engine, ids[0])
    assert (r.status, r.result, r.log, r.worker_id) == ("success", '{"ok": 1}', "hi\n", 0)
    assert r.finished is not None and r.finished >= r.started
    # succeeding again is a no-op guarded by status and worker id
    assert finish(engine, "succeed", [{"tid": ids[0], "wid": started[0].worker_id}]) == 0


def test_stale_token_is_not_started(engine) -> None:  # type: ignore[no-untyped-def]
    (tid,) = insert(engine)
    term = elect(engine)
    ((_, token),) = claim(engine, term)
    assert start(engine, [(tid, token + 1)]) == []
    assert row(engine, tid).status == "pending"


def test_redelivery_gives_a_new_token(engine) -> None:  # type: ignore[no-untyped-def]
    (tid,) = insert(engine)
    term = elect(engine)
    ((_, first),) = claim(engine, term)
    with db.transaction(engine) as conn:
        later = store.now(conn).replace(year=2100)
        again = store.task_claim_due(
            conn, topic="t", limit=5, term=term, instance_id=1, window_s=1, now=later
        )
    assert len(again) == 1 and again[0][1] != first
    assert start(engine, [(tid, first)]) == []  # the old message is stale
    assert len(start(engine, again)) == 1


def test_retry_then_fail_counts_runs(engine) -> None:  # type: ignore[no-untyped-def]
    (s,) = running(engine, retry=2)
    assert (
        finish(
            engine,
            "retry",
            [{"tid": s.id, "wid": s.worker_id, "take": 1, "err": "e1\n", "delay_ms": 0}],
        )
        == 1
    )
    r = row(engine, s.id)
    assert (r.status, r.retry, r.errlog) == ("retry", 1, "e1\n")
    term = elect(engine)
    (s2,) = start(engine, claim(engine, term))
    assert s2.attempts == 2
    assert (
        finish(engine, "fail", [{"tid": s2.id, "wid": s2.worker_id, "take": 1, "err": "e2\n"}]) == 1
    )
    r = row(engine, s.id)
    assert (r.status, r.retry, r.errlog, r.attempts) == ("failed", 0, "e1\ne2\n", 2)


def test_hand_back_charges_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    (s,) = running(engine)
    assert finish(engine, "hand_back", [{"tid": s.id, "wid": s.worker_id, "delay_ms": 60_000}])
    r = row(engine, s.id)
    assert (r.status, r.retry, r.worker_id, r.token) == ("pending", 3, 0, None)
    assert r.exec_after > r.updated
    assert claim(engine, elect(engine)) == []  # not due for a minute


def test_wrong_worker_cannot_finish(engine) -> None:  # type: ignore[no-untyped-def]
    (s,) = running(engine)
    assert finish(engine, "succeed", [{"tid": s.id, "wid": s.worker_id + 1}]) == 0
    assert row(engine, s.id).status == "running"


def test_admin_requeue(engine) -> None:  # type: ignore[no-untyped-def]
    (s,) = running(engine, retry=1)
    finish(engine, "fail", [{"tid": s.id, "wid": s.worker_id, "take": 1, "err": "x\n"}])
    (pending_id,) = insert(engine, 1)
    with db.transaction(engine) as conn:
        # requeue takes failed/success only
        assert store.task_requeue_if_finished(
            conn, ids=[s.id, pending_id], runs=3, note="retried\n"
        ) == [s.id]
    r = row(engine, s.id)
    assert (r.status, r.retry, r.errlog) == ("pending", 3, "x\nretried\n")


def test_illegal_transition_names_are_refused(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IllegalTransition):
        finish(engine, "cancel", [{"tid": 1, "wid": 1}])
    with pytest.raises(IllegalTransition):
        finish(engine, "start", [{"tid": 1, "wid": 1}])


def test_claim_is_fenced_by_term(engine) -> None:  # type: ignore[no-untyped-def]
    insert(engine)
    term = elect(engine, iid=1)
    with db.transaction(engine) as conn:
        conn.execute(sa.text("UPDATE core SET updated = '2000-01-01 00:00:00'"))
    with db.transaction(engine) as conn:
        won = store.core_attempt_elect(conn, instance_id=2, fqdn="b")
    assert won is not None and won.term == term + 1
    with pytest.raises(LeadershipLost):
        claim(engine, term, iid=1)
    with db.transaction(engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).where(task.c.term != 0)).scalar() == 0
    assert len(claim(engine, won.term, iid=2)) == 1


def test_election_is_exclusive_and_resignable(engine) -> None:  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        a = store.core_attempt_elect(conn, instance_id=1, fqdn="a")
        assert store.core_attempt_elect(conn, instance_id=2, fqdn="b") is None
        again = store.core_attempt_elect(conn, instance_id=1, fqdn="a")
        assert a is not None and again is not None and again.term == a.term
        assert store.core_resign(conn, instance_id=1, term=a.term)
        b = store.core_attempt_elect(conn, instance_id=2, fqdn="b")
        assert b is not None and b.term == a.term + 1
        assert store.core_get(conn).master_fqdn == "b"


def test_stuck_and_orphaned_tasks_are_found(engine) -> None:  # type: ignore[no-untyped-def]
    (s,) = running(engine)
    with db.transaction(engine) as conn:
        # instance 1 never registered: its task is orphaned at once
        found = store.task_find_stuck(conn, grace_s=1, out_of_date_s=6, limit=10)
        assert [r.id for r in found] == [s.id] and not found[0].overdue
        iid = store.instance_register(conn, fqdn="h", pid=1, topics={}, master_eligible=True)
        conn.execute(sa.update(task).values(instance_id=iid))
        assert store.task_find_stuck(conn, grace_s=1, out_of_date_s=6, limit=10) == []
        later = store.now(conn).replace(year=2100)
        found = store.task_find_stuck(
            conn, grace_s=1, out_of_date_s=10**9, limit=10, now=later
        )
        assert [r.id for r in found] == [s.id] and found[0].overdue


def test_crossed_pairs_start_and_unclaim_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    # The id of one claimed task with the token of the other: each id and each
    # token was claimed, but no pair was.
    insert(engine, 2)
    (a, ta), (b, tb) = claim(engine, elect(engine))
    crossed = [(a, tb), (b, ta)]
    with db.transaction(engine) as conn:
        assert store.task_unclaim_many(conn, pairs=crossed) == 0
    assert {row(engine, i).token for i in (a, b)} == {ta, tb}
    assert start(engine, crossed) == []
    assert {row(engine, i).status for i in (a, b)} == {"pending"}
    assert sorted(r.id for r in start(engine, [(a, ta), (b, tb)])) == [a, b]


def test_a_missing_core_row_is_a_missing_schema(engine) -> None:  # type: ignore[no-untyped-def]
    with db.transaction(engine) as conn:
        conn.execute(sa.text("DELETE FROM core"))
    with pytest.raises(SchemaMissing, match="run: tasker db upgrade"), db.transaction(engine) as c:
        assert store.core_attempt_elect(c, instance_id=1, fqdn="h") is None
        store.core_get(c)
