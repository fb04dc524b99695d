"""Dataset versions: immutable manifests identified by their hash.

Revision ID: 0003_datasets
Revises: 0002_governance
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_datasets"
down_revision = "0002_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, index=True),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("patients", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("manifest_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_versions")
