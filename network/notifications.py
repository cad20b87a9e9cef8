"""What the hotline tells people about missed calls and due callbacks, and how it is worded. Pure.

Two producers, both in the style of `oncall.notices`: they take what the
database says (`MissedCall`, `DueCallback`) and the roster, and return
`Notice`s with deterministic keys; `hotline.networkjobs` stores them in the
notice outbox, which keeps each key once, so running a producer again (the
next minute, or after a restart looking back) never makes a notice twice.

- a missed call: a case that ended with nobody accepting after the caller
  chose a team (outcome voicemail or abandoned, a team set) -> one notice to
  the team's on-call primary *at the time of the call* (the surgeon whose
  phone rang first, fixed, so every run names the same one) and one to the
  duty desk; key `missed:<case_id>:<recipient>`;
- a due callback: an open callback task whose due time has come -> one to
  its owner (or, without one, the team's on-call primary at the due time)
  and one to the duty desk; key `callback-due:<id>:<due_at>`, so a task whose
  due time is moved is announced again at its new time.

Wording helpers for the notifiers live here as well: `mask_numbers` (group
messages are read by many: a phone number keeps its last four digits),
`cut_utf8` (a WeChat robot takes 2048 bytes), `e164` (what Twilio dials).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ, Role, Roster
from oncall.notices import CALLBACK_DUE, DESK, MISSED_CALL, Notice, clean, fmt_en, fmt_zh
from oncall.rotation import on_call, team_zone
from routing.callers import normalise_number

UTC = timezone.utc

# Outcomes of a case in which nobody accepted (cases.lifecycle.Case.outcome);
# "fallback" (the static dialplan reached the duty nurse) and "nurse" are not missed.
MISSED_OUTCOMES = ("voicemail", "abandoned")
CALLBACK_REASONS_ZH = {"voicemail": "来电者留言", "abandoned": "来电者排队时挂断",
                       "requested": "来电者要求回拨"}
CALLBACK_REASONS_EN = {"voicemail": "the caller left a voicemail",
                       "abandoned": "the caller hung up while waiting",
                       "requested": "the caller asked to be called back"}
_NUMBER = re.compile(r"[0-9]{3,20}", re.ASCII)
# Where a call can go that is not a roster team (ivr/menu.py: the duty nurse).
_OTHER_DESKS = {"nurse": ("值班护士", "duty nurse")}


@dataclass(frozen=True)
class MissedCall:
    """A case that ended without a surgeon accepting (read from the `cases` table)."""

    case_id: str
    team: str
    outcome: str  # voicemail | abandoned
    started_at: datetime
    ended_at: datetime
    caller_number: str | None  # normalised (routing.callers), None: withheld or invalid
    partner: bool = False  # the caller is a registered partner hospital number
    hospital: str | None = None  # that hospital's name, if known


@dataclass(frozen=True)
class DueCallback:
    """An open callback task (read from the `callbacks` table)."""

    id: int
    case_id: str
    reason: str  # voicemail | abandoned | requested
    due_at: datetime
    team: str | None
    owner_surgeon_id: int | None
    number: str | None  # normalised number to call


# --------------------------------------------------------------------------- producers


def missed_call_notices(roster: Roster, calls: list[MissedCall]) -> list[Notice]:
    """Two notices per missed call: the team's primary at the call's start, and the duty desk.

    Calls that do not qualify (another outcome, no team) are skipped, so a
    reader may hand over a wider set. With nobody on call as primary (a
    roster gap) only the desk is told. Due when the call ended.
    """
    out: list[Notice] = []
    for call in calls:
        if call.outcome not in MISSED_OUTCOMES or not call.team:
            continue
        team = roster.teams.get(call.team)
        tz = team_zone(team) if team is not None else ZoneInfo(HOTLINE_TZ)
        t_zh, t_en = ((clean(team.name_zh), clean(team.name_en)) if team is not None
                      else _OTHER_DESKS.get(call.team, (clean(call.team), clean(call.team))))
        number_zh, number_en = _number(call.caller_number)
        if call.partner:
            name = clean(call.hospital or "")
            number_zh += f"（合作医院：{name}）" if name else "（合作医院）"
            number_en += f" (partner hospital: {name})" if name else " (partner hospital)"
        if call.outcome == "voicemail":
            how_zh, how_en = "来电者已留言", "the caller left a voicemail"
        else:
            how_zh, how_en = "来电者已挂断", "the caller hung up"
        text_zh = (f"【96608未接来电】{t_zh}：{fmt_zh(call.started_at, tz)} 来电 {number_zh}"
                   f"，无医生接听（{how_zh}）。病例 {clean(call.case_id)}，请尽快回拨。")
        text_en = (f"96608 missed call: {t_en}, {fmt_en(call.started_at, tz)} from {number_en}; "
                   f"no surgeon accepted ({how_en}). Case {clean(call.case_id)}; "
                   f"please call back soon.")
        recipients: list[int | None] = [*_primary(roster, call.team, call.started_at), None]
        for r in recipients:
            out.append(Notice(key=f"missed:{call.case_id}:{_recipient(r)}", kind=MISSED_CALL,
                              team=call.team, surgeon_id=r, due_at=call.ended_at,
                              text_zh=text_zh, text_en=text_en))
    return out


def callback_due_notices(roster: Roster, callbacks: list[DueCallback], now: datetime) -> list[Notice]:
    """Two notices per callback task due by `now`: its owner (or the team's primary), the desk.

    A task not yet due is skipped. The owner is whoever the task names; a
    task without one goes to the team's primary at its due time (fixed, so
    every run names the same surgeon), and a task without a team only to
    the desk. Due at the task's due time.
    """
    out: list[Notice] = []
    for task in callbacks:
        if task.due_at > now:
            continue
        team = roster.teams.get(task.team or "")
        tz = team_zone(team) if team is not None else ZoneInfo(HOTLINE_TZ)
        t_zh = f"{clean(team.name_zh)}：" if team else ""
        t_en = f"{clean(team.name_en)}: " if team else ""
        number_zh, number_en = _number(task.number)
        reason_zh = CALLBACK_REASONS_ZH.get(task.reason, clean(task.reason))
        reason_en = CALLBACK_REASONS_EN.get(task.reason, clean(task.reason))
        text_zh = (f"【96608回拨提醒】{t_zh}回拨任务 #{task.id} 已到期（{fmt_zh(task.due_at, tz)}），"
                   f"回拨 {number_zh}，原因：{reason_zh}。病例 {clean(task.case_id)}。")
        text_en = (f"96608 callback due: {t_en}callback #{task.id} was due "
                   f"{fmt_en(task.due_at, tz)}; call {number_en} back ({reason_en}). "
                   f"Case {clean(task.case_id)}.")
        if task.owner_surgeon_id is not None:
            owners = [task.owner_surgeon_id]
        elif task.team:
            owners = _primary(roster, task.team, task.due_at)
        else:
            owners = []
        stamp = task.due_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        for r in [*owners, None]:
            out.append(Notice(key=f"callback-due:{task.id}:{stamp}:{_recipient(r)}",
                              kind=CALLBACK_DUE, team=task.team, surgeon_id=r,
                              due_at=task.due_at, text_zh=text_zh, text_en=text_en))
    return out


def _primary(roster: Roster, team: str, at: datetime) -> list[int]:
    return [m.surgeon.id for m in on_call(roster, team, at) if m.role is Role.PRIMARY][:1]


def _recipient(surgeon_id: int | None) -> str:
    return DESK if surgeon_id is None else str(surgeon_id)


def _number(number: str | None) -> tuple[str, str]:
    """A caller's number as written in a notice: digits only, or 'withheld'."""
    if number is None or not _NUMBER.fullmatch(number):
        return "（号码未显示）", "(number withheld)"
    return number, number


