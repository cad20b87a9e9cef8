"""What the roster jobs tell people: shift reminders, daily digests, roster alerts. Pure.

Every function takes the roster and the time and returns `Notice`s; nothing is
sent or stored here (`hotline.rosterjobs` does that). A notice's `key` is
deterministic: the same notice made again -- by the next run of a job, or by a
restarted service looking back over what it may have missed -- has the same
key, and the outbox stores (and so sends) a key once. That is all the
idempotency there is, so what goes into a key is chosen with care:

- a shift reminder: team, role, surgeon and the instant the stint starts;
- a digest: team, local date and recipient;
- a roster alert: the finding's kind, team(s), surgeon and span, where a bound
  cut by the checked window is written `open` (otherwise the window moving on
  by a minute would make a new key every run); a data error (an unknown
  surgeon, a bad zone name) has no span in its key: it is alerted once, and
  the daily digest repeats it.

Texts are Chinese first (the recipients are Chinese surgeons), English second;
times are in the team's zone as "3月1日 08:00". Names come from the database:
they are kept as they are, but characters that could break a line (CR, LF,
U+2028, bidi and other format controls) are replaced, so a name never adds a
line to a message or a log.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Literal
from zoneinfo import ZoneInfo

from oncall.checks import ROLE_ZH, Finding, FindingKind, check_roster
from oncall.model import HOTLINE_TZ, Role, Roster
from oncall.roster_ops import department_heads
from oncall.rotation import (EffectiveShift, expand_between, local_instant, on_call,
                             shifts_between, team_zone, vacancies_between)

UTC = timezone.utc

NoticeKind = Literal["shift_reminder", "roster_digest", "roster_gap", "missed_call",
                     "callback_due", "referral_status", "major_incident"]
SHIFT_REMINDER: NoticeKind = "shift_reminder"
ROSTER_DIGEST: NoticeKind = "roster_digest"
ROSTER_GAP: NoticeKind = "roster_gap"
# The network's notices (issue 6), through the same outbox and notifier:
MISSED_CALL: NoticeKind = "missed_call"  # a call ended with no surgeon accepting
CALLBACK_DUE: NoticeKind = "callback_due"  # a callback task reached its due time
REFERRAL_STATUS: NoticeKind = "referral_status"  # a referral changed status
MAJOR_INCIDENT: NoticeKind = "major_incident"  # major-incident mode switched on or off
KINDS: frozenset[str] = frozenset({SHIFT_REMINDER, ROSTER_DIGEST, ROSTER_GAP, MISSED_CALL,
                                   CALLBACK_DUE, REFERRAL_STATUS, MAJOR_INCIDENT})

REMINDER_LEAD = timedelta(minutes=30)  # remind this long before a stint starts
REMINDER_LOOKBACK = timedelta(minutes=30)  # after a restart, still remind this late
DIGEST_AT = time(7, 30)  # local wall time in the team's zone
GAP_DAYS = 7  # roster alerts look this many days ahead
GAP_LOOKBACK = timedelta(days=1)  # ...and this far back, so a finding's start stays put
HANDOFF_HORIZON = timedelta(days=2)
MIN_CHAIN = 2  # check_roster's default: fewer people on call is a short chain

ROLE_EN = {Role.PRIMARY: "primary", Role.BACKUP: "backup", Role.ATTENDING: "attending",
           Role.DEPARTMENT_HEAD: "department head"}
_WEEKDAY_ZH = "一二三四五六日"
_WEEKDAY_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TICK = timedelta(microseconds=1)  # "the instant just before"
# A reminder names the stint's end if it is at most this far after the start (a
# day's stint, 25 h across a fall-back night); longer ones are left open-ended.
_REMINDER_END_WITHIN = timedelta(hours=36)
_DATA_ERRORS = frozenset({FindingKind.UNKNOWN_SURGEON, FindingKind.BAD_TIME_ZONE})
DESK = "desk"  # the recipient part of a key for the duty desk (surgeon_id None)


@dataclass(frozen=True)
class Notice:
    """One message to one recipient, due at `due_at` (UTC).

    `key` is unique and deterministic (see the module docstring); at most
    about 120 characters for team codes of up to 20. `surgeon_id` is the
    recipient; None means the duty desk (值班台 / supervisors). `team` is None
    only for a finding that names no team.
    """

    key: str
    kind: NoticeKind
    team: str | None
    surgeon_id: int | None
    due_at: datetime
    text_zh: str
    text_en: str

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a notice needs a key")
        if self.kind not in KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}")
        if self.due_at.tzinfo is None or self.due_at.utcoffset() is None:
            raise ValueError("a notice's due_at must be timezone-aware")
        object.__setattr__(self, "due_at", self.due_at.astimezone(UTC))


# --------------------------------------------------------------------------- shift reminders


def shift_reminders(roster: Roster, now: datetime, *, lead: timedelta = REMINDER_LEAD,
                    lookback: timedelta = REMINDER_LOOKBACK) -> list[Notice]:
    """A reminder to each surgeon whose on-call stint starts in (now - lookback, now + lead].

    A stint is a piece of `shifts_between` (every team, every role) whose
    surgeon did not hold that role of that team the instant before: a piece
    that only continues -- the next slot of a one-member rotation, an override
    by the same surgeon, a cut by the window -- is not a new stint. A surgeon
    back from leave, or holding again after someone else's override, starts a
    new one. Due `lead` before the start (so already due when made).
    """
    now = _utc(now, "shift_reminders")
    lo, hi = now - lookback, now + lead
    out: list[Notice] = []
    seen: set[str] = set()
    for code in sorted(roster.teams):
        team = roster.teams[code]
        tz = team_zone(team)
        # From just before `lo` (to see who held a role before a start) to past
        # `hi` + _REMINDER_END_WITHIN (to tell the surgeon until when, the same
        # on every run: whether the end is shown depends on the start only).
        window_end = hi + _REMINDER_END_WITHIN + _TICK
        pieces = shifts_between(roster, code, lo - _TICK, window_end)
        for piece in pieces:
            if not lo < piece.start <= hi or _held_before(pieces, piece):
                continue
            key = f"remind:{code}:{piece.role.value}:{piece.surgeon_id}:{_stamp(piece.start)}"
            if key in seen:  # the same stint from two sources (a slot and a one-off shift)
                continue
            seen.add(key)
            end = _stint_end(pieces, piece)
            name = clean(roster.surgeons[piece.surgeon_id].name)
            start_zh, start_en = fmt_zh(piece.start, tz), fmt_en(piece.start, tz)
            shown = end <= piece.start + _REMINDER_END_WITHIN
            until_zh = f"，至{fmt_zh(end, tz)}" if shown else ""
            until_en = f" until {fmt_en(end, tz)}" if shown else ""
            role_zh, role_en = ROLE_ZH[piece.role], ROLE_EN[piece.role]
            out.append(Notice(
                key=key, kind=SHIFT_REMINDER, team=code, surgeon_id=piece.surgeon_id,
                due_at=piece.start - lead,
                text_zh=(f"【96608值班提醒】{name}医生：您的{clean(team.name_zh)}{role_zh}值班"
                         f"于{start_zh}开始{until_zh}{_zone_zh(tz)}。请保持手机畅通，来电按1接听。"),
                text_en=(f"96608 on-call reminder: {name}, your {clean(team.name_en)} {role_en} "
                         f"shift starts {start_en}{until_en}{_zone_en(tz)}. Keep your phone on; "
                         f"press 1 to accept a call."),
            ))
    out.sort(key=lambda n: (n.due_at, n.key))
    return out


def _held_before(pieces: list[EffectiveShift], piece: EffectiveShift) -> bool:
    """Did the piece's surgeon hold its role at the instant just before it starts?"""
    before = piece.start - _TICK
    return any(p.surgeon_id == piece.surgeon_id and p.role is piece.role
               and p.start <= before < p.end for p in pieces)


