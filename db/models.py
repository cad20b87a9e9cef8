"""Tables. Row classes end in `Row` so they never shadow the domain types.

Times are stored as UTC and always come back timezone-aware (see UTCDateTime).
Domain enums are stored as their string values; the database has no enum types,
so a new role or outcome needs no migration.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: Alembic batch mode on SQLite needs names to
# drop or alter a constraint, and migrations must name the same thing everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; loaded back aware in UTC.

    SQLite has no time zones: the value is stored as naive UTC text and gets
    its tzinfo back on load. A naive datetime is refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: store timezone-aware times only")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TeamRow(Base):
    __tablename__ = "teams"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    ring_s: Mapped[int] = mapped_column(Integer, default=25)
    repeats: Mapped[int] = mapped_column(Integer, default=1)
    tz: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai", server_default="Asia/Shanghai")
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # No foreign key: a team is written before its surgeons when a roster is seeded.
    department_head: Mapped[int | None] = mapped_column(Integer)


class SurgeonRow(Base):
    __tablename__ = "surgeons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    rank: Mapped[str] = mapped_column(String(16))


class ShiftRow(Base):
    __tablename__ = "shifts"
    __table_args__ = (
        # One surgeon holds a role in a team from a start once: seeding and
        # roster imports upsert on it.
        UniqueConstraint("team", "surgeon_id", "role", "starts_at"),
        CheckConstraint("starts_at < ends_at", name="starts_before_ends"),
        Index(None, "team", "starts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.code"))
    surgeon_id: Mapped[int] = mapped_column(ForeignKey("surgeons.id"))
    role: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RotationRow(Base):
    """A rotation (轮班); `members` and `handoff_times` are comma-separated lists.

    Rows are never updated in place by an import: ending a rotation sets
    `until`, so the past stays as it was.
    """

    __tablename__ = "rotations"
    __table_args__ = (CheckConstraint("every_days >= 1", name="every_days_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.code"))
    role: Mapped[str] = mapped_column(String(32))
    members: Mapped[str] = mapped_column(Text)  # "101,102,103" (ring turns, in order)
    start_date: Mapped[date] = mapped_column(Date)
    until_date: Mapped[date | None] = mapped_column(Date)
    handoff_times: Mapped[str] = mapped_column(String(128))  # "08:00" or "08:00,20:00"
    every_days: Mapped[int] = mapped_column(Integer, default=1)
    layer: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TradeRow(Base):
    """A swap or give-away (换班 / 顶班) and where it stands (oncall.roster_ops.Trade)."""

    __tablename__ = "trades"
    __table_args__ = (Index(None, "status"),)

    # The database numbers trades: a snapshot's proposal may collide with a
    # trade it did not load, or with one made at the same moment.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(ForeignKey("teams.code"))
    requester: Mapped[int] = mapped_column(ForeignKey("surgeons.id"))
    role: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    counterpart: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    counter_role: Mapped[str | None] = mapped_column(String(32))
    counter_starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    counter_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    taker: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(String(512), default="")


class OverrideRow(Base):
    """An override or cover (顶班 / 替班); `id` order is creation order, and a later one wins."""

    __tablename__ = "overrides"
    __table_args__ = (
        CheckConstraint("starts_at < ends_at", name="starts_before_ends"),
        Index(None, "team", "starts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.code"))
    role: Mapped[str] = mapped_column(String(32))
    surgeon_id: Mapped[int] = mapped_column(ForeignKey("surgeons.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replaces: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    note: Mapped[str] = mapped_column(String(512), default="")
    trade_id: Mapped[int | None] = mapped_column(ForeignKey("trades.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LeaveRow(Base):
    """A surgeon's leave (请假): never rung over [starts_at, ends_at)."""

    __tablename__ = "leave"
    __table_args__ = (
        CheckConstraint("starts_at < ends_at", name="starts_before_ends"),
        Index(None, "surgeon_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    surgeon_id: Mapped[int] = mapped_column(ForeignKey("surgeons.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RosterAuditRow(Base):
    """Who changed the roster, when, and what it was before and after (JSON)."""

    __tablename__ = "roster_audit"
    __table_args__ = (Index(None, "at"), Index(None, "subject", "subject_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))  # "surgeon:101", "cli:root", "api:<token name>"
    surgeon_id: Mapped[int | None] = mapped_column(Integer)  # the acting surgeon, if one
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(32))  # trade, override, leave, rotation, shifts
    subject_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)


class NoticeRow(Base):
    """The notice outbox: each notice once (unique key), sent with retries."""

    __tablename__ = "notices"
    __table_args__ = (Index(None, "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(32))
    surgeon_id: Mapped[int | None] = mapped_column(Integer)  # None: the duty desk
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    text_zh: Mapped[str] = mapped_column(Text)
    text_en: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(512))


class PartnerHospitalRow(Base):
    __tablename__ = "partner_hospitals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    level: Mapped[str] = mapped_column(String(32))
    city: Mapped[str] = mapped_column(String(64))


class HospitalPhoneRow(Base):
    __tablename__ = "hospital_phones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("partner_hospitals.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(32), unique=True)


class HospitalContactRow(Base):
    """A contact doctor of a partner hospital (联系医生)."""

    __tablename__ = "hospital_contacts"
    __table_args__ = (Index(None, "hospital_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("partner_hospitals.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(64), default="", server_default="")
    phone: Mapped[str] = mapped_column(String(32), default="", server_default="")


class CaseRow(Base):
    __tablename__ = "cases"
    # The console's call list filters by one of these and sorts by time.
    __table_args__ = (
        Index(None, "started_at"),
        Index(None, "team", "started_at"),
        Index(None, "outcome", "started_at"),
        Index(None, "caller_number", "started_at"),
        Index(None, "partner_hospital_id", "started_at"),
        Index(None, "connected_surgeon_id", "started_at"),
    )

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(64), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    caller_number: Mapped[str | None] = mapped_column(String(32))
    caller_class: Mapped[str] = mapped_column(String(16))
    caller_raw: Mapped[str | None] = mapped_column(Text)  # hostile: never render unescaped
    caller_raw_safe: Mapped[str] = mapped_column(String(64))
    partner_hospital_id: Mapped[int | None] = mapped_column(ForeignKey("partner_hospitals.id"))
    language: Mapped[str] = mapped_column(String(8))
    team: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_surgeon_id: Mapped[int | None] = mapped_column(Integer)
    connected_seq: Mapped[int | None] = mapped_column(Integer)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_by: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    recording_path: Mapped[str | None] = mapped_column(String(512))
    recording_s: Mapped[int | None] = mapped_column(Integer)
    voicemail_path: Mapped[str | None] = mapped_column(String(512))
    voicemail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A callback's own case names the case it calls back (no FK: history).
    linked_case_id: Mapped[str | None] = mapped_column(String(64), index=True)


class MenuEventRow(Base):
    __tablename__ = "case_menu_events"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.case_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    choice: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128))


class DialAttemptRow(Base):
    __tablename__ = "dial_attempts"
    # Which cases a surgeon took part in (the console's object-level access).
    __table_args__ = (Index(None, "surgeon_id", "case_id"),)

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.case_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8))
    surgeon_id: Mapped[int | None] = mapped_column(Integer)  # history: no FK to surgeons
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ring_s: Mapped[int | None] = mapped_column(Integer)
    answered: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str | None] = mapped_column(String(16))


