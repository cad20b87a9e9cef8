"""Delivering links by SMS and WeChat: who gets one, what it says, where it points. Pure.

Two links go out (docs/photos.md):

- the caller's **upload link** (`/u/<token>`), by SMS to the caller's mobile
  when a case opens (`case_open_plan`), or at a surgeon's request during the
  call (then also into the team's WeChat Work group, for the surgeon to pass
  on -- a partner hospital on a landline has no SMS);
- the surgeon's **phone view** (`/cases/<id>/phone`): not a capability (it
  needs a signed-in session), shown on the case page.

Surprising: the caller's number is hostile. It came from caller-ID (spoofable),
so only a Chinese mobile number (+861[3-9]...) gets an SMS: never a landline,
an international number (a costly, spoofable destination) or anything that
is not a phone number. Logs and audit rows only ever hold it masked.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from network.notifications import mobile_for_mention
from routing.callers import mask_number

# `photo_link_on_case_open` (hotline.config): which callers get a link when their case opens.
ON_OPEN_MOBILE = "mobile"
ON_OPEN_OFF = "off"
ON_OPEN_SETTINGS = (ON_OPEN_MOBILE, ON_OPEN_OFF)
# The case-open link is tried at most this often (a failed try revokes its link),
# this long apart at least, and only while the case is this young: a link that
# arrives after the call has ended is of little use.
CASE_OPEN_TRIES = 3
CASE_OPEN_RETRY = timedelta(minutes=1)
CASE_OPEN_WINDOW = timedelta(minutes=15)
# Who made a case-open link (upload_links.created_by): also how the job finds its tries.
CASE_OPEN_ACTOR = "service:case-open"
_PUBLIC_URL = re.compile(r"[A-Za-z0-9.:\-\[\]/_~%]*", re.ASCII)


class DeliveryError(ValueError):
    """A link cannot be delivered as configured (the message says why; never a number)."""


class Skip(str, enum.Enum):
    """Why a case gets no link when it opens (for the log)."""

    OFF = "off"
    NOT_MOBILE = "not_mobile"  # a landline, a partner hospital, no or a bad caller-ID
    BLOCKED = "blocked"  # a number on the block list: never text it
    ENDED = "ended"
    TOO_OLD = "too_old"
    SENT = "sent"  # a link went out already
    GAVE_UP = "gave_up"  # CASE_OPEN_TRIES failed
    NOT_YET = "not_yet"  # the last try failed less than CASE_OPEN_RETRY ago


@dataclass(frozen=True)
class OpenCase:
    """What the case-open job knows of a case (db.photos.PhotoStore.young_cases)."""

    case_id: str
    caller_number: str | None
    caller_class: str
    outcome: str
    team: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class Try:
    """An earlier case-open try: its link, and when it was revoked (None: it went out)."""

    link_id: int
    created_at: datetime
    revoked_at: datetime | None


def check_setting(value: str) -> str:
    if value not in ON_OPEN_SETTINGS:
        raise DeliveryError(f"photo_link_on_case_open: one of {', '.join(ON_OPEN_SETTINGS)}")
    return value


def caller_mobile(number: str | None) -> str | None:
    """The caller's number in E.164 if it is a Chinese mobile, else None.

    >>> caller_mobile("13912345678"), caller_mobile("043188888888"), caller_mobile("0044201234567")
    ('+8613912345678', None, None)
    >>> caller_mobile("139\\r\\n12345678"), caller_mobile(None)
    (None, None)
    """
    if not number or not number.isascii() or not number.isdigit():
        return None
    mobile = mobile_for_mention(number)
    return "+86" + mobile if mobile is not None else None


def masked(number: str | None) -> str:
    """The caller's number as logs and audit rows keep it (139****5678)."""
    return mask_number(number or "")


def public_base(url: str) -> str:
    """The console's public URL, checked: http(s), a host, no query or fragment; no trailing '/'.

    >>> public_base("https://hotline.example.org/"), public_base("http://127.0.0.1:22851")
    ('https://hotline.example.org', 'http://127.0.0.1:22851')
    """
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or not _PUBLIC_URL.fullmatch(text.split("://", 1)[1]):
        raise DeliveryError("console_public_url must be http(s)://host[:port][/path]")
    return text.rstrip("/")


def upload_url(base: str, token: str) -> str:
    return f"{public_base(base)}/u/{token}"


