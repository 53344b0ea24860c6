"""alembic provisions and removes the schema on both databases; models and migration agree."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tasker import db
from tasker.schema import metadata
from tests.conftest import ROOT, alembic_config


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_check_downgrade(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            row = conn.execute(sa.text("SELECT * FROM core")).mappings().one()
        assert (row["id"], row["term"], row["master_out_of_date"], row["instance_heartbeat"]) == (
            1,
            0,
            6000,
            3000,
        )
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("task")}
        assert {"ix_task_due", "ix_task_history"} <= indexes
    finally:
        engine.dispose()
    assert {"task", "core", "instance"} <= _tables(db_url)
    command.downgrade(alembic_config(db_url), "base")
    assert not ({"task", "core", "instance"} & _tables(db_url))
    command.upgrade(alembic_config(db_url), "head")
    assert {"task", "core", "instance"} <= _tables(db_url)


def test_alembic_cli_works_from_any_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "TASKER_DATABASE_URL": url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [*alembic, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr
    assert {"task", "core", "instance"} <= _tables(url)


def test_chain_and_group_indexes_built_concurrently_first_are_kept(pg_url: str) -> None:
    """The way on a large table (docs/howto/provision-and-upgrade.md): stop at
    0005, build 0006's indexes without blocking, then upgrade; the schema then
    matches the models."""
    import psycopg

    cfg = alembic_config(pg_url)
    command.downgrade(cfg, "0005")
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_task_chain_step "
            "ON task (chain_id, chain_step) WHERE chain_id IS NOT NULL"
        )
        conn.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_task_group "
            "ON task (group_id, id) WHERE group_id IS NOT NULL"
        )
    command.upgrade(cfg, "head")
    engine = db.make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
