"""SQLite never reuses an id: AUTOINCREMENT on task, task_group, task_outbox, instance

Without AUTOINCREMENT SQLite hands out max(id) + 1, so after a purge of the
newest rows a new task takes an old task's id (a caller waiting on the old
id would read the new task's result), a new group takes a purged group's id
(its callback would gather the old members), an outbox row the id of one a
slow publisher still holds (whose delete would drop the new message), an
instance the id of a forgotten dead one (the rescue would miss its tasks).

On SQLite each table is rebuilt keeping every row and every index: the
CREATE TABLE text gains AUTOINCREMENT, the indexes are re-created from the
exact `sql` text saved from `sqlite_master` (partial indexes keep their
WHERE) and checked identical, and `sqlite_sequence` starts at max(id). On
PostgreSQL nothing changes: an identity or a sequence never goes back.

The downgrade keeps AUTOINCREMENT (the previous release works with it and
it only takes reuse away); the upgrade skips a table that already has it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("task", "task_group", "task_outbox", "instance")

_ID_COLUMN = re.compile(r"^(\s*)id INTEGER NOT NULL,", re.MULTILINE)
_PK_CONSTRAINT = re.compile(r",\s*PRIMARY KEY \(id\)\s*\)\s*$")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    for name in TABLES:
        _rebuild_with_autoincrement(conn, name)


def downgrade() -> None:
    pass  # see the module docstring


def _master(conn: sa.Connection, kind: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = :kind AND tbl_name = :t"
            " AND sql IS NOT NULL ORDER BY name"
        ),
        {"kind": kind, "t": table},
    )
    return {r.name: r.sql for r in rows}


def _columns(conn: sa.Connection, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute(sa.text(f'PRAGMA table_info("{table}")'))]


def autoincrement_sql(create: str) -> str:
    """The CREATE TABLE text `create` with its integer `id` primary key made
    AUTOINCREMENT; RuntimeError when the text is not the shape tasker made."""
    body, n_id = _ID_COLUMN.subn(r"\1id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,", create)
    body, n_pk = _PK_CONSTRAINT.subn("\n)", body)
    if (n_id, n_pk) != (1, 1):
        raise RuntimeError(f"0009: unexpected CREATE TABLE text, not changed: {create!r}")
    return body


def _rebuild_with_autoincrement(conn: sa.Connection, table: str) -> None:
    (create,) = _master(conn, "table", table).values()
    if "AUTOINCREMENT" in create.upper():
        return
    indexes = _master(conn, "index", table)
    columns = _columns(conn, table)
    count = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
    old = f"_{table}_before_0009"
    conn.execute(sa.text(f'ALTER TABLE "{table}" RENAME TO "{old}"'))
    conn.execute(sa.text(autoincrement_sql(create)))
    names = ", ".join(f'"{c[1]}"' for c in columns)
    conn.execute(sa.text(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM "{old}"'))
    conn.execute(sa.text(f'DROP TABLE "{old}"'))  # its indexes go with it
    for sql in indexes.values():
        conn.execute(sa.text(sql))
    if _master(conn, "index", table) != indexes:
        raise RuntimeError(f"0009: the indexes of {table} differ after the rebuild")
    if _columns(conn, table) != columns:
        raise RuntimeError(f"0009: the columns of {table} differ after the rebuild")
    if conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one() != count:
        raise RuntimeError(f"0009: rows of {table} were lost in the rebuild")
    top = conn.execute(sa.text(f'SELECT max(id) FROM "{table}"')).scalar()
    conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
    if top is not None:
        conn.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :seq)"),
            {"t": table, "seq": top},
        )