def phone_view_url(base: str, case_id: str) -> str:
    return f"{public_base(base)}/cases/{case_id}/phone"


def upload_link_text(url: str, until_local: str) -> tuple[str, str]:
    """(Chinese, English) of the message that carries an upload link.

    One URL, in the Chinese sentence; the English follows it (an SMS carries
    both within 268 characters for URLs up to about 90 characters).
    """
    zh = (f"【96608急诊热线】请点击链接上传伤情照片（无需注册，{until_local}前有效）：{url}")
    en = f"96608 hotline: send wound photos with the link above (valid until {until_local}, Beijing time)."
    return zh, en


def group_link_text(url: str, until_local: str, case_id: str, caller_masked: str) -> str:
    """The WeChat group's message: the link for a surgeon to pass on to the caller."""
    return (f"【96608伤情照片】病例 {case_id}（来电 {caller_masked}）的照片上传链接，"
            f"请转发给来电者，{until_local}前有效：{url}\n\n"
            f"96608 wound photos: the upload link of case {case_id} (caller {caller_masked}); "
            f"pass it on to the caller. Valid until {until_local} (Beijing time).")


# The surgeon who accepted gets the phone view's address by SMS, once per case,
# if the acceptance is this recent when the job sees it (a restart long after
# the call sends nothing stale).
ACCEPTED_WINDOW = timedelta(minutes=15)
PHONE_VIEW_ACTOR = "service:accepted"


@dataclass(frozen=True)
class AcceptedCase:
    """A case a surgeon accepted, as the accepted-job sees it (db.photos.PhotoStore.accepted_cases)."""

    case_id: str
    team: str | None
    connected_at: datetime
    surgeon_id: int
    surgeon_phone: str | None
    team_name: str | None = None  # the team's Chinese name, for the SMS


def phone_view_text(url: str, case_id: str, team_word: str) -> tuple[str, str]:
    """(Chinese, English) of the SMS that gives the accepting surgeon the case's phone view."""
    zh = (f"【96608急诊热线】您已接听病例 {case_id}（{team_word}）。手机查看病例与伤情照片"
          f"（需登录）：{url}")
    en = f"96608 hotline: you accepted case {case_id}. The case and its wound photos on your phone (sign in): link above."
    return zh, en


def accepted_plan(case: AcceptedCase, sent: bool, now: datetime) -> str | None:
    """None if the accepting surgeon should be texted the phone view now, else why not."""
    if sent:
        return "sent"
    if now - case.connected_at > ACCEPTED_WINDOW:
        return "too_old"
    if caller_mobile(case.surgeon_phone) is None:
        return "not_mobile"  # a desk phone or the duty nurse's station: no SMS
    return None


def case_open_plan(case: OpenCase, tries: list[Try], now: datetime, setting: str) -> Skip | None:
    """None if a link should go to the caller now, else why not.

    A try that went out (not revoked) ends it; a failed try is revoked, and
    after CASE_OPEN_TRIES of those the job gives up.
    """
    if setting == ON_OPEN_OFF:
        return Skip.OFF
    if case.outcome == "blocked":
        return Skip.BLOCKED
    if case.caller_class != "public" or caller_mobile(case.caller_number) is None:
        return Skip.NOT_MOBILE
    if case.ended_at is not None:
        return Skip.ENDED
    if now - case.started_at > CASE_OPEN_WINDOW:
        return Skip.TOO_OLD
    if any(t.revoked_at is None for t in tries):
        return Skip.SENT
    if len(tries) >= CASE_OPEN_TRIES:
        return Skip.GAVE_UP
    last = max((t.revoked_at or t.created_at for t in tries), default=None)
    if last is not None and now - last < CASE_OPEN_RETRY:
        return Skip.NOT_YET
    return None


def since_words(seconds: float) -> tuple[str, str]:
    """(Chinese, English) of a duration: "2小时05分" / "2 h 05 min"; under an hour in minutes.

    >>> since_words(7500), since_words(59), since_words(-3)
    (('2小时05分', '2 h 05 min'), ('0分', '0 min'), ('0分', '0 min'))
    """
    minutes = max(0, int(seconds // 60))
    hours, rest = divmod(minutes, 60)
    if hours:
        return f"{hours}小时{rest:02d}分", f"{hours} h {rest:02d} min"
    return f"{rest}分", f"{rest} min"