def _stint_end(pieces: list[EffectiveShift], piece: EffectiveShift) -> datetime:
    """Where the surgeon stops holding the role, across pieces that touch or overlap."""
    end, grew = piece.end, True
    while grew:
        grew = False
        for p in pieces:
            if (p.surgeon_id == piece.surgeon_id and p.role is piece.role
                    and p.start <= end < p.end):
                end, grew = p.end, True
    return end


# --------------------------------------------------------------------------- daily digest


def roster_digest(roster: Roster, team_code: str, day: date, now: datetime, *,
                  at: time = DIGEST_AT) -> list[Notice]:
    """The team's chain on local `day`, and the findings of that day and the next.

    One notice per department head (`Team.department_head`, else whoever is
    on call as department head at the digest time `at` on `day`), or one to
    the duty desk if there is none. Due at `at` on `day` in the team's zone.
    The recipients are resolved at that fixed instant, not at `now`, so every
    run of the day makes the same notices. `now` only has to be aware: a
    digest may be made before its time (a preview) or after it (a catch-up).
    Unknown team -> [].
    """
    _utc(now, "roster_digest")
    team = roster.teams.get(team_code)
    if team is None:
        return []
    tz = team_zone(team)
    start = local_instant(day, time(0), tz)
    end = local_instant(day + timedelta(days=1), time(0), tz)
    due = local_instant(day, at, tz)
    pieces = shifts_between(roster, team_code, start, end)
    findings = [f for f in check_roster(roster, start,
                                        local_instant(day + timedelta(days=2), time(0), tz))
                if team_code in (f.team, f.other_team)]

    weekday = _WEEKDAY_ZH[day.weekday()]
    lines_zh = [f"【96608排班日报】{clean(team.name_zh)} {day.month}月{day.day}日（周{weekday}）"
                f"{_zone_zh(tz)}"]
    lines_en = [f"96608 roster digest: {clean(team.name_en)}, {_WEEKDAY_EN[day.weekday()]} "
                f"{day.day} {_MONTH_EN[day.month - 1]} {day.year}"
                f"{_zone_en(tz)}"]
    for role in sorted(Role, key=lambda r: r.ring_order):
        held = _stints(pieces, role)
        names_zh = "，".join(f"{_name(roster, sid)}（{fmt_zh(lo, tz)}–{fmt_zh(hi, tz)}）"
                            for sid, lo, hi in held) or "无"
        names_en = "; ".join(f"{_name(roster, sid)} ({fmt_en(lo, tz)}–{fmt_en(hi, tz)})"
                             for sid, lo, hi in held) or "nobody"
        lines_zh.append(f"{ROLE_ZH[role]}：{names_zh}")
        lines_en.append(f"{ROLE_EN[role].capitalize()}: {names_en}")
    if findings:
        lines_zh.append("排班问题（今明两天）：")
        lines_en.append("Roster problems (today and tomorrow):")
        for finding in findings:
            zh, en = finding_text(roster, finding)
            lines_zh.append(f"- {zh}")
            lines_en.append(f"- {en}")
    else:
        lines_zh.append("排班问题（今明两天）：无")
        lines_en.append("Roster problems (today and tomorrow): none")
    text_zh, text_en = "\n".join(lines_zh), "\n".join(lines_en)

    recipients: list[int | None] = sorted(_heads(roster, [team_code], due)) or [None]
    return [Notice(key=f"digest:{team_code}:{day.isoformat()}:{_recipient(r)}",
                   kind=ROSTER_DIGEST, team=team_code, surgeon_id=r, due_at=due,
                   text_zh=text_zh, text_en=text_en)
            for r in recipients]


