"""stop when decided: task.round and experiment.stop_outcome

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task", sa.Column("round", sa.Integer(), nullable=True))
    op.add_column("experiment", sa.Column("stop_outcome", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    op.drop_column("experiment", "stop_outcome")
    op.drop_column("task", "round")
