"""Expiry and per-key locks on `task` (DESIGN 1: `expires`, `lock`)

- expires_at: a task not started by then never runs; the master's expiry
  pass ends it `failed` ("expired"), reading ix_task_expires;
- lock_key: tasks sharing a key run one at a time, in (priority, id) order;
  the master's claim checks the key in ix_task_lock.

Both columns are nullable and both indexes partial on them, so a task that
uses neither writes no index entry, and instances of the previous release
keep working beside this one during a rolling deploy (they ignore both).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EXPIRING = sa.text("expires_at IS NOT NULL AND status IN ('pending', 'retry')")
LOCKED = sa.text("lock_key IS NOT NULL AND status IN ('pending', 'retry', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(
            sa.Column(
                "expires_at", UTCDateTime(), nullable=True,
                comment="not started by then: never runs",
            )
        )  # fmt: skip
        batch.add_column(
            sa.Column(
                "lock_key", sa.String(255), nullable=True,
                comment="one running task per key, in order",
            )
        )  # fmt: skip
    op.create_index(
        "ix_task_expires", "task", ["expires_at"],
        postgresql_where=EXPIRING, sqlite_where=EXPIRING,
    )  # fmt: skip
    op.create_index(
        "ix_task_lock", "task", ["lock_key", sa.text("priority DESC"), "id"],
        postgresql_where=LOCKED, sqlite_where=LOCKED,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_task_lock", table_name="task")
    op.drop_index("ix_task_expires", table_name="task")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("lock_key")
        batch.drop_column("expires_at")
