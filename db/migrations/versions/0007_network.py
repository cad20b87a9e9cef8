"""The network around the hotline: hospital contacts, referrals, callback tasks,
major incidents and the block list.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
CALLBACK_COLUMNS = (
    ("number", sa.String(32)),
    ("team", sa.String(32)),
    ("owner_surgeon_id", sa.Integer()),
    ("placed_at", TS),
    ("placed_by", sa.String(128)),
    ("callback_case_id", sa.String(64)),
    ("closed_at", TS),
    ("closed_by", sa.String(128)),
    ("note", sa.Text()),
)


def upgrade() -> None:
    op.create_table(
        "hospital_contacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(64), server_default="", nullable=False),
        sa.Column("phone", sa.String(32), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["hospital_id"], ["partner_hospitals.id"],
                                name="fk_hospital_contacts_hospital_id_partner_hospitals",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_hospital_contacts"),
    )
    op.create_index("ix_hospital_contacts_hospital_id", "hospital_contacts", ["hospital_id"])

    # Plain columns only (no FK): SQLite adds them without a table copy.
    op.add_column("cases", sa.Column("linked_case_id", sa.String(64), nullable=True))
    op.create_index("ix_cases_linked_case_id", "cases", ["linked_case_id"])
    for name, type_ in CALLBACK_COLUMNS:
        op.add_column("callbacks", sa.Column(name, type_, nullable=True))
    op.add_column("callbacks", sa.Column("attempts", sa.Integer(), server_default="0",
                                         nullable=False))
    op.create_index("ix_callbacks_status_due_at", "callbacks", ["status", "due_at"])

    op.create_table(
        "referrals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("team", sa.String(32), nullable=True),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("patient_age", sa.Integer(), nullable=True),
        sa.Column("patient_sex", sa.String(8), nullable=True),
        sa.Column("injury", sa.Text(), server_default="", nullable=False),
        sa.Column("injured_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.case_id"], name="fk_referrals_case_id_cases",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["hospital_id"], ["partner_hospitals.id"],
                                name="fk_referrals_hospital_id_partner_hospitals"),
        sa.PrimaryKeyConstraint("id", name="pk_referrals"),
        sa.UniqueConstraint("case_id", name="uq_referrals_case_id"),
    )
    op.create_index("ix_referrals_status_updated_at", "referrals", ["status", "updated_at"])
    op.create_table(
        "referral_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"],
                                name="fk_referral_events_referral_id_referrals", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_referral_events"),
    )
    op.create_index("ix_referral_events_referral_id_at", "referral_events", ["referral_id", "at"])

    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team", sa.String(32), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("started_by", sa.String(128), nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_by", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_ended_at", "incidents", ["ended_at"])

    op.create_table(
        "blocked_numbers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("removed_at", TS, nullable=True),
        sa.Column("removed_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_blocked_numbers"),
    )
    op.create_index("ix_blocked_numbers_number_removed_at", "blocked_numbers",
                    ["number", "removed_at"])


def downgrade() -> None:
    op.drop_table("blocked_numbers")
    op.drop_table("incidents")
    op.drop_table("referral_events")
    op.drop_table("referrals")
    op.drop_index("ix_callbacks_status_due_at", table_name="callbacks")
    with op.batch_alter_table("callbacks") as batch:
        for name, _ in CALLBACK_COLUMNS:
            batch.drop_column(name)
        batch.drop_column("attempts")
    op.drop_index("ix_cases_linked_case_id", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("linked_case_id")
    op.drop_table("hospital_contacts")
