"""An index that lets the figures read a time range's dispositions alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_case_notes_at_case_id_disposition", "case_notes",
                    ["at", "case_id", "disposition"])


def downgrade() -> None:
    op.drop_index("ix_case_notes_at_case_id_disposition", table_name="case_notes")
