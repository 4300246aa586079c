"""result.valid and result.invalid_reason: a measurement disturbed by a pause

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows measured before this revision had no pause detection: they count as valid.
    op.add_column("result", sa.Column("valid", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("result", sa.Column("invalid_reason", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("result", "invalid_reason")
    op.drop_column("result", "valid")
