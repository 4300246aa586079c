"""result.idle_energy_kwh: idle baseline over each task, for net energy

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("result", sa.Column("idle_energy_kwh", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("result", "idle_energy_kwh")
