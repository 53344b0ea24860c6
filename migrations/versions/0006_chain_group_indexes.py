"""Indexes of chains and groups: one step per (chain_id, chain_step), members by group

`uq_task_chain_step` makes a step that succeeds twice (an admin requeue)
start its successor once; `ix_task_group` finds a group's members when its
last one ends. Both are partial, so a task outside any chain or group costs
them nothing.

They are built inside the migration's transaction, which holds off writes to
`task` while they scan it. On a large table, upgrade to 0005 first, build
them with CREATE INDEX CONCURRENTLY under the same names (the README gives
the statements), then upgrade: this revision finds them and leaves them be.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHAINED = sa.text("chain_id IS NOT NULL")
GROUPED = sa.text("group_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "uq_task_chain_step", "task", ["chain_id", "chain_step"], unique=True,
        postgresql_where=CHAINED, sqlite_where=CHAINED, if_not_exists=True,
    )  # fmt: skip
    op.create_index(
        "ix_task_group", "task", ["group_id", "id"],
        postgresql_where=GROUPED, sqlite_where=GROUPED, if_not_exists=True,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_task_group", table_name="task")
    op.drop_index("uq_task_chain_step", table_name="task")
