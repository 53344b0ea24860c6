"""Indexes for the dashboard: task pages by status, and reads by finish time

`ix_task_status_created` (status, created, id) serves the task list filtered
by status alone (or not at all) in keyset order; `ix_task_finished` serves
the throughput chart, run-time percentiles and purge by age. Both leave out
what an insert writes (pending rows, no `finished`), so publishing does not
pay for them.

They are built inside the migration's transaction, which holds off writes to
`task` while they build. On a large table, build them first with CREATE
INDEX CONCURRENTLY under the same names (the README gives the statements):
this revision then finds them and leaves them be.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished IS NOT NULL")
NOT_PENDING = sa.text("status <> 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_task_status_created",
        "task",
        ["status", "created", "id"],
        postgresql_where=NOT_PENDING,
        sqlite_where=NOT_PENDING,
        if_not_exists=True,
    )
    op.create_index(
        "ix_task_finished",
        "task",
        ["finished"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_task_finished", table_name="task")
    op.drop_index("ix_task_status_created", table_name="task")
