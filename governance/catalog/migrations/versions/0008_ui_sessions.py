"""Server-side sessions of the reviewer UI (the cookie holds a random id, never a token).

Revision ID: 0008_ui_sessions
Revises: 0007_audit_signatures
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_ui_sessions"
down_revision = "0007_audit_signatures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_mac", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("authenticated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ui_sessions")
