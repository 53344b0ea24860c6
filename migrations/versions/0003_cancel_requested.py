"""task.cancel_requested: abort of a running task (an admin's cancel request)

A running task an admin cancels keeps `running` and gets `cancel_requested`;
each instance's heartbeat reads its own such rows through `ix_task_cancel`,
a partial index that holds only running rows with a request.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WANTED = sa.text("status = 'running' AND cancel_requested IS NOT NULL")


def upgrade() -> None:
    op.add_column(
        "task",
        sa.Column(
            "cancel_requested", UTCDateTime(), nullable=True, comment="when an admin cancelled it"
        ),
    )
    op.create_index(
        "ix_task_cancel", "task", ["instance_id"], postgresql_where=WANTED, sqlite_where=WANTED
    )


def downgrade() -> None:
    op.drop_index("ix_task_cancel", table_name="task")
    # A plain DROP COLUMN (SQLite >= 3.35): a batch copy of the table would
    # have to rebuild its partial indexes from reflection.
    op.drop_column("task", "cancel_requested")
