"""Imaging catalog: instances, quarantine, lineage, pseudonyms.

Revision ID: 0001_imaging
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_imaging"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("input_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False, index=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("store_key", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("input_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("reason", sa.String(64), nullable=False, index=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("output_sha256", sa.String(64), nullable=True, index=True),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("software", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pseudonyms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pseudonym", sa.String(128), nullable=False),
        sa.Column("lookup", sa.String(64), nullable=False),
        sa.Column("sealed_original", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "lookup", name="uq_pseudonym_lookup"),
    )
    op.create_index("ix_pseudonym_value", "pseudonyms", ["kind", "pseudonym"])


def downgrade() -> None:
    op.drop_table("pseudonyms")
    op.drop_table("lineage")
    op.drop_table("quarantine")
    op.drop_table("instances")
