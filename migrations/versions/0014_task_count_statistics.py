"""Joint statistics of (topic, status) on PostgreSQL, for `tasker status` (the cold path)

`tasker status` counts each (topic, status) up to a cap (an index range that
stops there) and shows a larger one as PostgreSQL's estimate. Topics and
statuses are far from independent (one topic fails, another never does), so
the estimate reads this multivariate MCV list, which ANALYZE (autovacuum)
keeps: the frequency of each common (topic, status) pair in its sample. It
holds no index and costs writes nothing. SQLite has no such statistics: a
count there beyond the cap is shown as "at least".

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = "st_task_topic_status"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE STATISTICS IF NOT EXISTS {NAME} (mcv) ON topic, status FROM task")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {NAME}")
