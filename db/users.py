"""Console users and the console's audit log.

Passwords are hashed with werkzeug's `generate_password_hash` (scrypt, salted):
a well-kept implementation, not ours. Signing in as an unknown user still
checks a hash, so the answer takes as long as for a known one.
"""
from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import AuditRow, ConsoleSessionRow, SurgeonRow, UserRow

UTC = timezone.utc
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
_DUMMY_HASH = generate_password_hash("not a password of anyone's")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserRole(str, enum.Enum):
    ADMIN = "admin"  # everything, the audit log, users
    SUPERVISOR = "supervisor"  # every call, case, recording, roster and figure
    DEPARTMENT_HEAD = "department_head"  # like a supervisor; approves swaps as their surgeon
    SURGEON = "surgeon"  # the cases they took part in; their own shifts, swaps, notes

    @property
    def sees_all_cases(self) -> bool:
        return self is not UserRole.SURGEON

    @property
    def sees_full_numbers(self) -> bool:
        """Whether lists show callers' whole numbers: the duty desk acts on them;
        department heads and surgeons see them masked (139****5678) in lists and
        whole only on a case page they may open (docs/privacy.md)."""
        return self in (UserRole.ADMIN, UserRole.SUPERVISOR)


class UserError(ValueError):
    """A user cannot be created or changed as asked (the message says why)."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: UserRole
    surgeon_id: int | None
    display_name: str
    lang: str
    disabled: bool

    @property
    def actor(self) -> str:
        return f"user:{self.username}"


def _user(row: Any) -> User:
    return User(row.id, row.username, UserRole(row.role), row.surgeon_id, row.display_name,
                row.lang, row.disabled_at is not None)


class UserStore:
    """`hash_method`: werkzeug's name; scrypt by default. Checking reads the method
    from the stored hash, so a store made with another method still checks all."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow,
                 hash_method: str = "scrypt") -> None:
        self._engine = engine
        self._clock = clock
        self._method = hash_method

    def create(self, username: str, password: str, role: UserRole | str, *,
               surgeon_id: int | None = None, display_name: str = "", lang: str = "zh") -> User:
        role = UserRole(role)
        if not USERNAME_RE.fullmatch(username):
            raise UserError("username: letters, digits, '.', '_' or '-', at most 64")
        _check_password(password)
        if role in (UserRole.SURGEON, UserRole.DEPARTMENT_HEAD) and surgeon_id is None:
            raise UserError(f"a {role.value} account must name its surgeon (--surgeon ID)")
        if lang not in ("zh", "en"):
            raise UserError("lang: zh or en")
        with self._engine.begin() as conn:
            if surgeon_id is not None and conn.execute(
                    select(SurgeonRow.id).where(SurgeonRow.id == surgeon_id)).first() is None:
                raise UserError(f"no surgeon {surgeon_id}")
            try:
                new_id = conn.execute(insert(UserRow).values(
                    username=username, password_hash=generate_password_hash(password, self._method),
                    role=role.value, surgeon_id=surgeon_id, display_name=display_name[:64], lang=lang,
                    created_at=self._clock()).returning(UserRow.id)).scalar_one()
            except IntegrityError:
                raise UserError(f"username {username!r} is taken") from None
        return User(new_id, username, role, surgeon_id, display_name[:64], lang, False)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user, if the password is theirs and the account is enabled; else None."""
        if not USERNAME_RE.fullmatch(username or "") or not 0 < len(password or "") <= MAX_PASSWORD:
            check_password_hash(_DUMMY_HASH, "x")  # the same time as a real check
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(UserRow).where(UserRow.username == username)).first()
        if row is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        if not check_password_hash(row.password_hash, password) or row.disabled_at is not None:
            return None
        return _user(row)

    def get(self, user_id: int) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(UserRow).where(UserRow.id == user_id)).first()
        return _user(row) if row else None

    def by_username(self, username: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(UserRow).where(UserRow.username == username)).first()
        return _user(row) if row else None

    def all(self) -> list[User]:
        with self._engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(UserRow).order_by(UserRow.username))]

    def set_password(self, username: str, password: str) -> int:
        """Change the password and end every session of the account (whoever held the
        old one is signed out at once); returns how many sessions were ended."""
        _check_password(password)
        with self._engine.begin() as conn:
            done = conn.execute(
                update(UserRow).where(UserRow.username == username)
                .values(password_hash=generate_password_hash(password, self._method))
                .execution_options(preserve_rowcount=True))
            if done.rowcount != 1:
                raise UserError(f"no user {username!r}")
            return self._end_sessions_of(conn, username)

    def set_role(self, username: str, role: UserRole | str, *,
                 surgeon_id: int | None = None) -> int:
        """Give the account another role (and surgeon) and end every session of it:
        a page opened under the old role must not stay open. Returns the sessions ended."""
        role = UserRole(role)
        with self._engine.begin() as conn:
            row = conn.execute(select(UserRow).where(UserRow.username == username)).first()
            if row is None:
                raise UserError(f"no user {username!r}")
            surgeon = surgeon_id if surgeon_id is not None else row.surgeon_id
            if role in (UserRole.SURGEON, UserRole.DEPARTMENT_HEAD) and surgeon is None:
                raise UserError(f"a {role.value} account must name its surgeon (--surgeon ID)")
            if surgeon is not None and conn.execute(
                    select(SurgeonRow.id).where(SurgeonRow.id == surgeon)).first() is None:
                raise UserError(f"no surgeon {surgeon}")
            conn.execute(update(UserRow).where(UserRow.id == row.id).values(
                role=role.value, surgeon_id=surgeon))
            return self._end_sessions_of(conn, username)

    def end_sessions(self, username: str) -> int:
        """End every live session of the account (the cookies die on their next request)."""
        with self._engine.begin() as conn:
            return self._end_sessions_of(conn, username)

    def _end_sessions_of(self, conn: Connection, username: str) -> int:
        # In the caller's transaction: the change and the sign-out land together.
        user_id = select(UserRow.id).where(UserRow.username == username).scalar_subquery()
        done = conn.execute(update(ConsoleSessionRow).where(
            ConsoleSessionRow.user_id == user_id, ConsoleSessionRow.revoked_at.is_(None))
            .values(revoked_at=self._clock()).execution_options(preserve_rowcount=True))
        return done.rowcount

    def start_session(self, user_id: int, ip: str = "") -> str:
        """A new session id for the cookie; only its SHA-256 is stored."""
        sid = secrets.token_urlsafe(32)
        with self._engine.begin() as conn:
            conn.execute(insert(ConsoleSessionRow).values(
                sid=_sid_hash(sid), user_id=user_id, created_at=self._clock(), ip=ip[:64]))
        return sid

    def session_user(self, sid: str, max_age: timedelta) -> int | None:
        """The user of a live session: known, not revoked, not older than `max_age`."""
        if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(ConsoleSessionRow).where(
                ConsoleSessionRow.sid == _sid_hash(sid))).first()
        if row is None or row.revoked_at is not None or row.created_at < self._clock() - max_age:
            return None
        return row.user_id

    def end_session(self, sid: str) -> None:
        if not isinstance(sid, str):
            return
        with self._engine.begin() as conn:
            conn.execute(update(ConsoleSessionRow).where(
                ConsoleSessionRow.sid == _sid_hash(sid), ConsoleSessionRow.revoked_at.is_(None))
                .values(revoked_at=self._clock()))

    def set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (or enable) the account. Disabling ends every session of it, so
        enabling it again later does not bring an old cookie back to life; returns
        the sessions ended."""
        with self._engine.begin() as conn:
            done = conn.execute(update(UserRow).where(UserRow.username == username).values(
                disabled_at=self._clock() if disabled else None).execution_options(preserve_rowcount=True))
            if done.rowcount != 1:
                raise UserError(f"no user {username!r}")
            return self._end_sessions_of(conn, username) if disabled else 0


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    subject_id: str
    ip: str
    detail: Mapping[str, Any] | None


