"""Initial schema: roster, partner hospitals, cases, menu events, dial attempts, callbacks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name_zh", sa.String(128), nullable=False),
        sa.Column("name_en", sa.String(128), nullable=False),
        sa.Column("ring_s", sa.Integer(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_teams"),
    )
    op.create_table(
        "surgeons",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("rank", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_surgeons"),
    )
    op.create_table(
        "shifts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team", sa.String(32), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("starts_at < ends_at", name="ck_shifts_starts_before_ends"),
        sa.ForeignKeyConstraint(["surgeon_id"], ["surgeons.id"], name="fk_shifts_surgeon_id_surgeons"),
        sa.ForeignKeyConstraint(["team"], ["teams.code"], name="fk_shifts_team_teams"),
        sa.PrimaryKeyConstraint("id", name="pk_shifts"),
        sa.UniqueConstraint(
            "team", "surgeon_id", "role", "starts_at", name="uq_shifts_team_surgeon_id_role_starts_at"
        ),
    )
    op.create_index("ix_shifts_team_starts_at", "shifts", ["team", "starts_at"])
    op.create_table(
        "partner_hospitals",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("city", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_partner_hospitals"),
    )
    op.create_table(
        "hospital_phones",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["partner_hospitals.id"],
            name="fk_hospital_phones_hospital_id_partner_hospitals", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_hospital_phones"),
        sa.UniqueConstraint("number", name="uq_hospital_phones_number"),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("caller_number", sa.String(32), nullable=True),
        sa.Column("caller_class", sa.String(16), nullable=False),
        sa.Column("caller_raw", sa.Text(), nullable=True),
        sa.Column("caller_raw_safe", sa.String(64), nullable=False),
        sa.Column("partner_hospital_id", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("team", sa.String(32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connected_surgeon_id", sa.Integer(), nullable=True),
        sa.Column("connected_seq", sa.Integer(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hangup_by", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("recording_path", sa.String(512), nullable=True),
        sa.Column("recording_s", sa.Integer(), nullable=True),
        sa.Column("voicemail_path", sa.String(512), nullable=True),
        sa.Column("voicemail_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_hospital_id"], ["partner_hospitals.id"],
            name="fk_cases_partner_hospital_id_partner_hospitals",
        ),
        sa.PrimaryKeyConstraint("case_id", name="pk_cases"),
        sa.UniqueConstraint("linkedid", name="uq_cases_linkedid"),
    )
    op.create_index("ix_cases_started_at", "cases", ["started_at"])
    op.create_table(
        "case_menu_events",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name="fk_case_menu_events_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_case_menu_events"),
    )
    op.create_table(
        "dial_attempts",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ring_s", sa.Integer(), nullable=True),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name="fk_dial_attempts_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_dial_attempts"),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name="fk_callbacks_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
        sa.UniqueConstraint("case_id", name="uq_callbacks_case_id"),
    )


def downgrade() -> None:
    op.drop_table("callbacks")
    op.drop_table("dial_attempts")
    op.drop_table("case_menu_events")
    op.drop_index("ix_cases_started_at", table_name="cases")
    op.drop_table("cases")
    op.drop_table("hospital_phones")
    op.drop_table("partner_hospitals")
    op.drop_index("ix_shifts_team_starts_at", table_name="shifts")
    op.drop_table("shifts")
    op.drop_table("surgeons")
    op.drop_table("teams")
