"""Bearer tokens of the JSON API: created once, stored hashed, revocable.

A token is `hl_` + 43 URL-safe characters (32 random bytes) and is shown only
when it is created. The table keeps its SHA-256 (hex), never the token: a
token is 256 random bits, so a fast hash is enough -- there is nothing to
guess by brute force, unlike a password, and a slow hash (bcrypt, scrypt)
would only cost time on every request. Lookup is by the hash (an index), and
the hash found is compared again with `hmac.compare_digest`.

`last_used_at` is written at most once a minute per token, so a phone calendar
polling a feed does not turn every read into a write.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from db.models import ApiTokenRow, SurgeonRow

UTC = timezone.utc
PREFIX = "hl_"
TOKEN_BYTES = 32
# Anything longer is not one of ours: refused before it is hashed or looked up.
MAX_TOKEN_CHARS = 128
_TOKEN_RE = re.compile(r"hl_[A-Za-z0-9_-]{20,125}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenRole(str, enum.Enum):
    """What a token may do (console.tokens enforces it)."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"  # every roster read and write
    DEPARTMENT_HEAD = "department_head"  # bound to a surgeon: read; approve/decline trades as them
    SURGEON = "surgeon"  # bound to a surgeon: read; offer/swap/take/decline, own leave
    CALENDAR = "calendar"  # the .ics feeds only

    @property
    def sees_full_numbers(self) -> bool:
        """As for console users (db.users.UserRole.sees_full_numbers): lists are masked
        for department heads' and surgeons' tokens."""
        return self in (TokenRole.ADMIN, TokenRole.SUPERVISOR)

    @property
    def bound(self) -> bool:
        """Whether a token of this role acts as one surgeon (and must name them)."""
        return self in (TokenRole.DEPARTMENT_HEAD, TokenRole.SURGEON)


class TokenError(ValueError):
    """A token cannot be created or changed as asked (the message says why)."""


class TokenNotFound(TokenError, LookupError):
    pass


@dataclass(frozen=True)
class ApiToken:
    """A token as the table describes it; the token itself is never kept."""

    id: int
    name: str
    role: TokenRole
    surgeon_id: int | None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def actor(self) -> str:
        """Who acted, as the roster audit log shows it."""
        return f"api:{self.name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _token_of(row) -> ApiToken:
    return ApiToken(row.id, row.name, TokenRole(row.role), row.surgeon_id, row.created_at,
                    row.last_used_at, row.revoked_at)


class TokenStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def create(self, name: str, role: TokenRole | str,
               surgeon_id: int | None = None) -> tuple[ApiToken, str]:
        """A new token: (its record, the token itself -- show it once, it is not kept)."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise TokenError("a token name is 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        try:
            role = TokenRole(role)
        except ValueError:
            raise TokenError("role must be one of: "
                             + ", ".join(r.value for r in TokenRole)) from None
        if role.bound and surgeon_id is None:
            raise TokenError(f"a {role.value} token must name its surgeon (--surgeon ID)")
        if not role.bound and surgeon_id is not None:
            raise TokenError(f"a {role.value} token is not bound to a surgeon")
        token = new_token()
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                if surgeon_id is not None and conn.execute(
                        select(SurgeonRow.id).where(SurgeonRow.id == surgeon_id)).first() is None:
                    raise TokenError(f"no surgeon {surgeon_id}")
                if conn.execute(select(ApiTokenRow.id).where(ApiTokenRow.name == name)).first():
                    raise TokenError(f"a token named {name} exists already")
                new_id = conn.execute(insert(ApiTokenRow).values(
                    name=name, token_hash=hash_token(token), role=role.value,
                    surgeon_id=surgeon_id, created_at=now).returning(ApiTokenRow.id)).scalar_one()
        except IntegrityError:  # the same name, created at the same moment elsewhere
            raise TokenError(f"a token named {name} exists already") from None
        return ApiToken(new_id, name, role, surgeon_id, now), token

    def list(self) -> list[ApiToken]:
        with self._engine.connect() as conn:
            return [_token_of(row) for row in conn.execute(
                select(ApiTokenRow).order_by(ApiTokenRow.name))]

    def revoke(self, name: str) -> ApiToken:
        """Revoke the token named `name` (at once: the next request with it gets 401).

        Revoking a revoked token changes nothing and returns it as it was.
        """
        with self._engine.begin() as conn:
            row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.name == name)).first()
            if row is None:
                raise TokenNotFound(f"no token named {name}")
            if row.revoked_at is not None:
                return _token_of(row)
            now = self._clock()
            conn.execute(update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(revoked_at=now))
            return dataclasses.replace(_token_of(row), revoked_at=now)

    def authenticate(self, token: str) -> ApiToken | None:
        """The live token `token` is, or None (unknown, malformed or revoked)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
            return None
        digest = hash_token(token)
        with self._engine.connect() as conn:
            row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest)).first()
        # The database compared the hash already; comparing again in constant
        # time costs nothing and keeps timing out of the answer.
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
            return None
        found = _token_of(row)
        now = self._clock()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            with self._engine.begin() as conn:
                # Conditional: of several requests in the same minute, one writes.
                conn.execute(update(ApiTokenRow).where(
                    ApiTokenRow.id == row.id,
                    or_(ApiTokenRow.last_used_at.is_(None),
                        ApiTokenRow.last_used_at <= now - LAST_USED_RESOLUTION),
                ).values(last_used_at=now))
        return found
