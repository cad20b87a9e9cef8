"""The console: users, the audit log, case notes; indexes for the call list.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CASE_INDEXES = ("team", "outcome", "caller_number", "partner_hospital_id", "connected_surgeon_id")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("lang", sa.String(8), server_default="zh", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["surgeon_id"], ["surgeons.id"], name="fk_users_surgeon_id_surgeons"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_audit_log_subject_subject_id", "audit_log", ["subject", "subject_id"])
    op.create_table(
        "case_notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("disposition", sa.String(32), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.case_id"], name="fk_case_notes_case_id_cases",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_case_notes_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_case_notes"),
    )
    op.create_index("ix_case_notes_case_id_at", "case_notes", ["case_id", "at"])
    for column in CASE_INDEXES:
        op.create_index(f"ix_cases_{column}_started_at", "cases", [column, "started_at"])
    op.create_index("ix_dial_attempts_surgeon_id_case_id", "dial_attempts", ["surgeon_id", "case_id"])


def downgrade() -> None:
    op.drop_index("ix_dial_attempts_surgeon_id_case_id", table_name="dial_attempts")
    for column in CASE_INDEXES:
        op.drop_index(f"ix_cases_{column}_started_at", table_name="cases")
    op.drop_table("case_notes")
    op.drop_table("audit_log")
    op.drop_table("users")
