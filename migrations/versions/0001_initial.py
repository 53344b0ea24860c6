"""task, core and instance tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0001"
down_revision = None
# In a user's own alembic environment tasker's lineage is `tasker@head`.
# alembic keeps branch labels in the scripts, not the database, so adding
# this changed nothing for databases already migrated.
branch_labels = ("tasker",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.text("CURRENT_TIMESTAMP")
DUE = sa.text("status IN ('pending', 'retry')")
INFLIGHT = sa.text("dispatched IS NOT NULL")
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    core = op.create_table(
        "core",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("master_instance_id", sa.BigInteger(), nullable=True),
        sa.Column("master_fqdn", sa.String(255), server_default="", nullable=False),
        sa.Column("updated", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("master_out_of_date", sa.Integer(), server_default="6000", nullable=False),
        sa.Column("instance_heartbeat", sa.Integer(), server_default="3000", nullable=False),
        sa.Column("term", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "instance",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("fqdn", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "topics",
            sa.Text(),
            server_default="{}",
            nullable=False,
            comment='JSON {"topic": {"concurrency": n, "prefetch": m}}',
        ),
        sa.Column("started", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("heartbeat", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("master_eligible", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "task",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("timeout", sa.Integer(), nullable=False, comment="ms one execution may take"),
        sa.Column(
            "retry", sa.Integer(), nullable=False, comment="runs left; at 0 the task is failed"
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("exec_after", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("worker_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("worker_fqdn", sa.Text(), server_default="", nullable=False),
        sa.Column("log", sa.Text(), server_default="", nullable=False),
        sa.Column("errlog", sa.Text(), server_default="", nullable=False),
        sa.Column("created", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("updated", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("started", UTCDateTime(), nullable=True),
        sa.Column("finished", UTCDateTime(), nullable=True),
        sa.Column("term", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "token", sa.BigInteger(), nullable=True, comment="dispatch token of the live message"
        ),
        sa.Column(
            "dispatched", UTCDateTime(), nullable=True, comment="when the live message was sent"
        ),
        sa.Column("instance_id", sa.BigInteger(), nullable=True, comment="instance running it"),
        sa.Column(
            "periodic_at", UTCDateTime(), nullable=True, comment="fire time of a periodic task"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_task_due", "task", ["topic", "exec_after"], postgresql_where=DUE, sqlite_where=DUE
    )
    op.create_index("ix_task_history", "task", ["topic", "status", "created"])
    op.create_index(
        "ix_task_inflight",
        "task",
        ["topic", "dispatched"],
        postgresql_where=INFLIGHT,
        sqlite_where=INFLIGHT,
    )
    op.create_index(
        "ix_task_running", "task", ["started"], postgresql_where=RUNNING, sqlite_where=RUNNING
    )
    op.create_index("uq_task_periodic", "task", ["topic", "periodic_at"], unique=True)
    op.bulk_insert(core, [{"id": 1, "master_fqdn": "", "term": 0}])


def downgrade() -> None:
    op.drop_table("task")
    op.drop_table("instance")
    op.drop_table("core")
