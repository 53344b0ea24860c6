"""`uq_task_periodic` holds only periodic tasks (PERFORMANCE: index upkeep per task)

The unique index on (topic, periodic_at) held an entry for every version of
every row, periodic or not: each of a task's four writes (insert, claim,
start, finish) paid for it. Partial on `periodic_at IS NOT NULL`, it keeps
the same guarantee (NULLs never collide in a unique index) and a plain task
writes no entry in it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PERIODIC = sa.text("periodic_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index("uq_task_periodic", table_name="task")
    op.create_index(
        "uq_task_periodic", "task", ["topic", "periodic_at"], unique=True,
        postgresql_where=PERIODIC, sqlite_where=PERIODIC,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("uq_task_periodic", table_name="task")
    op.create_index("uq_task_periodic", "task", ["topic", "periodic_at"], unique=True)
