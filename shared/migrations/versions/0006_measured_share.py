"""result.energy_measured_kwh and the measured window: how much of a row's energy was measured

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision did not say: their measured part is unknown (NULL).
    op.add_column("result", sa.Column("energy_measured_kwh", sa.Float(), nullable=True))
    op.add_column("result", sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("result", sa.Column("window_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("result", "window_s")
    op.drop_column("result", "window_started_at")
    op.drop_column("result", "energy_measured_kwh")