class CallbackRow(Base):
    """A callback task (回拨任务): one per case that needs one."""

    __tablename__ = "callbacks"
    __table_args__ = (Index(None, "status", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.case_id", ondelete="CASCADE"), unique=True
    )
    reason: Mapped[str] = mapped_column(String(32))  # voicemail | abandoned | requested
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    number: Mapped[str | None] = mapped_column(String(32))  # normalised number to call
    team: Mapped[str | None] = mapped_column(String(32))
    owner_surgeon_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    placed_by: Mapped[str | None] = mapped_column(String(128))
    callback_case_id: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)


class ReferralRow(Base):
    """A case that became a referral (转诊) and the patient's transfer (转运)."""

    __tablename__ = "referrals"
    __table_args__ = (Index(None, "status", "updated_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.case_id", ondelete="CASCADE"), unique=True
    )
    hospital_id: Mapped[int | None] = mapped_column(ForeignKey("partner_hospitals.id"))
    status: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(32))
    surgeon_id: Mapped[int | None] = mapped_column(Integer)  # receiving surgeon; history: no FK
    patient_age: Mapped[int | None] = mapped_column(Integer)
    patient_sex: Mapped[str | None] = mapped_column(String(8))
    injury: Mapped[str] = mapped_column(Text, default="", server_default="")
    injured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ReferralEventRow(Base):
    """One status change of a referral: when, by whom, and a note."""

    __tablename__ = "referral_events"
    __table_args__ = (Index(None, "referral_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)


class IncidentRow(Base):
    """A stretch of major-incident mode (群死群伤模式), for one team or (team None) all."""

    __tablename__ = "incidents"
    __table_args__ = (Index(None, "ended_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_by: Mapped[str] = mapped_column(String(128))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="", server_default="")


class BlockedNumberRow(Base):
    """A number on the block list; removing it keeps the row (the audit trail)."""

    __tablename__ = "blocked_numbers"
    __table_args__ = (Index(None, "number", "removed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32))  # normalised (routing.callers)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(String(128))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_by: Mapped[str | None] = mapped_column(String(128))


class ApiTokenRow(Base):
    """A bearer token of the JSON API (console.tokens): only its SHA-256 is kept.

    `role` is a `db.tokens.TokenRole` value; `surgeon_id` binds a
    department_head or surgeon token to the surgeon it acts as.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256
    role: Mapped[str] = mapped_column(String(32))
    surgeon_id: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A person who signs in to the console (`db.users`); a surgeon's account names them."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))  # werkzeug scrypt
    role: Mapped[str] = mapped_column(String(32))  # db.users.UserRole
    surgeon_id: Mapped[int | None] = mapped_column(ForeignKey("surgeons.id"))
    display_name: Mapped[str] = mapped_column(String(64), default="")
    lang: Mapped[str] = mapped_column(String(8), default="zh", server_default="zh")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """The console's audit log: sign-ins, denied access, recording plays, notes, exports.

    Roster changes keep their own, richer log (`roster_audit`); the audit page
    shows both.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"), Index(None, "action", "at"), Index(None, "subject", "subject_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))  # "user:<name>", "api:<token>", "anonymous"
    action: Mapped[str] = mapped_column(String(48))  # sign_in, sign_in_failed, denied, play_recording ...
    subject: Mapped[str] = mapped_column(String(32), default="")
    subject_id: Mapped[str] = mapped_column(String(64), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str | None] = mapped_column(Text)  # JSON


class CaseNoteRow(Base):
    """A surgeon's note on a case, with the disposition it records (if any)."""

    __tablename__ = "case_notes"
    # (at, case_id, disposition): the figures read a range's dispositions from
    # this index alone (an index-only scan) instead of every note ever written.
    __table_args__ = (Index(None, "case_id", "at"), Index(None, "at", "case_id", "disposition"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    surgeon_id: Mapped[int | None] = mapped_column(Integer)
    # consultation / referral_accepted / transfer_arranged / advice_only; None: a plain note
    disposition: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")


class ConsoleSessionRow(Base):
    """A signed-in console session: the cookie names it, signing out revokes it here.

    A signed cookie alone cannot be taken back; this row can, so a copy of the
    cookie stops working at sign-out (or when the account is disabled).
    """

    __tablename__ = "console_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie's id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")


class UploadLinkRow(Base):
    """A link that lets a caller send photos into one case (photos.links); the token is kept hashed."""

    __tablename__ = "upload_links"
    __table_args__ = (Index(None, "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_uploads: Mapped[int] = mapped_column(Integer)
    uploads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))  # "user:<name>", "service"


class CasePhotoRow(Base):
    """A wound photo in a case: our re-encoded JPEG and thumbnail, sealed, under the recordings dir."""

    __tablename__ = "case_photos"
    __table_args__ = (Index(None, "case_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id", ondelete="CASCADE"))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("upload_links.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(String(255))  # relative to the recordings dir
    thumb_path: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(Integer)  # of the stored JPEG, before sealing
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))  # of the stored JPEG, before sealing
    sender: Mapped[str] = mapped_column(String(32))  # "caller" or "surgeon:<id>"