def digests_due(roster: Roster, now: datetime, *, at: time = DIGEST_AT) -> list[Notice]:
    """Today's digest of every team whose local clock has reached `at` today.

    Made on every run from then until local midnight, so a job running every
    few minutes, or one restarted late, makes it; the key dedupes. A digest
    missed for a whole local day is not made the next day (stale by then).
    """
    now = _utc(now, "digests_due")
    out: list[Notice] = []
    for code in sorted(roster.teams):
        tz = team_zone(roster.teams[code])
        today = now.astimezone(tz).date()
        if now >= local_instant(today, at, tz):
            out += roster_digest(roster, code, today, now, at=at)
    return out


def _stints(pieces: list[EffectiveShift], role: Role) -> list[tuple[int, datetime, datetime]]:
    """(surgeon, start, end) of each holder of `role`, touching pieces merged, by start."""
    runs: list[list] = []
    for p in sorted((p for p in pieces if p.role is role), key=lambda p: (p.surgeon_id, p.start)):
        if runs and runs[-1][0] == p.surgeon_id and p.start <= runs[-1][2]:
            runs[-1][2] = max(runs[-1][2], p.end)
        else:
            runs.append([p.surgeon_id, p.start, p.end])
    return sorted(((sid, lo, hi) for sid, lo, hi in runs), key=lambda r: (r[1], r[0]))


# --------------------------------------------------------------------------- roster alerts


