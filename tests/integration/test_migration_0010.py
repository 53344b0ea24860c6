"""Migration 0010 on SQLite: every table whose ids could be reused gets
AUTOINCREMENT, keeping every row and every index (partial ones included)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from tasker import db
from tests.conftest import alembic_config

TABLES = ("task", "task_group", "task_outbox", "instance")


def _snapshot(conn: sa.Connection) -> dict[str, object]:
    rows = {t: conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY id")).all() for t in TABLES}
    indexes = conn.execute(
        sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                " ORDER BY name")
    ).all()  # fmt: skip
    return {"rows": rows, "indexes": indexes}


def test_0010_keeps_rows_and_indexes_and_ids_are_never_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0009")
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            for n in range(3):
                conn.execute(
                    sa.text("INSERT INTO task (topic, input, timeout, retry, status, unique_key,"
                            " chain_id, chain_step) VALUES ('m.t', '{}', 1000, 1, :s, :k, 1, :n)"),
                    {"s": "pending" if n else "success", "k": f"k{n}", "n": n + 1},
                )  # fmt: skip
            conn.execute(sa.text("INSERT INTO task_group (size, then_topic, then_input,"
                                 " then_timeout, then_retry) VALUES (2, 'm.cb', '{}', 1, 1)"))
            conn.execute(sa.text("INSERT INTO task_outbox (task_id, queue, body)"
                                 " VALUES (1, 'q', '{}')"))
            conn.execute(sa.text("INSERT INTO instance (fqdn, pid) VALUES ('h', 1), ('h', 2)"))
            before = _snapshot(conn)
        command.upgrade(config, "0010")  # this revision alone: later ones may add columns
        with engine.begin() as conn:
            assert _snapshot(conn) == before
            for t in TABLES:
                create = conn.execute(
                    sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                    {"t": t},
                ).scalar_one()
                assert "AUTOINCREMENT" in create
            seq = dict(conn.execute(sa.text("SELECT name, seq FROM sqlite_sequence")).all())
            assert seq == {"task": 3, "task_group": 1, "task_outbox": 1, "instance": 2}
            conn.execute(sa.text("DELETE FROM task WHERE id = 3"))
            conn.execute(sa.text("INSERT INTO task (topic, input, timeout, retry)"
                                 " VALUES ('m.t', '{}', 1000, 1)"))  # fmt: skip
            assert conn.execute(sa.text("SELECT max(id) FROM task")).scalar() == 4
            after = _snapshot(conn)
        command.downgrade(config, "0009")  # keeps AUTOINCREMENT; the upgrade skips it then
        command.upgrade(config, "0010")
        with engine.begin() as conn:
            assert _snapshot(conn) == after
    finally:
        engine.dispose()
