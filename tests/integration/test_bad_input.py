"""Bad input sweep: every CLI command and public function fed malformed values
gets a clear error, never a traceback, and the database is left as it was."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin
from tasker.exceptions import TaskerError

pytestmark = pytest.mark.pg

NASTY = "x'; DROP TABLE task; --"


class Job(MsgQ):
    topic = "bad.job"
    n: int
    flag: bool = False

    def exec(self, ctx: Context, worker_id: int) -> object:
        return self.n


def snapshot(app: Tasker) -> list[Any]:
    """Everything a bad call could have touched."""
    with app.transaction() as conn:
        tasks = conn.execute(sa.text("SELECT * FROM task ORDER BY id")).all()
        core = conn.execute(sa.text("SELECT * FROM core")).all()
        instances = conn.execute(sa.text("SELECT count(*) FROM instance")).scalar()
    return [tasks, core, instances]


@pytest.fixture
def seeded(pg_url: str, local_broker: str):  # type: ignore[no-untyped-def]
    app = Tasker(pg_url, broker=local_broker)
    app.register(Job)
    ids = app.publish_many([Job(n=i) for i in range(3)])
    yield app, ids
    app.close()


CALLS: list[tuple[str, Callable[[Tasker], Any]]] = [
    ("publish a non-MsgQ", lambda app: app.publish("not a task")),  # type: ignore[arg-type]
    ("publish_raw not JSON", lambda app: app.publish_raw("bad.job", "{nope")),
    ("publish_raw a list", lambda app: app.publish_raw("bad.job", "[1, 2]")),
    ("publish_raw wrong type", lambda app: app.publish_raw("bad.job", '{"n": "one"}')),
    ("publish_raw bool for int", lambda app: app.publish_raw("bad.job", '{"n": true}')),
    ("publish_raw unknown field", lambda app: app.publish_raw("bad.job", '{"n": 1, "x": 2}')),
    ("publish_raw missing field", lambda app: app.publish_raw("bad.job", "{}")),
    ("publish_raw unknown topic, not an object", lambda app: app.publish_raw("no.such", "3")),
    ("negative timeout", lambda app: app.publish(Job(n=1), timeout=-1)),
    ("zero retry", lambda app: app.publish(Job(n=1), retry=0)),
    ("retry as text", lambda app: app.publish(Job(n=1), retry="3")),  # type: ignore[arg-type]
    ("exec_after as text", lambda app: app.publish(Job(n=1), exec_after="tomorrow")),  # type: ignore[arg-type]
    (
        "huge input",
        lambda app: app.publish_raw("bad.job", '{"n": 1, "x": "' + "a" * 2_000_000 + '"}'),
    ),
    ("result of a missing task", lambda app: app.result(10**12, timeout=0.1)),
    ("admin.get_task missing", lambda app: admin.get_task(app, -5)),
    ("admin.list_tasks bad status", lambda app: admin.list_tasks(app, status="bogus")),
    ("admin.list_tasks bad limit", lambda app: admin.list_tasks(app, limit=-1)),
    ("admin.retry text ids", lambda app: admin.retry(app, ids=["1; DELETE FROM task"])),  # type: ignore[list-item]
    ("admin.retry running", lambda app: admin.retry(app, status="running")),
    ("admin.cancel text ids", lambda app: admin.cancel(app, ["x"])),  # type: ignore[list-item]
    ("admin.cancel an id over bigint", lambda app: admin.cancel(app, [2**64])),
    ("admin.purge negative", lambda app: admin.purge(app, older_than=dt.timedelta(days=-1))),
    ("admin.purge pending", lambda app: admin.purge(app, dt.timedelta(days=1), status="pending")),
    ("admin.publish bad JSON", lambda app: admin.publish(app, "bad.job", "{")),
]


@pytest.mark.parametrize(("what", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_public_functions_refuse_bad_input(
    seeded, what: str, call: Callable[[Tasker], Any]
) -> None:  # type: ignore[no-untyped-def]
    app, _ = seeded
    before = snapshot(app)
    with pytest.raises(TaskerError) as err:
        call(app)
    assert str(err.value).strip(), f"{what}: empty error"
    assert len(str(err.value)) < 500, (
        f"{what}: the error should be short, got {str(err.value)[:200]}"
    )
    assert snapshot(app) == before, f"{what}: the database changed"


def test_sql_metacharacters_are_data(seeded) -> None:  # type: ignore[no-untyped-def]
    app, _ = seeded
    before = snapshot(app)
    assert admin.list_tasks(app, topic=NASTY) == []
    assert admin.retry(app, status="failed", topic=NASTY) == []
    assert snapshot(app) == before


def test_bad_urls_are_clear_errors() -> None:
    for url in ("bogus://x", "not a url", "mysql://u@h/db"):
        with pytest.raises(TaskerError):
            Tasker(url)
    with pytest.raises(TaskerError) as err:
        Tasker("sqlite:///x.db", broker="no-scheme-here")
    assert "no-scheme-here" in str(err.value)


def _cli(args: list[str], url: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKER_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "tasker.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


CLI_CASES: list[list[str]] = [
    ["tasks", "--status", "bogus"],
    ["tasks", "--limit", "-1"],
    ["tasks", "--limit", "abc"],
    ["tasks", "--since", "yesterday-ish"],
    ["show", "abc"],
    ["show", "999999999999"],
    ["retry", "abc"],
    ["retry", "--status", "running", "--yes"],
    ["retry"],
    ["cancel", "x"],
    ["purge", "--older-than", "nonsense"],
    ["purge", "--older-than", "7d", "--status", "running", "--yes"],
    ["publish", "bad.job", "{not json"],
    ["publish", "bad.job", '{"n": 1}', "--retry", "0"],
    ["publish", "bad.job", '{"n": 1}', "--exec-after", "soonish"],
    ["run", "no_such_module_anywhere"],
    ["--database-url", "bogus://x", "status"],
    ["--database-url", "postgresql://u:hunter2@127.0.0.1:1/x", "status"],
]


def test_cli_refuses_bad_input(seeded, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    app, _ = seeded
    before = snapshot(app)
    for args in CLI_CASES:
        done = _cli(args, pg_url)
        shown = " ".join(args)
        assert done.returncode != 0, f"tasker {shown}: exit 0\n{done.stdout}"
        assert "Traceback" not in done.stderr, f"tasker {shown}: traceback\n{done.stderr}"
        assert done.stderr.strip(), f"tasker {shown}: no error message"
        assert "hunter2" not in done.stderr + done.stdout, f"tasker {shown}: password shown"
    # SQL metacharacters in a filter are just a topic name that matches nothing.
    done = _cli(["--json", "tasks", "--topic", NASTY], pg_url)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert snapshot(app) == before
