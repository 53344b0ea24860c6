"""The `tasker` CLI as a subprocess against PostgreSQL: exit codes, output, rows changed.

Also the Prometheus exporter, scraped over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasker import Tasker, store
from tasker.metrics import start_exporter
from tests.integration.test_admin import Job, backdate, elect, run_to, statuses


@pytest.fixture
def cli(pg_url: str, local_broker: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=pg_url, TASKER_BROKER_URL=local_broker)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasker.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    return run


@pytest.fixture
def papp(pg_url: str, local_broker: str):  # type: ignore[no-untyped-def]
    a = Tasker(pg_url, broker=local_broker)
    yield a
    a.close()


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert p.returncode == code, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("tasker: "), p.stderr
    for n in needles:
        assert n in lines[-1], p.stderr


def test_publish_tasks_show(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    p = cli("publish", "img.resize", '{"path": "a.png"}', "--timeout", "2", "--retry", "4")
    assert p.returncode == 0, p.stderr
    tid = int(p.stdout.strip())
    p = cli("--json", "publish", "img.resize", '{"path": "b.png"}', "--exec-after", "10m")
    later = json.loads(p.stdout)["id"]
    row = store_row(papp, tid)
    assert (row.topic, row.timeout, row.retry) == ("img.resize", 2000, 4)
    assert store_row(papp, later).exec_after > row.exec_after

    p = cli("tasks", "--topic", "img.resize", "--status", "pending")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "topic", "status"]  # plain text when piped
    assert [int(line.split()[0]) for line in lines[1:]] == [later, tid]
    listed = json.loads(cli("--json", "tasks", "--since", "1h", "--limit", "1").stdout)
    assert [r["id"] for r in listed] == [later]

    p = cli("show", str(tid))
    assert p.returncode == 0, p.stderr
    assert f"id          {tid}" in p.stdout or p.stdout.split()[1] == str(tid)
    assert '{"path":' in p.stdout and "errlog:" in p.stdout and "log:" in p.stdout
    shown = json.loads(cli("--json", "show", str(tid)).stdout)
    assert (shown["id"], shown["status"], shown["timeout"]) == (tid, "pending", 2000)


def store_row(app: Tasker, tid: int):  # type: ignore[no-untyped-def]
    with app.transaction() as conn:
        return store.task_get(conn, task_id=tid)


def test_retry_asks_and_changes_nothing_without_yes(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    ids = papp.publish_many([Job(n=i) for i in range(3)])
    run_to(papp, "adm.job", "fail")

    for answer in ("", "n\n"):  # EOF, then "n"
        p = cli("retry", "--status", "failed", stdin=answer)
        one_line_error(p, 1, "aborted")
        assert "3 task(s)" in p.stderr
        assert set(statuses(papp, ids).values()) == {"failed"}

    p = cli("retry", "--status", "failed", "--topic", "adm.job", stdin="y\n")
    assert p.returncode == 0, p.stderr
    assert "retried 3 task(s)" in p.stdout
    assert set(statuses(papp, ids).values()) == {"pending"}

    run_to(papp, "adm.job", "fail")
    p = cli("--json", "retry", str(ids[0]), "--runs", "7")  # one id: no question
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"retried": [ids[0]], "count": 1}
    assert store_row(papp, ids[0]).retry == 7
    p = cli("retry", "--status", "failed", "--yes")
    assert p.returncode == 0 and "retried 2 task(s)" in p.stdout
    one_line_error(cli("retry", str(ids[0])), 1, "nothing retried")  # pending now
    one_line_error(cli("retry"), 2, "--status")


def test_cancel_and_purge_confirm(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    ids = papp.publish_many([Job(n=i) for i in range(3)])
    one_line_error(cli("cancel", str(ids[0]), str(ids[1]), stdin="n\n"), 1, "aborted")
    assert set(statuses(papp, ids).values()) == {"pending"}
    p = cli("cancel", str(ids[0]))
    assert p.returncode == 0 and f"cancelled 1 task(s): {ids[0]}" in p.stdout
    p = cli("cancel", str(ids[1]), str(ids[2]), "--yes")
    assert p.returncode == 0 and "cancelled 2 task(s)" in p.stdout
    assert set(statuses(papp, ids).values()) == {"failed"}
    one_line_error(cli("cancel", str(ids[0])), 1, "nothing cancelled")

    # A running task is asked to stop; it stays running until its execution ends.
    papp.publish(Job(n=8))
    (running,) = run_to(papp, "adm.job", "running")
    late = papp.publish(Job(n=9))
    p = cli("cancel", str(running), str(late), "--yes")
    assert p.returncode == 0, p.stderr
    assert f"cancelled 1 task(s): {late}" in p.stdout
    assert f"cancel requested (running; they stop and fail) for 1 task(s): {running}" in p.stdout
    assert statuses(papp, [running, late]) == {running: "running", late: "failed"}
    p = cli("--json", "cancel", str(running))
    assert json.loads(p.stdout) == {"cancelled": [], "cancel_requested": [running], "count": 1}

    backdate(papp, ids[:2], dt.timedelta(days=8))
    p = cli("purge", "--older-than", "7d", "--status", "failed")  # EOF: no
    one_line_error(p, 1, "aborted")
    assert "purge: 2 task(s)" in p.stderr
    assert len(statuses(papp, ids)) == 3
    p = cli("purge", "--older-than", "1w", "--status", "failed", "--yes")
    assert p.returncode == 0 and "purged 2 task(s)" in p.stdout
    assert list(statuses(papp, ids)) == [ids[2]]
    p = cli("--json", "purge", "--older-than", "7d")  # nothing to purge: no question
    assert p.returncode == 0 and json.loads(p.stdout) == {"purged": 0}


def test_status_and_instances(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    p = cli("status")
    assert p.returncode == 0 and "master: none" in p.stdout and "no tasks" in p.stdout
    with papp.transaction() as conn:
        iid = store.instance_register(
            conn,
            fqdn="node-1.example",
            pid=4321,
            topics={"adm.job": {"concurrency": 1}},
            master_eligible=True,
        )
    term = elect(papp, iid)
    papp.publish_many([Job(n=1), Job(n=2)])
    p = cli("status")
    assert p.returncode == 0, p.stderr
    master = p.stdout.splitlines()[0]
    assert f"instance {iid}" in master and "pid 4321" in master and f"term {term}" in master
    assert "on h " in master  # the fqdn the lease was taken with
    row = next(line for line in p.stdout.splitlines() if line.startswith("adm.job"))
    assert row.split()[1] == "2"  # pending
    s = json.loads(cli("--json", "status").stdout)
    assert (s["master_instance_id"], s["master_pid"], s["counts"]) == (
        iid,
        4321,
        {"adm.job": {"pending": 2}},
    )
    p = cli("instances")
    assert p.returncode == 0 and "node-1.example" in p.stdout and "4321" in p.stdout
    assert json.loads(cli("--json", "instances").stdout)[0]["is_master"] is True


def test_errors_are_one_line_and_exit_non_zero(cli) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (
            ("--database-url", "postgresql://bob:s3cret@127.0.0.1:1/nope", "tasks"),
            1,
            "database error",
        ),
        (("--database-url", "mysql://bob:s3cret@db/x", "status"), 1, "postgresql"),
        (("--database-url", "::not a url::", "tasks"), 1, "not a database URL"),
        (("show", "999999"), 1, "no task with id 999999"),
        (("show", "abc"), 2, "abc"),
        (("purge", "--older-than", "7x"), 2, "not a duration"),
        (("tasks", "--since", "yesterday"), 2, "neither an ISO datetime"),
        (("tasks", "--status", "done"), 2, "done"),
        (("publish", "t", "{not json"), 1, "not valid JSON"),
        (("nosuchcommand",), 2, "nosuchcommand"),
        (("run", "no_such_module_xyz"), 1, "no_such_module_xyz"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:  # independent processes: run them at once
        results = list(pool.map(lambda c: cli(*c[0]), cases))
    for (args, code, needle), p in zip(cases, results, strict=True):
        one_line_error(p, code, needle)
        assert "s3cret" not in p.stderr + p.stdout, args


RUN_MODULE = """
from tasker import MsgQ

