"""result.cpu_freq_mhz, result.temperature_c: the machine's clock and heat per inference

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: not readable on the worker's machine (no sensor), or an older row.
    op.add_column("result", sa.Column("cpu_freq_mhz", sa.Float(), nullable=True))
    op.add_column("result", sa.Column("temperature_c", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("result", "temperature_c")
    op.drop_column("result", "cpu_freq_mhz")
