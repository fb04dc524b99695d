"""Monitoring: live feature records of served requests, clinician feedback, drift runs.

Revision ID: 0006_monitoring
Revises: 0005_compliance
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_monitoring"
down_revision = "0005_compliance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitoring_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("embedding", sa.JSON, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("predicted_label", sa.String(64), nullable=False),
        sa.Column("input_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_monitoring_records_model_time", "monitoring_records", ["model_name", "created_at"])
    op.create_table(
        "monitoring_feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False, index=True),
        sa.Column("model_name", sa.String(128), nullable=False, index=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("agree", sa.Boolean, nullable=False),
        sa.Column("predicted_label", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("comment_sealed", sa.LargeBinary, nullable=True),
        sa.Column("instance_sha256", sa.String(64), nullable=True, index=True),
        sa.Column("input_status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "reviewer", name="uq_monitoring_feedback_request_reviewer"),
    )
    op.create_table(
        "monitoring_drift_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False, index=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_live", sa.Integer, nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitoring_drift_runs")
    op.drop_table("monitoring_feedback")
    op.drop_index("ix_monitoring_records_model_time", table_name="monitoring_records")
    op.drop_table("monitoring_records")