class Echo(MsgQ):
    topic = "cli.echo"
    text: str = ""

    def exec(self, ctx, worker_id):
        return {"echo": self.text}
"""


def test_run_serves_tasks_and_status_names_it(
    cli, papp: Tasker, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cli_echo_tasks.py").write_text(RUN_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env["TASKER_DATABASE_URL"] = pg_url  # broker: the default folder in the working dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasker.cli", "run", "cli_echo_tasks", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tid = papp.publish_raw("cli.echo", '{"text": "hi"}')
        assert papp.result(tid, timeout=30).result == {"echo": "hi"}
        deadline = time.monotonic() + 15
        while (s := json.loads(cli("--json", "status").stdout))["master_pid"] != proc.pid:
            assert time.monotonic() < deadline, s
            time.sleep(0.1)
        p = cli("status")
        assert f"(pid {proc.pid})" in p.stdout.splitlines()[0]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b'tasker_tasks_total{status="success",topic="cli.echo"} 1.0' in text
        assert b"tasker_is_master 1.0" in text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and " INFO " in err


def test_metrics_exporter(papp: Tasker, pg_url: str, local_broker: str) -> None:
    m = start_exporter(papp, 0, addr="127.0.0.1")
    other = Tasker(pg_url, broker=local_broker)
    m2 = start_exporter(other, 0, addr="127.0.0.1")  # a second app: its own registry
    try:
        papp.publish(Job(n=1))
        papp.stats("adm.job", "success", dt.datetime.now(dt.timezone.utc), 0.2)
        body = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=10).read()
        text = body.decode()
        assert 'tasker_tasks_total{status="pending",topic="adm.job"} 1.0' in text
        assert 'tasker_tasks_total{status="success",topic="adm.job"} 1.0' in text
        assert 'tasker_task_duration_seconds_count{status="success",topic="adm.job"} 1.0' in text
        assert 'tasker_queue_depth{status="pending",topic="adm.job"} 1.0' in text
        assert "tasker_database_up 1.0" in text
        assert "tasker_is_master 0.0" in text
        text2 = urllib.request.urlopen(f"http://127.0.0.1:{m2.port}/metrics", timeout=10).read()
        assert b"tasker_tasks_total{" not in text2  # nothing published through `other`
        assert b'tasker_queue_depth{status="pending",topic="adm.job"} 1.0' in text2
    finally:
        m.close()
        m2.close()
        other.close()


def test_show_says_where_a_task_stands_in_its_chain(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.pipelines import Add

    papp.register(Add)
    first = papp.chain([Add(n=1), "p.add", Add])
    p = cli("show", str(first))
    assert p.returncode == 0, p.stderr
    assert f"step 1 of chain {first}; next: p.add -> p.add" in p.stdout
    assert json.loads(cli("--json", "show", str(first)).stdout)["chain_step"] == 1
