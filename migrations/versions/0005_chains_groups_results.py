"""chains, groups and result topics: the link columns on task, task_group, task_outbox

A chain step knows its chain (`chain_id`, the first step's id), its place
(`chain_step`) and the steps after it (`chain_next`, JSON); a group member
its `task_group`; a task of a MsgQ with `result_topic` the queue that gets
its outcome, through `task_outbox`.

The columns are nullable without a default, so adding them does not
rewrite `task`; the indexes on them come in 0006, so that on a large table
an operator can stop here and build those concurrently first.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.text("CURRENT_TIMESTAMP")


def _columns() -> tuple[sa.Column, ...]:  # type: ignore[type-arg]
    return (
        sa.Column("chain_id", sa.BigInteger(), nullable=True,
                  comment="id of the first step of its chain"),
        sa.Column("chain_step", sa.Integer(), nullable=True,
                  comment="1 for a chain's first step, then 2, 3..."),
        sa.Column("chain_next", sa.Text(), nullable=True,
                  comment="JSON list of the steps after this one"),
        sa.Column("group_id", sa.BigInteger(), nullable=True,
                  comment="task_group.id of a group member"),
        sa.Column("result_topic", sa.String(200), nullable=True,
                  comment="queue that gets the outcome"),
    )  # fmt: skip


def upgrade() -> None:
    for column in _columns():
        op.add_column("task", column)
    op.create_table(
        "task_group",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False, comment="members"),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False,
                  comment="terminal finishes seen"),
        sa.Column("then_topic", sa.String(200), nullable=False),
        sa.Column("then_input", sa.Text(), nullable=False,
                  comment="callback payload without `results`"),
        sa.Column("then_timeout", sa.Integer(), nullable=False, comment="ms"),
        sa.Column("then_retry", sa.Integer(), nullable=False),
        sa.Column("then_result_topic", sa.String(200), nullable=True),
        sa.Column("callback_id", sa.BigInteger(), nullable=True,
                  comment="the callback task, once written"),
        sa.Column("created", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )  # fmt: skip
    op.create_index("ix_task_group_callback", "task_group", ["callback_id"])
    op.create_table(
        "task_outbox",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False, comment="the MsgQ's result_topic"),
        sa.Column("body", sa.Text(), nullable=False,
                  comment='JSON {"id", "topic", "success", "error", "result"}'),
        sa.Column("taken_until", UTCDateTime(), nullable=True,
                  comment="a publisher holds it until then"),
        sa.Column("created", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("task_outbox")
    op.drop_table("task_group")
    with op.batch_alter_table("task") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
