"""A group callback's priority, expiry and lock key (DESIGN 1: a callback's
class gets its `priority`, `expires` and `lock` as a direct publish does)

- then_priority: the callback's priority (0 before this revision, whatever
  its class said);
- then_expires: its class's `expires` in ms, counted from when the callback
  is written (the last member ending); null: it never expires;
- then_lock_key: its lock key, formatted from its payload at `group()`.

All additive (a default or nullable): instances of the previous release keep
working beside this one during a rolling deploy; a callback they write
takes none of the three, as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_group") as batch:
        batch.add_column(
            sa.Column("then_priority", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column(
                "then_expires", sa.BigInteger(), nullable=True,
                comment="ms from when it is written",
            )
        )  # fmt: skip
        batch.add_column(sa.Column("then_lock_key", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_group") as batch:
        batch.drop_column("then_lock_key")
        batch.drop_column("then_expires")
        batch.drop_column("then_priority")
