"""partial indexes for the reconcile job's scans of unfinished tasks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_open_enqueued", "task", ["enqueued_at"],
                    postgresql_where=sa.text("status = 'queued'"))
    op.create_index("ix_task_open_lease", "task", ["lease_until"],
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("ix_task_open_lease", table_name="task")
    op.drop_index("ix_task_open_enqueued", table_name="task")