def gap_alerts(roster: Roster, now: datetime, *, days: int = GAP_DAYS,
               lookback: timedelta = GAP_LOOKBACK) -> list[Notice]:
    """One alert per finding of `check_roster` that is not over at `now`, up to `days` ahead.

    Each goes to the department head(s) of the finding's team(s) on call at
    `now` and to the duty desk. The roster is checked over [now - lookback,
    now + days) and a span bound lying on that window's edge is keyed `open`,
    so a finding keeps its key while the window slides. It is alerted again
    when its span changes (a gap that got shorter, a real end now in sight)
    and when a new department head comes on duty while it is still open --
    and once more, keyed `open`, if it is still unresolved `lookback` after
    it began. An unknown surgeon or a bad zone name is alerted once (keyed
    `any:any`).
    """
    now = _utc(now, "gap_alerts")
    start, end = now - lookback, now + timedelta(days=days)
    out: list[Notice] = []
    for finding in check_roster(roster, start, end):
        if finding.end <= now:
            continue
        lo_open, hi_open = finding.start <= start, finding.end >= end
        teams = [t for t in (finding.team, finding.other_team) if t is not None]
        zh, en = finding_text(roster, finding, lo_open=lo_open, hi_open=hi_open, days=days)
        if finding.kind in _DATA_ERRORS:
            # Its span follows the window and the rotation's slots, not a problem in time.
            span = ("any", "any")
        else:
            span = ("open" if lo_open else _stamp(finding.start),
                    "open" if hi_open else _stamp(finding.end))
        key = ":".join(("gap", finding.kind.value, "+".join(teams) or "-",
                        "-" if finding.surgeon_id is None else str(finding.surgeon_id), *span))
        recipients: list[int | None] = [*sorted(_heads(roster, teams, now)), None]
        for r in recipients:
            out.append(Notice(key=f"{key}:{_recipient(r)}", kind=ROSTER_GAP,
                              team=finding.team, surgeon_id=r, due_at=now,
                              text_zh=f"【96608排班预警】{zh}", text_en=f"96608 roster alert: {en}"))
    return out


def finding_text(roster: Roster, finding: Finding, *, lo_open: bool = False,
                 hi_open: bool = False, days: int = GAP_DAYS) -> tuple[str, str]:
    """(Chinese, English) wording of a finding, times in its team's zone, names cleaned.

    `lo_open` / `hi_open`: the bound is only where the check stopped looking.
    """
    team = roster.teams.get(finding.team or "")
    tz = team_zone(team) if team is not None else ZoneInfo(HOTLINE_TZ)
    t_zh = clean(team.name_zh) if team else ""
    t_en = clean(team.name_en) if team else ""
    span_zh, span_en = _span(finding.start, finding.end, tz, lo_open, hi_open, days)
    span_zh += _zone_zh(tz)
    span_en += _zone_en(tz)
    sid = finding.surgeon_id
    name = _name(roster, sid) if sid is not None else ""
    kind = finding.kind
    if kind is FindingKind.GAP:
        return f"{t_zh}：{span_zh}，无一线值班", f"{t_en}: nobody on call as primary {span_en}"
    if kind is FindingKind.SHORT_CHAIN and team is not None:
        people = len(on_call(roster, team.code, finding.start))
        return (f"{t_zh}：{span_zh}，呼叫升级顺序只有{people}人（少于{MIN_CHAIN}人）",
                f"{t_en}: the escalation chain has {people} "
                f"{'person' if people == 1 else 'people'} {span_en} (fewer than {MIN_CHAIN})")
    if kind is FindingKind.ON_LEAVE and team is not None and sid is not None:
        roles = sorted({p.role for p in vacancies_between(roster, team.code, finding.start,
                                                           finding.end) if p.surgeon_id == sid},
                       key=lambda r: r.ring_order)
        role_zh = "、".join(ROLE_ZH[r] for r in roles) or "值"
        role_en = "/".join(ROLE_EN[r] for r in roles) or "on-call"
        return (f"{t_zh}：{name} {span_zh}请假，其{role_zh}班无人顶班",
                f"{t_en}: {name} is on leave {span_en} but holds the {role_en} shift; nobody covers")
    if kind is FindingKind.DOUBLE_BOOKED:
        other = roster.teams.get(finding.other_team or "")
        o_zh = clean(other.name_zh) if other else clean(finding.other_team or "")
        o_en = clean(other.name_en) if other else clean(finding.other_team or "")
        return (f"{name} {span_zh}同时在{t_zh}和{o_zh}值班",
                f"{name} is on call for both {t_en} and {o_en} {span_en}")
    if kind is FindingKind.UNKNOWN_SURGEON and sid is not None:
        return (f"{t_zh}：排班中的医生编号{sid}不在医生名单中（{span_zh}），该班无人接听",
                f"{t_en}: the roster names surgeon {sid}, who is not listed ({span_en}); "
                f"nobody is rung for it")
    if kind is FindingKind.BAD_TIME_ZONE and team is not None:
        return (f"{t_zh}：时区设置 {clean(repr(team.tz))} 无效，交班按北京时间（{HOTLINE_TZ}）计算",
                f"{t_en}: time zone {clean(repr(team.tz))} is unknown; handoffs use {HOTLINE_TZ}")
    return clean(finding.message_zh or finding.message), clean(finding.message)


