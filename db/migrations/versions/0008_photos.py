"""Wound photos (issue 11): upload links and the photos of a case.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upload_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("max_uploads", sa.Integer(), nullable=False),
        sa.Column("uploads", sa.Integer(), server_default="0", nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.case_id"],
                                name="fk_upload_links_case_id_cases", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_upload_links"),
        sa.UniqueConstraint("token_hash", name="uq_upload_links_token_hash"),
    )
    op.create_index("ix_upload_links_case_id", "upload_links", ["case_id"])
    op.create_table(
        "case_photos",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("thumb_path", sa.String(255), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.case_id"],
                                name="fk_case_photos_case_id_cases", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["link_id"], ["upload_links.id"],
                                name="fk_case_photos_link_id_upload_links", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_case_photos"),
    )
    op.create_index("ix_case_photos_case_id_at", "case_photos", ["case_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_case_photos_case_id_at", table_name="case_photos")
    op.drop_table("case_photos")
    op.drop_index("ix_upload_links_case_id", table_name="upload_links")
    op.drop_table("upload_links")