class AuditLog:
    """Append-only. What must not happen unaudited (a recording played, a list
    exported) records first and is served only if that worked."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def record(self, actor: str, action: str, subject: str = "", subject_id: str = "", *,
               ip: str = "", detail: Mapping[str, Any] | None = None) -> None:
        with self._engine.begin() as conn:
            audit_row(conn, self._clock(), actor, action, subject, subject_id, ip=ip,
                      detail=detail)

    def entries(self, *, action: str | None = None, actor: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: int = 100, offset: int = 0) -> tuple[list[AuditEntry], int]:
        """Newest first, and how many match in all."""
        query = select(AuditRow)
        if action:
            query = query.where(AuditRow.action == action)
        if actor:
            query = query.where(AuditRow.actor == actor)
        if since:
            query = query.where(AuditRow.at >= since)
        if until:
            query = query.where(AuditRow.at < until)
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(query.order_by(AuditRow.id.desc()).limit(limit).offset(offset))
            return [AuditEntry(r.id, r.at, r.actor, r.action, r.subject, r.subject_id, r.ip,
                               json.loads(r.detail) if r.detail else None) for r in rows], total


def audit_row(conn: Connection, at: datetime, actor: str, action: str, subject: str = "",
              subject_id: object = "", detail: Mapping[str, Any] | None = None, *,
              ip: str = "") -> None:
    """Write one audit_log row in the caller's transaction, so a change and its
    audit entry land together or not at all. Values are cut to their columns;
    a NUL (which PostgreSQL cannot store in text) becomes U+FFFD, so hostile
    input can never make its own audit entry fail."""
    def text(value: object, limit: int) -> str:
        return str(value).replace("\x00", "\ufffd")[:limit]

    conn.execute(insert(AuditRow).values(
        at=at, actor=text(actor, 128), action=text(action, 48), subject=text(subject, 32),
        subject_id=text(subject_id, 64), ip=text(ip, 64),
        detail=json.dumps(detail, ensure_ascii=False, default=str) if detail else None))
