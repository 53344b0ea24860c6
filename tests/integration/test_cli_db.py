"""`tasker db` provisions an empty database with the packaged migrations, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from tasker import db, provision, store
from tasker.exceptions import SchemaMissing
from tests.conftest import _pg_admin, _pg_url
from tests.integration.test_cli import one_line_error

HEAD = ScriptDirectory.from_config(provision.config()).get_current_head()
"""tasker's newest revision (the chain is linear)."""


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    name = f"tasker_e_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _pg_url(name)
    with _pg_admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "pg"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        return request.getfixturevalue("empty_pg_url")
    return f"sqlite:///{tmp_path / 'fresh.db'}"


def tasker(url: str, cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env["TASKER_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "tasker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_current_check_downgrade(empty_url: str, tmp_path: Path) -> None:
    p = tasker(empty_url, tmp_path, "db", "check")
    one_line_error(p, 1, "no revision", "tasker db upgrade")
    assert json.loads(tasker(empty_url, tmp_path, "--json", "db", "current").stdout) == {
        "at_head": False,
        "current": [],
        "heads": [HEAD],
    }

    p = tasker(empty_url, tmp_path, "db", "upgrade")
    assert p.returncode == 0, p.stderr
    assert "Running upgrade  -> 0001" in p.stderr
    assert p.stdout.strip() == f"database at {HEAD} (head)"
    assert {"task", "core", "instance", "alembic_version"} <= tables(empty_url)
    p = tasker(empty_url, tmp_path, "db", "check")
    assert (p.returncode, p.stdout.strip()) == (0, f"database at {HEAD}: matches tasker's models")
    p = tasker(empty_url, tmp_path, "publish", "t", "{}")
    assert p.returncode == 0, p.stderr  # the schema is usable

    p = tasker(empty_url, tmp_path, "db", "downgrade", "0001", "-y")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"database at 0001 (tasker's head is {HEAD})"
    assert tasker(empty_url, tmp_path, "db", "upgrade", "tasker@head").returncode == 0
    assert (
        tasker(empty_url, tmp_path, "db", "current").stdout.strip() == f"database at {HEAD} (head)"
    )


def test_downgrade_asks_first(sqlite_url: str, tmp_path: Path) -> None:
    p = tasker(sqlite_url, tmp_path, "db", "downgrade", "base", stdin="n\n")
    one_line_error(p, 1, "aborted: nothing changed")
    assert {"task", "core", "instance"} <= tables(sqlite_url)
    p = tasker(sqlite_url, tmp_path, "db", "downgrade", "base", stdin="yes\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"database at none (tasker's head is {HEAD})"
    assert tables(sqlite_url) == {"alembic_version"}


def test_errors_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    one_line_error(tasker(sqlite_url, tmp_path, "db", "upgrade", "nosuch"), 1, "'nosuch'")
    one_line_error(tasker(sqlite_url, tmp_path, "db", "downgrade", "zz\x01", "-y"), 1, "zz")
    dead = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    for cmd in (["upgrade"], ["current"], ["check"]):
        p = tasker(dead, tmp_path, "db", *cmd)
        one_line_error(p, 1, "database error", "127.0.0.1")
        assert "s3cret" not in p.stderr
    one_line_error(tasker("mysql://x@y/z", tmp_path, "db", "upgrade"), 1, "postgresql and sqlite")


def test_schema_hint_names_tasker_db_upgrade(tmp_path: Path) -> None:
    p = tasker(f"sqlite:///{tmp_path / 'none.db'}", tmp_path, "tasks")
    one_line_error(p, 1, "run: tasker db upgrade")


def test_store_on_an_empty_database_raises_schema_missing(empty_url: str) -> None:
    engine = db.make_engine(empty_url)
    row = {"topic": "t", "input": "{}", "timeout_s": 1, "retry": 1}
    hint = "run: tasker db upgrade"
    try:
        with pytest.raises(SchemaMissing, match=hint), db.transaction(engine) as conn:
            store.core_get(conn)
        with pytest.raises(SchemaMissing, match=hint), db.transaction(engine) as conn:
            store.task_insert_many(conn, rows=[row])
    finally:
        engine.dispose()


def test_run_on_an_empty_database_says_to_upgrade(empty_url: str, tmp_path: Path) -> None:
    (tmp_path / "empty_db_tasks.py").write_text(
        "from tasker import MsgQ\n\nclass Echo(MsgQ):\n    topic = 'e'\n\n"
        "    def exec(self, ctx, worker_id):\n        return None\n"
    )
    p = tasker(empty_url, tmp_path, "run", "empty_db_tasks")
    assert p.returncode != 0, p.stderr
    assert "run: tasker db upgrade" in p.stderr
    assert "Traceback" not in p.stderr