def _span(lo: datetime, hi: datetime, tz: ZoneInfo, lo_open: bool, hi_open: bool,
          days: int) -> tuple[str, str]:
    if lo_open and hi_open:
        return f"目前起（{days}天内未结束）", f"from now on (not over within {days} days)"
    if lo_open:
        return f"目前起至 {fmt_zh(hi, tz)}", f"from now until {fmt_en(hi, tz)}"
    if hi_open:
        return (f"{fmt_zh(lo, tz)}起（{days}天内未结束）",
                f"from {fmt_en(lo, tz)} (not over within {days} days)")
    return f"{fmt_zh(lo, tz)} 至 {fmt_zh(hi, tz)}", f"{fmt_en(lo, tz)}–{fmt_en(hi, tz)}"


# --------------------------------------------------------------------------- handoffs


def next_handoff(roster: Roster, teams: Iterable[str], after: datetime, *,
                 horizon: timedelta = HANDOFF_HORIZON) -> datetime | None:
    """The first instant in (after, after + horizon) at which a piece of these teams starts or ends.

    That is when their chains may change: a rotation handoff, an override or
    one-off shift beginning or ending, a leave beginning or ending. A slot
    boundary at which the same surgeon carries on counts as well (pushing an
    unchanged chain costs nothing). Unknown teams are skipped; None if
    nothing changes within the horizon. UTC.
    """
    after = _utc(after, "next_handoff")
    end = after + horizon
    best: datetime | None = None
    for code in dict.fromkeys(teams):
        if code not in roster.teams:
            continue
        for piece in expand_between(roster, code, after, end).held:
            for t in (piece.start, piece.end):
                if after < t < end and (best is None or t < best):
                    best = t
    return best


# --------------------------------------------------------------------------- wording helpers


_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # controls, format chars, line breaks


def clean(text: str) -> str:
    """`text` on one line: each run of control / format / line-break characters becomes one space.

    Kept as it is otherwise (a rare 生僻字 is a name, not an error).

    >>> clean("张\\r\\n三\\u2028李\\u202e")
    '张 三 李'
    """
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE:
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(ch)
    return "".join(out).strip()


def fmt_zh(at: datetime, tz: ZoneInfo) -> str:
    """`3月1日 08:00` in `tz`."""
    local = at.astimezone(tz)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def fmt_en(at: datetime, tz: ZoneInfo) -> str:
    """`1 Mar 08:00` in `tz` (month names spelt here: strftime's follow the locale)."""
    local = at.astimezone(tz)
    return f"{local.day} {_MONTH_EN[local.month - 1]} {local:%H:%M}"


def _zone_zh(tz: ZoneInfo) -> str:
    return "" if tz.key == HOTLINE_TZ else f"（{tz.key}时间）"


def _zone_en(tz: ZoneInfo) -> str:
    return "" if tz.key == HOTLINE_TZ else f" ({tz.key} time)"


def _name(roster: Roster, sid: int) -> str:
    surgeon = roster.surgeons.get(sid)
    return clean(surgeon.name) if surgeon is not None else f"#{sid}"


def _heads(roster: Roster, teams: Iterable[str], at: datetime) -> set[int]:
    """The department heads of these teams at `at` who are in the roster (a head
    configured by an id nobody has could never be sent anything)."""
    heads: set[int] = set()
    for code in teams:
        heads |= department_heads(roster, code, at)
    return {sid for sid in heads if sid in roster.surgeons}


def _recipient(surgeon_id: int | None) -> str:
    return DESK if surgeon_id is None else str(surgeon_id)


def _stamp(at: datetime) -> str:
    """An instant for a key: UTC, to the second (`20260301T000000Z`)."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _utc(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} needs a timezone-aware time")
    return at.astimezone(UTC)
