"""Compliance: patient erasures and dataset-version supersessions.

Revision ID: 0005_compliance
Revises: 0004_gateway
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_compliance"
down_revision = "0004_gateway"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=False),
        sa.Column("reason_sha256", sa.String(64), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_supersessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.String(64), nullable=False, index=True),
        sa.Column("successor_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("erasure_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_supersessions")
    op.drop_table("erasures")