# --------------------------------------------------------------------------- wording for channels


# A run of 7+ digits standing alone (an optional '+' before it) is a phone number;
# digits joined to letters, '-', '.', ':' or '#' are ids and dates (a case id
# 20261125-190512-3fa9c1, a task #12, 08:30), which stay.
_PHONE = re.compile(r"(?<![0-9A-Za-z_.:#+-])\+?([0-9]{7,})(?![0-9A-Za-z_.:#-])", re.ASCII)


def mask_numbers(text: str) -> str:
    """`text` with every phone number cut to its last four digits, for a group message.

    >>> mask_numbers("来电 13812345678，病例 20261125-190512-3fa9c1")
    '来电 ****5678，病例 20261125-190512-3fa9c1'
    >>> mask_numbers("from +8613812345678 or 110")
    'from ****5678 or 110'
    """
    return _PHONE.sub(lambda m: "****" + m.group(1)[-4:], text)


def cut_utf8(text: str, limit: int, marker: str = "…") -> str:
    """`text` in at most `limit` UTF-8 bytes, cut on a character boundary, `marker` at a cut.

    >>> cut_utf8("急诊热线", 9)
    '急诊…'
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    if room < 0:
        raise ValueError("the limit is smaller than the marker")
    return data[:room].decode("utf-8", errors="ignore") + marker


_MOBILE_CN = re.compile(r"1[3-9][0-9]{9}", re.ASCII)


def e164(phone: str) -> str | None:
    """A surgeon's phone in E.164 for SMS: Chinese mobiles and international numbers; else None.

    A landline (0431...) cannot take an SMS, so it gives None, as does
    anything that is not a phone number.

    >>> e164("13800000101"), e164("+86 138 0000 0101"), e164("0043123456"), e164("043188888888")
    ('+8613800000101', '+8613800000101', '+43123456', None)
    """
    normal = normalise_number(phone)
    if normal is None:
        return None
    if _MOBILE_CN.fullmatch(normal):
        return "+86" + normal
    if normal.startswith("00") and 8 <= len(normal) - 2 <= 15:
        return "+" + normal[2:]
    return None


def mobile_for_mention(phone: str) -> str | None:
    """The Chinese mobile number a WeChat Work robot can @-mention (11 digits), or None."""
    normal = e164(phone)
    if normal is None or not normal.startswith("+86"):
        return None
    return normal[3:]
