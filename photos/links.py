"""Upload links: a short-lived capability to send photos into one case, and nothing else.

The link is `/u/<token>`: the token is 144 random bits (24 URL-safe characters,
short enough for an SMS) and is shown once, when the link is made. The table
keeps only its SHA-256, like the API tokens (db/tokens.py): 144 random bits
need no slow hash. A link opens one case, for `DEFAULT_TTL`, for at most
`max_uploads` photos, and can be revoked.

Surprising: every refusal (`LinkRefusal`) is told to the caller the same way
(one "link not valid" page): an expired, revoked, used-up, foreign or unknown
token must not tell a guesser which it was. The reasons are for the log and
the tests.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

TOKEN_BYTES = 18  # 144 bits; the brief asks for at least 128
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{24}", re.ASCII)
DEFAULT_TTL = timedelta(hours=2)
MAX_TTL = timedelta(hours=24)
DEFAULT_MAX_UPLOADS = 20
MAX_MAX_UPLOADS = 100


class LinkRefusal(str, enum.Enum):
    """Why a link may not take a photo now (never shown to the caller as such)."""

    UNKNOWN = "unknown"  # no such token
    FOREIGN = "foreign"  # the token is another case's
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used_up"  # max_uploads reached (a replayed link)


class LinkError(ValueError):
    """A link cannot be made as asked (the message says why)."""


@dataclass(frozen=True)
class UploadLink:
    """A link as the table keeps it; the token itself is never kept."""

    id: int
    case_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    max_uploads: int
    uploads: int
    revoked_at: datetime | None
    created_by: str

    @property
    def left(self) -> int:
        return max(0, self.max_uploads - self.uploads)


def new_token() -> str:
    """A fresh token (URL-safe base64 of 18 random bytes: exactly 24 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(text: str) -> bool:
    """Whether `text` could be one of our tokens: anything else is refused unhashed."""
    return bool(TOKEN_RE.fullmatch(text))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def same_hash(link: UploadLink, token: str) -> bool:
    """Compare again in constant time after the indexed lookup by hash."""
    return hmac.compare_digest(link.token_hash, token_hash(token))


def link_terms(now: datetime, ttl: timedelta = DEFAULT_TTL,
               max_uploads: int = DEFAULT_MAX_UPLOADS) -> tuple[datetime, int]:
    """(expires_at, max_uploads) for a link made at `now`; nonsense is a LinkError."""
    if now.tzinfo is None:
        raise LinkError("a link's time must be timezone-aware")
    if not timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise LinkError(f"a link lives between 1 minute and {MAX_TTL}")
    if isinstance(max_uploads, bool) or not 1 <= max_uploads <= MAX_MAX_UPLOADS:
        raise LinkError(f"a link takes 1 to {MAX_MAX_UPLOADS} photos")
    return now + ttl, max_uploads


def may_upload(link: UploadLink | None, now: datetime, count: int = 1,
               case_id: str | None = None) -> LinkRefusal | None:
    """None if `link` may take `count` more photos at `now` (for `case_id`, when named),
    else why not. Revoked wins over expired, expired over used up: the log names
    the first thing that closed the link."""
    if link is None:
        return LinkRefusal.UNKNOWN
    if case_id is not None and case_id != link.case_id:
        return LinkRefusal.FOREIGN
    if link.revoked_at is not None and link.revoked_at <= now:
        return LinkRefusal.REVOKED
    if now >= link.expires_at:
        return LinkRefusal.EXPIRED
    if link.uploads + max(count, 1) > link.max_uploads:
        return LinkRefusal.USED_UP
    return None
