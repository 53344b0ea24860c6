"""tasker.admin on SQLite and PostgreSQL: list, show, retry, cancel, purge, status."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin, store, testing
from tasker.exceptions import ConfigurationError, IllegalTransition, TaskNotFound
from tasker.schema import task
from tasker.states import Status
from tasker.web.server import create_app


class Job(MsgQ):
    topic = "adm.job"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


class Other(Job):
    topic = "adm.other"


DAY = dt.timedelta(days=1)


def elect(app: Tasker, iid: int = 1) -> int:
    with app.transaction() as conn:
        row = store.core_attempt_elect(conn, instance_id=iid, fqdn="h")
    assert row is not None
    return row.term


def run_to(app: Tasker, topic: str, transition: str) -> list[int]:
    """Claim, start and finish every due task of `topic` through the store."""
    term = elect(app)
    with app.transaction() as conn:
        pairs = store.task_claim_due(
            conn, topic=topic, limit=100, term=term, instance_id=1, window_s=60
        )
    with app.transaction() as conn:
        started = store.task_start_if_token(conn, pairs=pairs, instance_id=1, fqdn="host-a")
    if transition != "running":
        rows = [
            {"tid": s.id, "wid": s.worker_id, "err": "boom\n", "take": 1, "result": '{"ok": 1}'}
            for s in started
        ]
        with app.transaction() as conn:
            store.task_finish_if_running_many(conn, transition=transition, rows=rows)
    return sorted(s.id for s in started)


def backdate(app: Tasker, ids: list[int], by: dt.timedelta) -> None:
    """Test-only: pretend these tasks finished (and were created) `by` ago."""
    with app.transaction() as conn:
        when = dt.datetime.now(dt.timezone.utc) - by
        conn.execute(sa.update(task).where(task.c.id.in_(ids)).values(finished=when, created=when))


def statuses(app: Tasker, ids: list[int]) -> dict[int, str]:
    with app.transaction() as conn:
        return store.task_status_many(conn, ids=ids)


def test_list_and_get(app: Tasker) -> None:
    ids = app.publish_many([Job(n=i) for i in range(3)])
    other = app.publish(Other(n=9))
    rows = admin.list_tasks(app)
    assert [r["id"] for r in rows] == [other, *reversed(ids)]
    assert [r["id"] for r in admin.list_tasks(app, topic="adm.job", limit=2)] == ids[:0:-1]
    assert admin.list_tasks(app, status="failed") == []
    assert len(admin.list_tasks(app, status=["pending"], since=dt.timedelta(hours=1))) == 4
    backdate(app, ids[:1], 2 * DAY)
    assert [r["id"] for r in admin.list_tasks(app, until=DAY)] == ids[:1]
    assert ids[0] not in [r["id"] for r in admin.list_tasks(app, since=DAY)]
    one = admin.get_task(app, ids[0])
    assert (one["topic"], one["status"]) == ("adm.job", "pending")
    assert json.loads(one["input"]) == {"n": 0}
    assert {"log", "errlog", "worker_fqdn", "term", "created"} <= one.keys()
    with pytest.raises(TaskNotFound):
        admin.get_task(app, 999_999)
    with pytest.raises(ConfigurationError):
        admin.list_tasks(app, status="nope")


def test_retry_by_status_topic_and_since(app: Tasker) -> None:
    failed = app.publish_many([Job(n=i) for i in range(3)])
    run_to(app, "adm.job", "fail")
    other_failed = app.publish(Other(n=1))
    run_to(app, "adm.other", "fail")
    ok = app.publish(Job(n=9))
    run_to(app, "adm.job", "succeed")
    backdate(app, failed[:1], 2 * DAY)

    assert admin.count_retry(app, status="failed") == 4
    assert admin.count_retry(app, status="failed", topic="adm.job", since=DAY) == 2
    moved = admin.retry(app, status="failed", topic="adm.job", since=DAY, runs=5)
    assert moved == failed[1:]
    assert statuses(app, [*failed, other_failed, ok]) == {
        failed[0]: "failed",
        failed[1]: "pending",
        failed[2]: "pending",
        other_failed: "failed",
        ok: "success",
    }
    row = admin.get_task(app, failed[1])
    assert (row["retry"], row["worker_id"], row["finished"], row["token"]) == (5, 0, None, None)
    assert "admin: retried" in row["errlog"]
    assert admin.retry(app, status="failed", topic="adm.job", since=DAY) == []

    # By id: success rows move too; default runs is 3.
    assert admin.count_retry(app, [ok, other_failed]) == 2
    assert admin.retry(app, [ok, other_failed]) == sorted([ok, other_failed])
    assert admin.get_task(app, ok)["retry"] == 3


def test_retry_never_touches_a_running_or_due_task(app: Tasker) -> None:
    tid = app.publish(Job(n=1))
    assert run_to(app, "adm.job", "running") == [tid]
    pending = app.publish(Job(n=2))
    assert admin.count_retry(app, [tid, pending]) == 0
    assert admin.retry(app, [tid, pending]) == []
    assert statuses(app, [tid, pending]) == {tid: "running", pending: "pending"}
    with pytest.raises(ConfigurationError):
        admin.retry(app)  # neither ids nor a status
    with pytest.raises(ConfigurationError):
        admin.retry(app, status="pending")
    with pytest.raises(ConfigurationError):
        admin.retry(app, [tid], status="failed")
    with pytest.raises(ConfigurationError):
        admin.retry(app, [tid], runs=0)


def test_cancel(app: Tasker) -> None:
    ids = app.publish_many([Job(n=i) for i in range(3)])
    assert run_to(app, "adm.job", "running") == ids
    due = app.publish_many([Job(n=7), Job(n=8)])
    assert admin.count_cancel(app, [ids[0], *due, 424242]) == 3
    done = admin.cancel_tasks(app, [ids[0], *due, 424242])
    assert (done.cancelled, done.requested) == (due, [ids[0]])
    # A running task is only asked to stop: it stays running until its execution ends.
    assert statuses(app, [ids[0], *due]) == {ids[0]: "running", due[0]: "failed", due[1]: "failed"}
    assert "admin: cancelled" in admin.get_task(app, due[0])["errlog"]
    assert admin.get_task(app, ids[0])["errlog"] == ""
    worker = int(admin.get_task(app, ids[0])["worker_id"])
    with app.transaction() as conn:
        assert store.task_cancel_wanted(conn, instance_id=1) == [(ids[0], worker)]
        assert store.task_cancel_wanted(conn, instance_id=2) == []
    first = admin.get_task(app, ids[0])["cancel_requested"]
    assert admin.cancel(app, [ids[0], *due]) == [ids[0]]  # asked again; already failed ones stay
    assert admin.get_task(app, ids[0])["cancel_requested"] == first  # the first request's time
    assert admin.cancel(app, []) == []


def test_retry_of_a_cancelled_task_clears_its_request(app: Tasker) -> None:
    (tid,) = app.publish_many([Job(n=1)])
    assert admin.cancel(app, [tid]) == [tid]
    assert admin.get_task(app, tid)["cancel_requested"] is not None
    assert admin.retry(app, [tid]) == [tid]
    assert admin.get_task(app, tid)["cancel_requested"] is None
    assert run_to(app, "adm.job", "running") == [tid]
    with app.transaction() as conn:
        assert store.task_cancel_wanted(conn, instance_id=1) == []


def test_purge_deletes_only_old_terminal_rows_in_batches(app: Tasker) -> None:
    ok = app.publish_many([Job(n=i) for i in range(5)])
    run_to(app, "adm.job", "succeed")
    bad = app.publish_many([Job(n=i) for i in range(2)])
    run_to(app, "adm.job", "fail")
    pending = app.publish(Job(n=99))
    backdate(app, [*ok[:4], *bad, pending], 3 * DAY)

    assert admin.count_purge(app, 2 * DAY) == 4
    assert admin.purge(app, 2 * DAY, batch=3) == 4  # two batches: 3 + 1
    left = statuses(app, [*ok, *bad, pending])
    assert set(left) == {ok[4], *bad, pending}
    assert admin.purge(app, 2 * DAY, status=["failed", "success"]) == 2
    assert set(statuses(app, [*ok, *bad, pending])) == {ok[4], pending}
    with pytest.raises(ConfigurationError):
        admin.purge(app, DAY, status=["pending"])
    with pytest.raises(ConfigurationError):
        admin.purge(app, -DAY)
    with pytest.raises(IllegalTransition), app.transaction() as conn:
        store.task_purge_batch(conn, statuses=[Status.RUNNING], older_than_s=0, limit=1)


def test_status_and_instances(app: Tasker) -> None:
    with app.transaction() as conn:
        iid = store.instance_register(
            conn,
            fqdn="node-1.example",
            pid=4321,
            topics={"adm.job": {"concurrency": 2}},
            master_eligible=True,
        )
        store.instance_register(
            conn, fqdn="node-2.example", pid=99, topics={}, master_eligible=False
        )
    term = elect(app, iid)
    app.publish_many([Job(n=1), Job(n=2)])
    app.publish(Other(n=1), exec_after=dt.timedelta(hours=1))  # not due yet
    s = admin.status(app)
    assert (s["master_instance_id"], s["master_pid"], s["term"]) == (iid, 4321, term)
    assert s["master_fqdn"] == "h"
    assert s["lease_live"] is True and 0 <= s["lease_age_s"] < 5
    assert s["counts"] == {"adm.job": {"pending": 2}, "adm.other": {"pending": 1}}
    assert set(s["oldest_due_s"]) == {"adm.job"} and s["oldest_due_s"]["adm.job"] >= 0
    insts = admin.instances(app)
    assert [(i["fqdn"], i["pid"], i["is_master"], i["alive"]) for i in insts] == [
        ("node-1.example", 4321, True, True),
        ("node-2.example", 99, False, True),
    ]
    assert insts[0]["topics"] == {"adm.job": {"concurrency": 2}}
    assert [i["id"] for i in s["instances"]] == [i["id"] for i in insts]


def test_publish_by_topic(app: Tasker) -> None:
    tid = admin.publish(app, "adm.free", '{"a": 1}', timeout=2, retry=4)
    row = admin.get_task(app, tid)
    assert (row["topic"], row["input"], row["timeout"], row["retry"]) == (
        "adm.free",
        '{"a": 1}',
        2000,
        4,
    )
    app.register(Job)
    later = admin.publish(app, "adm.job", '{"n": 3}', exec_after=dt.timedelta(minutes=5))
    assert admin.get_task(app, later)["exec_after"] > admin.get_task(app, tid)["exec_after"]


def test_docs_sql_recipes_run_on_postgres(pg_url: str) -> None:
    """Every ```sql block of docs/howto/sql-recipes.md runs as written and finds its rows."""
    import psycopg

    page = Path(__file__).resolve().parents[2] / "docs" / "howto" / "sql-recipes.md"
    blocks = [b.split("```", 1)[0] for b in page.read_text().split("```sql\n")[1:]]
    assert len(blocks) == 13
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            """INSERT INTO task (id, topic, status, input, timeout, retry, attempts,
                                 worker_fqdn, errlog, started, finished) VALUES
            (42, 'image.resize', 'failed', '{}', 5000, 0, 2, E'a.example\\nb.example\\n',
             E'boom\\n', now() - interval '10 min', now() - interval '5 min'),
            (43, 'image.resize', 'success', '{}', 5000, 3, 1, E'a.example\\n', '',
             now() - interval '3 s', now() - interval '1 s'),
            (44, 'image.resize', 'running', '{}', 1000, 3, 1, E'b.example\\n', '',
             now() - interval '1 min', NULL)"""
        )
        conn.execute(
            """INSERT INTO task (id, topic, status, input, timeout, retry, errlog,
                                 cancel_requested, finished) VALUES
            (45, 'image.resize', 'failed', '{}', 5000, 3, E'admin: cancelled\\n',
             now() - interval '2 hours', now() - interval '2 hours')"""
        )
        conn.execute(  # chain 17: step 1 succeeded, step 2 failed; group 5 half done
            """INSERT INTO task (id, topic, status, input, timeout, retry, errlog,
                                 chain_id, chain_step, group_id) VALUES
            (17, 'image.resize', 'success', '{}', 5000, 3, '', 17, 1, NULL),
            (18, 'image.thumb', 'failed', '{}', 5000, 0, E'no thumb\n', 17, 2, NULL),
            (19, 'image.resize', 'success', '{}', 5000, 3, '', NULL, NULL, 5),
            (20, 'image.resize', 'pending', '{}', 5000, 3, '', NULL, NULL, 5);
            INSERT INTO task_group (id, size, then_topic, then_input, then_timeout, then_retry)
            VALUES (5, 2, 'image.report', '{}', 5000, 3);
            INSERT INTO task_outbox (task_id, queue, body) VALUES (19, 'billing.results', '{}')"""
        )
        conn.execute(
            """INSERT INTO task (id, topic, status, input, timeout, retry, priority, unique_key,
                                 exec_after, finished)
            VALUES (47, 'image.resize', 'pending', '{}', 5000, 3, 5, 'resize:d.png',
                    now() - interval '1 s', NULL),
                   (48, 'image.resize', 'failed', '{}', 5000, 0, 0, 'resize:d.png', now(),
                    now() - interval '1 min')"""
        )
        results = []
        for sql in blocks:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            results.append(cur.fetchall() if cur.description else None)
            while cur.nextset():
                pass
        status = conn.execute("SELECT status, retry FROM task WHERE id = 42").fetchone()
        held_back = conn.execute("SELECT status FROM task WHERE id = 48").fetchone()
    failures, percentiles, stuck, hosts, cancelled, _, chain, groups, outbox = results[:9]
    due, holder, _, topics = results[9:]
    assert [r[0] for r in failures] == [48, 42]
    assert [r[:3] for r in chain] == [(2, 18, "image.thumb")]
    assert groups == [(5, "image.report", 2, 1)]
    assert [r[:2] for r in outbox] == [("billing.results", 1)]
    assert held_back == ("failed",)  # its key is held by 47: not retried
    assert [r[:2] for r in due] == [(47, 5), (20, 0), (42, 0), (45, 0)]
    assert [r[:2] for r in holder] == [(47, "pending")]
    assert topics == [("image.resize", True, None)]  # name, paused, rate_tat (no claim yet)
    assert percentiles[0][:2] == ("image.resize", 1)
    assert [r[0] for r in stuck] == [44]
    assert hosts == [(1, "a.example"), (2, "b.example")]
    assert [r[0] for r in cancelled] == [45]
    assert status == ("pending", 3)


def test_get_task_refuses_an_id_no_bigint_holds(app: Tasker) -> None:
    """One clear error on both databases (SQLite raised OverflowError before)."""
    with pytest.raises(ConfigurationError, match="64-bit"):
        admin.get_task(app, 2**70)


class Twice(MsgQ):
    """Fails its first run, succeeds on the second."""

    topic = "adm.twice"
    backoff = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        if ctx.attempt == 1:
            raise ConnectionError("first run")
        return "ok"


def test_get_task_gives_the_hosts_one_a_line_without_a_trailing_newline(
    db_url: str, local_broker: str, tmp_path: Path
) -> None:
    app = Tasker(db_url, broker=local_broker, fqdn="w1.example")
    try:
        app.register(Twice)
        tid = app.publish(Twice())
        fresh = app.publish(Twice())
        assert admin.get_task(app, fresh)["worker_fqdn"] == ""  # never ran
        testing.run_until_idle(app)
        testing.run_until_idle(app, timeout=10)
        row = admin.get_task(app, tid)
        assert (row["status"], row["attempts"]) == ("success", 2)
        assert row["worker_fqdn"] == "w1.example\nw1.example"
        web = create_app(app)
        assert web_get(web, f"/api/tasks/{tid}")["worker_fqdn"] == "w1.example\nw1.example"
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=db_url, TASKER_BROKER_URL=local_broker)
    cmd = [sys.executable, "-m", "tasker.cli", "--json", "show", str(tid)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["worker_fqdn"] == "w1.example\nw1.example"


def web_get(web: Any, path: str) -> Any:
    from tests.integration.test_web_actions import call

    status, _, body = call(web, "GET", path)
    assert status == 200, body
    return body
