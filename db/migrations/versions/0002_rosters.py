"""Rosters as departments use them: rotations, overrides, leave, trades, audit; the notice outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _interval(table: str) -> list:
    return [
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("starts_at < ends_at", name=f"ck_{table}_starts_before_ends"),
    ]


def upgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("tz", sa.String(64), server_default="Asia/Shanghai", nullable=False))
        batch.add_column(sa.Column("requires_approval", sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
        batch.add_column(sa.Column("department_head", sa.Integer(), nullable=True))
    op.create_table(
        "rotations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("members", sa.Text(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("until_date", sa.Date(), nullable=True),
        sa.Column("handoff_times", sa.String(128), nullable=False),
        sa.Column("every_days", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("every_days >= 1", name="ck_rotations_every_days_positive"),
        sa.ForeignKeyConstraint(["team"], ["teams.code"], name="fk_rotations_team_teams"),
        sa.PrimaryKeyConstraint("id", name="pk_rotations"),
    )
    op.create_table(
        "trades",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("team", sa.String(32), nullable=False),
        sa.Column("requester", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("counterpart", sa.Integer(), nullable=True),
        sa.Column("counter_role", sa.String(32), nullable=True),
        sa.Column("counter_starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counter_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("taker", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(512), nullable=False),
        sa.ForeignKeyConstraint(["team"], ["teams.code"], name="fk_trades_team_teams"),
        sa.ForeignKeyConstraint(["requester"], ["surgeons.id"], name="fk_trades_requester_surgeons"),
        sa.ForeignKeyConstraint(["counterpart"], ["surgeons.id"], name="fk_trades_counterpart_surgeons"),
        sa.ForeignKeyConstraint(["taker"], ["surgeons.id"], name="fk_trades_taker_surgeons"),
        sa.ForeignKeyConstraint(["decided_by"], ["surgeons.id"], name="fk_trades_decided_by_surgeons"),
        sa.PrimaryKeyConstraint("id", name="pk_trades"),
    )
    op.create_index("ix_trades_status", "trades", ["status"])
    op.create_table(
        "overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=False),
        *_interval("overrides"),
        sa.Column("replaces", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(512), nullable=False),
        sa.Column("trade_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team"], ["teams.code"], name="fk_overrides_team_teams"),
        sa.ForeignKeyConstraint(["surgeon_id"], ["surgeons.id"], name="fk_overrides_surgeon_id_surgeons"),
        sa.ForeignKeyConstraint(["replaces"], ["surgeons.id"], name="fk_overrides_replaces_surgeons"),
        sa.ForeignKeyConstraint(["trade_id"], ["trades.id"], name="fk_overrides_trade_id_trades"),
        sa.PrimaryKeyConstraint("id", name="pk_overrides"),
    )
    op.create_index("ix_overrides_team_starts_at", "overrides", ["team", "starts_at"])
    op.create_table(
        "leave",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=False),
        *_interval("leave"),
        sa.Column("note", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["surgeon_id"], ["surgeons.id"], name="fk_leave_surgeon_id_surgeons"),
        sa.PrimaryKeyConstraint("id", name="pk_leave"),
    )
    op.create_index("ix_leave_surgeon_id_starts_at", "leave", ["surgeon_id", "starts_at"])
    op.create_table(
        "roster_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_roster_audit"),
    )
    op.create_index("ix_roster_audit_at", "roster_audit", ["at"])
    op.create_index("ix_roster_audit_subject_subject_id", "roster_audit", ["subject", "subject_id"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("team", sa.String(32), nullable=True),
        sa.Column("surgeon_id", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text_zh", sa.Text(), nullable=False),
        sa.Column("text_en", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notices"),
        sa.UniqueConstraint("key", name="uq_notices_key"),
    )
    op.create_index("ix_notices_sent_at_next_attempt_at", "notices", ["sent_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("notices")
    op.drop_table("roster_audit")
    op.drop_table("leave")
    op.drop_table("overrides")
    op.drop_table("trades")
    op.drop_table("rotations")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("department_head")
        batch.drop_column("requires_approval")
        batch.drop_column("tz")
