"""`tasker status` without a pass over the table, on SQLite and PostgreSQL:
counts exact up to the cap, larger ones PostgreSQL's estimate ("~") or at
least the cap (">="), `--exact` counting all; the oldest due task read per
topic across priorities; and the command's start-up imports neither the
app nor what only other commands need (the CLI as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tasker import Tasker, admin
from tasker.db import Database
from tests.conftest import ROOT


def fill(app: Tasker, topic: str, status: str, n: int, *, ago_s: float = 0, prio: int = 0) -> None:
    """`n` rows of one topic and status by plain SQL; due `ago_s` seconds ago."""
    pg = app.engine.dialect.name == "postgresql"
    due = (
        "now() - make_interval(secs => :ago)"
        if pg
        else "strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.3f seconds', -:ago))"
    )
    with app.transaction() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO task (topic, status, input, timeout, retry, exec_after, priority) "
                f"VALUES (:t, :s, '{{}}', 5000, 3, {due}, :p)"
            ),
            [{"t": topic, "s": status, "ago": ago_s, "p": prio}] * n,
        )


def analyze(app: Tasker) -> None:
    if app.engine.dialect.name == "postgresql":
        with app.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE task"))


def test_counts_up_to_the_cap_then_an_estimate_or_at_least(app: Tasker) -> None:
    fill(app, "g.small", "success", 5)
    fill(app, "g.small", "failed", 2)
    fill(app, "g.big", "success", 13)
    fill(app, "g.big", "pending", 3)
    analyze(app)
    s = admin.status(app, cap=10)
    assert s["counts"]["g.small"] == {"success": 5, "failed": 2}
    assert s["counts"]["g.big"]["pending"] == 3
    assert "g.small" not in s["count_marks"] and set(s["count_marks"]["g.big"]) == {"success"}
    if app.engine.dialect.name == "postgresql":  # the joint statistics (migration 0014)
        assert (s["count_marks"]["g.big"]["success"], s["counts"]["g.big"]["success"]) == ("~", 13)
    else:  # no statistics: at least the cap
        assert (s["count_marks"]["g.big"]["success"], s["counts"]["g.big"]["success"]) == (">=", 10)
    exact = admin.status(app)
    assert exact["counts"]["g.big"] == {"success": 13, "pending": 3}
    assert exact["count_marks"] == {}
    assert admin.status(app, counts=False)["counts"] == {}


def test_the_oldest_due_task_of_each_topic_whatever_its_priority(app: Tasker) -> None:
    fill(app, "g.a", "pending", 2, ago_s=10)
    fill(app, "g.a", "retry", 1, ago_s=50, prio=5)  # older, in another band
    fill(app, "g.a", "pending", 1, ago_s=30, prio=-2)
    fill(app, "g.b", "pending", 1, ago_s=-3600)  # delayed: not due yet
    fill(app, "g.c", "failed", 1, ago_s=500)  # finished: not due
    oldest = admin.status(app, cap=10)["oldest_due_s"]
    assert set(oldest) == {"g.a"}
    assert 49 <= oldest["g.a"] < 120


def cli(url: str, *args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """`tasker ARGS` in a fresh interpreter; `code` runs after it, in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    program = (
        "import sys\nfrom tasker.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n{code}"
    )
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


HEAVY = ("kombu", "alembic", "starlette", "jinja2", "opentelemetry", "jsonschema", "uvicorn",
         "tasker.app", "tasker.brokers", "tasker.runtime")  # fmt: skip
SHOW_HEAVY = (
    "\nprint('HEAVY', sorted({m.split('.')[0] if not m.startswith('tasker') else m "
    f"for m in sys.modules if m.startswith({HEAVY!r})}}))"
)


def heavy(p: subprocess.CompletedProcess[str]) -> list[str]:
    line = next(x for x in p.stdout.splitlines() if x.startswith("HEAVY"))
    return list(json.loads(line.removeprefix("HEAVY ").replace("'", '"')))


def test_help_and_status_start_without_what_they_do_not_use(db_url: str, tmp_path: Path) -> None:
    p = cli(db_url, "--help", code=SHOW_HEAVY + "\nprint('SQLA', 'sqlalchemy' in sys.modules)")
    assert p.returncode == 0 and "status" in p.stdout, p.stderr
    assert heavy(p) == [] and "SQLA False" in p.stdout
    app = Tasker(db_url, broker=f"filesystem://{tmp_path / 'broker'}")
    try:
        fill(app, "g.big", "success", 1200)
        analyze(app)
    finally:
        app.close()
    p = cli(db_url, "status", code=SHOW_HEAVY)
    assert p.returncode == 0, p.stderr
    assert heavy(p) == []
    row = next(x for x in p.stdout.splitlines() if x.startswith("g.big")).split()
    assert row[3] in ("~1200", ">=1000")  # pending running success: the cap of 1,000
    p = cli(db_url, "status", "--exact")
    row = next(x for x in p.stdout.splitlines() if x.startswith("g.big")).split()
    assert row[3] == "1200"
    p = cli(db_url, "--json", "status")
    data = json.loads(p.stdout)
    assert data["counts"]["g.big"]["success"] >= 1000 and "success" in data["count_marks"]["g.big"]


def test_a_database_without_the_schema_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Database(url).dispose()
    p = cli(url, "status")
    assert "tasker db upgrade" in p.stderr
