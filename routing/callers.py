"""Caller classes: who is calling, read from a caller-ID that the caller controls.

Everything here treats the raw caller-ID as hostile: it may hold dialplan or SQL
metacharacters, CR/LF, NUL, look-alike Unicode digits, or a kilobyte of junk.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Mapping

RAW_SAFE_MAX = 64  # characters of `Caller.raw_safe`, the marker included
RAW_KEEP = 1024  # characters of the raw caller-ID kept on `Caller.raw`
TRUNCATED = "…"

# Values that SIP/ISDN/Asterisk use for "no number": anonymous, not invalid.
ANONYMOUS_IDS = frozenset(
    {"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld"}
)

# re.ASCII and an explicit class: `\d` would accept '１' or '٣', which a trunk
# cannot dial and a supervisor cannot tell from '1' or '3'.
_DIGITS = re.compile(r"[0-9]{3,20}", re.ASCII)
_MOBILE = re.compile(r"1[0-9]{10}", re.ASCII)
_SEPARATORS = str.maketrans("", "", " -")

_NAMED_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t", "\x00": "\\x00"}


class CallerClass(str, enum.Enum):
    PARTNER = "partner"  # a registered number of a partner hospital: the fast lane
    PUBLIC = "public"
    ANONYMOUS = "anonymous"  # no caller-ID presented
    INVALID = "invalid"  # something was presented, but it is not a phone number


@dataclass(frozen=True)
class Caller:
    """The caller as classified; `raw_safe` is the only form to display or log."""

    number: str | None  # normalised national digits, or "00"+digits abroad; None if none
    caller_class: CallerClass
    hospital_id: int | None
    raw_safe: str
    # The caller-ID as received, cut to RAW_KEEP characters. Never log or render
    # it: it is kept for the case record only. Out of repr() for that reason.
    raw: str | None = field(default=None, repr=False)


def classify(raw: str | None, partner_numbers: Mapping[str, int]) -> Caller:
    """Classify a raw caller-ID. Never raises.

    `partner_numbers` maps normalised numbers (see `normalise_number`) to
    partner hospital ids.
    """
    if raw is None:
        return Caller(None, CallerClass.ANONYMOUS, None, "", None)
    if not isinstance(raw, str):
        return Caller(None, CallerClass.INVALID, None, "<not text>", None)
    kept = raw[:RAW_KEEP]
    shown = safe_text(raw)
    if raw.strip().lower() in ANONYMOUS_IDS:
        return Caller(None, CallerClass.ANONYMOUS, None, shown, kept)
    number = normalise_number(raw)
    if number is None:
        return Caller(None, CallerClass.INVALID, None, shown, kept)
    hospital_id = partner_numbers.get(number)
    if hospital_id is not None:
        return Caller(number, CallerClass.PARTNER, hospital_id, shown, kept)
    return Caller(number, CallerClass.PUBLIC, None, shown, kept)


def normalise_number(raw: str) -> str | None:
    """Digits in Chinese national form, or None if `raw` is not a phone number.

    Spaces and dashes are dropped, then one leading '+'; what is left must be
    3..20 ASCII digits. +86 / 0086: mobiles (1 + 10 digits) stay as they are,
    landlines get the trunk prefix 0 ('+86 431 …' -> '0431…'). Other countries
    become '00' + digits, the form a Chinese trunk dials. '86' + a mobile
    (13 digits, as some carriers present it) is a mobile too: no national
    number is 13 digits starting with 86. No country code starts with 0, so
    '+0…', '000…' and '+86 00…' are not numbers. Idempotent on its result.
    """
    compact = raw.translate(_SEPARATORS)
    plus = compact.startswith("+")
    if plus:
        compact = compact[1:]
    if not _DIGITS.fullmatch(compact):
        return None
    if plus:
        international: str | None = compact
    elif compact.startswith("00"):
        international = compact[2:]
    else:
        international = None
    if international is None:
        if len(compact) == 13 and compact.startswith("86") and _MOBILE.fullmatch(compact[2:]):
            return compact[2:]
        return compact
    if not international or international.startswith("0"):
        return None  # no country code starts with 0: "+0…", "000…" are not numbers
    if len(international) > 15:
        return None  # E.164 numbers have at most 15 digits
    if not international.startswith("86"):
        return "00" + international
    national = international[2:]
    if national.startswith("00"):
        return None
    if not _MOBILE.fullmatch(national) and not national.startswith("0"):
        national = "0" + national
    return national if _DIGITS.fullmatch(national) else None


def safe_text(raw: str, limit: int = RAW_SAFE_MAX) -> str:
    """A printable, escaped rendering of `raw`, at most `limit` characters.

    Printable ASCII and CJK ideographs stay; everything else (CR, LF, NUL,
    look-alike digits, bidi controls, the marker '…' itself) becomes a Python
    style escape, and the backslash is doubled, so the rendering is unambiguous.
    A cut rendering ends with '…' and never splits an escape. Reads at most
    `limit` characters of `raw`, however long it is.
    """
    pieces: list[str] = []
    size = 0
    for char in raw:
        piece = _escape(char)
        if size + len(piece) > limit:
            while size > limit - len(TRUNCATED):
                size -= len(pieces.pop())
            pieces.append(TRUNCATED)
            break
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def mask_number(text: str | None) -> str:
    """A phone number (or a raw_safe caller-ID) with its middle digits hidden.

    Of eleven or more digits (a mobile, a landline with its area code) the
    first three and last four stay; of eight to ten, the last four; of fewer,
    the last two. The rest become '*'; other characters stay as they are (a
    raw_safe rendering is already escaped). For lists, logs and audit rows that
    must not hold whole numbers (issue 9, PIPL's minimisation).

    >>> mask_number("13912345678"), mask_number("043188888888"), mask_number("120")
    ('139****5678', '043*****8888', '*20')
    >>> mask_number("88888888"), mask_number("1234567")
    ('****8888', '*****67')
    >>> mask_number("+86 139-1234-5678"), mask_number(""), mask_number(None)
    ('+86 1**-****-5678', '', '')
    """
    if not text:
        return ""
    positions = [i for i, char in enumerate(text) if "0" <= char <= "9"]
    if len(positions) >= 11:
        keep = set(positions[:3]) | set(positions[-4:])
    elif len(positions) >= 8:
        keep = set(positions[-4:])
    else:
        keep = set(positions[-2:])
    hidden = set(positions) - keep
    return "".join("*" if i in hidden else char for i, char in enumerate(text))


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0x20 <= code <= 0x7E or 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
