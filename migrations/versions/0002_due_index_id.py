"""ix_task_due ends with id, so a claim reads due rows in order without sorting

A `publish_many` batch shares one `exec_after`; with (topic, exec_after)
alone PostgreSQL sorted the whole batch on every claim.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DUE = sa.text("status IN ('pending', 'retry')")


def _due_index(columns: list[str]) -> None:
    op.drop_index("ix_task_due", table_name="task")
    op.create_index("ix_task_due", "task", columns, postgresql_where=DUE, sqlite_where=DUE)


def upgrade() -> None:
    _due_index(["topic", "exec_after", "id"])


def downgrade() -> None:
    _due_index(["topic", "exec_after"])
