"""The W3C trace context of the publish that made a task (DESIGN 9: OpenTelemetry)

- traceparent: the `traceparent` header of the PRODUCER span `publish
  <topic>`, so each execution's CONSUMER span joins the publisher's trace
  across processes and machines (the context travels in the row, not in the
  broker message). Null when the publisher traced nothing.

Nullable and additive: instances of the previous release keep working
beside this one during a rolling deploy (they ignore it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(
            sa.Column(
                "traceparent", sa.String(64), nullable=True,
                comment="W3C trace context of the publish",
            )
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_column("traceparent")
