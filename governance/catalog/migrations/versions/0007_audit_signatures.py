"""Audit entries carry the audit writer's Ed25519 signature (128 hex characters) in ``mac``.

Revision ID: 0007_audit_signatures
Revises: 0006_monitoring
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_audit_signatures"
down_revision = "0006_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite does not enforce VARCHAR lengths; recreating the table would buy nothing
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("mac", type_=sa.String(160), existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("mac", type_=sa.String(64), existing_type=sa.String(160), existing_nullable=False)
