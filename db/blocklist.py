"""The block list (黑名单) of abusive numbers: add, remove, what is blocked now, the history.

    blocks = BlockList(engine, clock)
    blocks.add("138 0000 0000", "repeated abusive calls", actor="user:sup")
    blocks.active()   # frozenset({"13800000000"}) -- normalised like caller-ID lookup
    blocks.version()  # moves on every add and remove

Numbers are stored normalised (`routing.callers.normalise_number`), the form
`classify` gives a caller's number, so `number in blocks.active()` is the
whole check on the call path. A number registered to a partner hospital is
refused (`NumberRegistered`): the network's own doctors are never blocked,
and the directory refuses to register a blocked number in turn (both under
`db.hospitals.network_lock`). Removing keeps the row (removed_at/by): the
history is the audit trail, and every add and remove also writes an
audit_log row (subject "blocklist") in the same transaction.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone

from sqlalchemy import Engine, insert, select, update

from db.hospitals import audit_version_column, network_lock
from db.models import BlockedNumberRow, HospitalPhoneRow, PartnerHospitalRow
from db.users import audit_row
from routing.callers import normalise_number, safe_text

SUBJECT = "blocklist"
MAX_REASON = 500


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class BlockListError(ValueError):
    """A block-list change refused; English `message`, Chinese `message_zh`."""

    def __init__(self, message: str, message_zh: str):
        super().__init__(message)
        self.message, self.message_zh = message, message_zh

    def __str__(self) -> str:
        return f"{self.message} / {self.message_zh}"


class NotANumber(BlockListError):
    pass


class BadReason(BlockListError):
    pass


class NumberRegistered(BlockListError):
    """The number belongs to a partner hospital: never blocked."""

    def __init__(self, number: str, hospital_id: int, hospital_name: str):
        shown = safe_text(hospital_name, 64)
        super().__init__(
            f"{number} is registered to partner hospital {shown} (#{hospital_id}) and cannot be "
            "blocked; unregister the number from the hospital first if it is really misused",
            f"号码 {number} 已登记为合作医院“{shown}”（编号 {hospital_id}）的号码，不能加入黑名单；"
            "如确属滥用，请先从该医院删除此号码")
        self.number, self.hospital_id, self.hospital_name = number, hospital_id, hospital_name


class AlreadyBlocked(BlockListError):
    pass


class NotBlocked(BlockListError):
    pass


@dataclass(frozen=True)
class BlockedNumber:
    id: int
    number: str
    reason: str
    added_at: datetime
    added_by: str
    removed_at: datetime | None = None
    removed_by: str | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None


def block_number(text: str) -> str:
    """The normalised number, or NotANumber."""
    number = normalise_number(text.strip()) if len(text) <= 40 else None
    if number is None:
        raise NotANumber(f"{safe_text(text, 40)!r} is not a phone number",
                         f"{safe_text(text, 40)!r} 不是电话号码")
    return number


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise BadReason("give a reason for blocking the number", "请填写加入黑名单的原因")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise BadReason(f"the reason must be one line of at most {MAX_REASON} printable characters",
                        f"原因应为一行、最多 {MAX_REASON} 个可显示字符")
    return reason


class BlockList:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def active(self) -> frozenset[str]:
        """The normalised numbers blocked now."""
        with self._engine.connect() as conn:
            return frozenset(conn.execute(select(BlockedNumberRow.number)
                                          .where(BlockedNumberRow.removed_at.is_(None))).scalars())

    def version(self) -> int:
        """Strictly increases on every add and remove; one cheap query."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(audit_version_column((SUBJECT,)))).scalar_one())

    def entries(self, *, include_removed: bool = False, limit: int = 500) -> list[BlockedNumber]:
        """Newest first; with `include_removed`, the history too."""
        query = select(BlockedNumberRow).order_by(BlockedNumberRow.id.desc()).limit(limit)
        if not include_removed:
            query = query.where(BlockedNumberRow.removed_at.is_(None))
        with self._engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def add(self, number: str, reason: str, actor: str, at: datetime | None = None) -> BlockedNumber:
        """Block a number. Raises NotANumber, BadReason, NumberRegistered, AlreadyBlocked."""
        normal = block_number(number)
        why = _reason(reason)
        when = at or self._clock()
        with self._engine.begin() as conn:
            network_lock(conn)
            owner = conn.execute(
                select(PartnerHospitalRow.id, PartnerHospitalRow.name)
                .join(HospitalPhoneRow, HospitalPhoneRow.hospital_id == PartnerHospitalRow.id)
                .where(HospitalPhoneRow.number == normal)).first()
            if owner is not None:
                raise NumberRegistered(normal, owner.id, owner.name)
            if conn.execute(select(BlockedNumberRow.id).where(
                    BlockedNumberRow.number == normal, BlockedNumberRow.removed_at.is_(None))).first():
                raise AlreadyBlocked(f"{normal} is on the block list already", f"号码 {normal} 已在黑名单中")
            new_id = conn.execute(insert(BlockedNumberRow).values(
                number=normal, reason=why, added_at=when, added_by=actor[:128])
                .returning(BlockedNumberRow.id)).scalar_one()
            audit_row(conn, when, actor, "block", SUBJECT, normal, {"reason": why})
        return BlockedNumber(new_id, normal, why, when, actor[:128])

    def remove(self, number: str, actor: str, at: datetime | None = None) -> BlockedNumber:
        """Unblock a number; its row stays as history. Raises NotANumber, NotBlocked."""
        normal = block_number(number)
        when = at or self._clock()
        with self._engine.begin() as conn:
            network_lock(conn)
            row = conn.execute(select(BlockedNumberRow).where(
                BlockedNumberRow.number == normal, BlockedNumberRow.removed_at.is_(None))).first()
            if row is None:
                raise NotBlocked(f"{normal} is not on the block list", f"号码 {normal} 不在黑名单中")
            conn.execute(update(BlockedNumberRow).where(BlockedNumberRow.id == row.id)
                         .values(removed_at=when, removed_by=actor[:128]))
            audit_row(conn, when, actor, "unblock", SUBJECT, normal, {"reason": row.reason})
            return BlockedNumber(row.id, normal, row.reason, row.added_at, row.added_by, when, actor[:128])


def _entry(row: Any) -> BlockedNumber:
    return BlockedNumber(row.id, row.number, row.reason, row.added_at, row.added_by,
                         row.removed_at, row.removed_by)
