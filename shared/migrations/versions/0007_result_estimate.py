"""result.estimate_*: the estimate a worker expected before each inference

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: no estimate was made (no good fit for the worker's hardware profile yet, or an older row).
    op.add_column("result", sa.Column("estimate_fit_id", sa.Integer(), sa.ForeignKey("estimator_fit.id"),
                                      nullable=True))
    op.add_column("result", sa.Column("estimate_energy_fit_id", sa.Integer(), sa.ForeignKey("estimator_fit.id"),
                                      nullable=True))
    op.add_column("result", sa.Column("estimate_e2e_s", sa.Float(), nullable=True))
    op.add_column("result", sa.Column("estimate_energy_kwh", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("result", "estimate_energy_kwh")
    op.drop_column("result", "estimate_e2e_s")
    op.drop_column("result", "estimate_energy_fit_id")
    op.drop_column("result", "estimate_fit_id")
