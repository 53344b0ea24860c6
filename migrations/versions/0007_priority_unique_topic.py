"""priority and unique_key on task, the topic table (pause, rate-limit window)

ix_task_due gains priority DESC after topic, so a claim reads the highest
priority first, FIFO among equals, without sorting. uq_task_unique_key holds
at most one pending/retry/running task per (topic, unique_key); only keyed
rows enter it, so a task without a key costs it nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")
DUE = sa.text("status IN ('pending', 'retry')")
LIVE = sa.text("unique_key IS NOT NULL AND status IN ('pending', 'retry', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(
            sa.Column(
                "priority",
                sa.Integer(),
                server_default="0",
                nullable=False,
                comment="higher runs first",
            )
        )
        batch.add_column(
            sa.Column(
                "unique_key",
                sa.String(255),
                nullable=True,
                comment="one live task per (topic, key)",
            )
        )
    op.drop_index("ix_task_due", table_name="task")
    op.create_index(
        "ix_task_due",
        "task",
        ["topic", sa.text("priority DESC"), "exec_after", "id"],
        postgresql_where=DUE,
        sqlite_where=DUE,
    )
    op.create_index(
        "uq_task_unique_key",
        "task",
        ["topic", "unique_key"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_table(
        "topic",
        sa.Column("name", sa.String(200), autoincrement=False, nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "rate_window",
            UTCDateTime(),
            nullable=True,
            comment="start of the rate-limit window",
        ),
        sa.Column(
            "rate_count", sa.Integer(), server_default="0", nullable=False, comment="claims in it"
        ),
        sa.Column("updated", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("topic")
    op.drop_index("uq_task_unique_key", table_name="task")
    op.drop_index("ix_task_due", table_name="task")
    op.create_index(
        "ix_task_due", "task", ["topic", "exec_after", "id"], postgresql_where=DUE, sqlite_where=DUE
    )
    with op.batch_alter_table("task") as batch:
        batch.drop_column("unique_key")
        batch.drop_column("priority")
