"""Indexes for the dashboard: task pages by status, and reads by finish time

`ix_task_status_created` (status, created, id) serves the task list filtered
by status alone (or not at all) in keyset order; `ix_task_finished` serves
the throughput chart, run-time percentiles and purge by age. Both leave out
what an insert writes (pending rows, no `finished`), so publishing does not
pay for them. On PostgreSQL both are built CONCURRENTLY, so a large `task`
table keeps taking writes while they build.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished IS NOT NULL")
NOT_PENDING = sa.text("status <> 'pending'")


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    pg = _is_pg()
    with op.get_context().autocommit_block() if pg else contextlib.nullcontext():
        op.create_index(
            "ix_task_status_created",
            "task",
            ["status", "created", "id"],
            postgresql_where=NOT_PENDING,
            sqlite_where=NOT_PENDING,
            postgresql_concurrently=pg,
        )
        op.create_index(
            "ix_task_finished",
            "task",
            ["finished"],
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
            postgresql_concurrently=pg,
        )


def downgrade() -> None:
    pg = _is_pg()
    with op.get_context().autocommit_block() if pg else contextlib.nullcontext():
        op.drop_index("ix_task_finished", table_name="task", postgresql_concurrently=pg)
        op.drop_index("ix_task_status_created", table_name="task", postgresql_concurrently=pg)
