"""Gateway: the pull ledger (what was fetched from each PACS, keyed by an HMAC of the UID).

Revision ID: 0004_gateway
Revises: 0003_datasets
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_gateway"
down_revision = "0003_datasets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_pulled",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pacs", sa.String(64), nullable=False),
        sa.Column("lookup", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("pacs", "lookup", name="uq_gateway_pulled"),
    )


def downgrade() -> None:
    op.drop_table("gateway_pulled")
