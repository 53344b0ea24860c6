"""What the master remembers per topic, kept in `topic` (DESIGN 2 and 7)

- periodic_last: the newest fire time inserted for a periodic topic, so a
  purge of old task rows can never make a fire time run again;
- rate_tat: the rate limit's theoretical arrival time (GCRA), a sliding
  limit in one column instead of calendar windows;
- settings and payload_schema: what the instances serving the topic declared
  (their class's settings as JSON, the JSON Schema of its payload), read by a
  publisher that holds no class for the topic.

All nullable and additive: instances of the previous release keep working
beside this one during a rolling deploy.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasker.schema import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("topic") as batch:
        batch.add_column(
            sa.Column(
                "periodic_last", UTCDateTime(), nullable=True,
                comment="newest periodic fire time inserted",
            )
        )  # fmt: skip
        batch.add_column(
            sa.Column(
                "rate_tat", UTCDateTime(), nullable=True,
                comment="rate limit: theoretical arrival time (GCRA)",
            )
        )  # fmt: skip
        batch.add_column(
            sa.Column(
                "settings", sa.Text(), nullable=True,
                comment="JSON: the serving class's settings, as an instance declared them",
            )
        )  # fmt: skip
        batch.add_column(
            sa.Column(
                "payload_schema", sa.Text(), nullable=True,
                comment="JSON Schema of the payload, as an instance declared it",
            )
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("topic") as batch:
        batch.drop_column("payload_schema")
        batch.drop_column("settings")
        batch.drop_column("rate_tat")
        batch.drop_column("periodic_last")
