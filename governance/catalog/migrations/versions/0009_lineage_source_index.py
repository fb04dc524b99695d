"""An index on lineage.source: resumed and distributed intake ask which of a batch's sources are
already recorded (``source IN (...)``, ``source LIKE 'prefix%'``); without it each question read
the whole lineage table.

Revision ID: 0009_lineage_source_index
Revises: 0008_ui_sessions
"""

from alembic import op

revision = "0009_lineage_source_index"
down_revision = "0008_ui_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_lineage_source", "lineage", ["source"])


def downgrade() -> None:
    op.drop_index("ix_lineage_source", table_name="lineage")
