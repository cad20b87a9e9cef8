"""Roster checks over a window: gaps, double booking, leave, short chains. Pure.

`check_roster(roster, start, end)` looks at what `oncall.rotation` resolves
(rotations, one-off shifts, overrides, leave) and returns findings, each with
team, surgeon, interval and a message in English and in Chinese. Nothing is
alerted here: a job or the CLI decides what to do with the findings.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from oncall.model import Role, Roster, Team
from oncall.rotation import EffectiveShift, RotationClock, expand_between, team_zone

UTC = timezone.utc


class FindingKind(str, enum.Enum):
    GAP = "gap"  # nobody on call in the primary role
    DOUBLE_BOOKED = "double_booked"  # one surgeon on call in two teams at once
    ON_LEAVE = "on_leave"  # a slot left empty by its surgeon's leave (not covered)
    SHORT_CHAIN = "short_chain"  # fewer than `min_chain` people on call
    UNKNOWN_SURGEON = "unknown_surgeon"  # the roster names a surgeon it does not list
    BAD_TIME_ZONE = "bad_time_zone"  # Team.tz is not a zone name; Asia/Shanghai is used


_KIND_ORDER = {kind: n for n, kind in enumerate(FindingKind)}


@dataclass(frozen=True)
class Finding:
    """One problem over [start, end) (UTC, cut to the checked window).

    `team` is None only for a surgeon-wide finding; a double booking names both
    teams (`team` < `other_team`).
    """

    kind: FindingKind
    team: str | None
    surgeon_id: int | None
    start: datetime
    end: datetime
    message: str
    message_zh: str = ""
    other_team: str | None = None


ROLE_ZH = {Role.PRIMARY: "一线", Role.BACKUP: "二线", Role.ATTENDING: "主治",
           Role.DEPARTMENT_HEAD: "科主任"}


def check_roster(roster: Roster, start: datetime, end: datetime, *,
                 teams: Sequence[str] | None = None, min_chain: int = 2) -> list[Finding]:
    """All findings for [start, end), sorted by start, team, kind, surgeon.

    `teams`: the team codes to check (default: every team); a double booking is
    found between any two checked teams.
    """
    for t in (start, end):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("check_roster needs timezone-aware times")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if not start < end:
        raise ValueError("the window must end after it starts")
    codes = sorted(roster.teams) if teams is None else [c for c in teams if c in roster.teams]
    findings: list[Finding] = []
    held_by_team: dict[str, list[EffectiveShift]] = {}
    for code in codes:
        team = roster.teams[code]
        held, vacated = expand_between(roster, code, start, end)
        held_by_team[code] = held
        findings += _bad_zone(team, start, end)
        findings += _gaps(roster, team, held, start, end)
        findings += _short_chains(roster, team, held, start, end, min_chain)
        findings += _leave(roster, team, vacated)
        findings += _unknown_surgeons(roster, team, start, end)
    findings += _double_booked(roster, held_by_team)
    findings.sort(key=lambda f: (f.start, f.team or "", _KIND_ORDER[f.kind], f.surgeon_id or -1,
                                 f.other_team or "", f.end))
    return findings


# --------------------------------------------------------------------------- the checks


def _bad_zone(team: Team, start: datetime, end: datetime) -> list[Finding]:
    try:
        ZoneInfo(team.tz)
        return []
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        pass
    return [Finding(FindingKind.BAD_TIME_ZONE, team.code, None, start, end,
                    f"{team.name_en}: time zone {team.tz!r} is unknown; handoffs use Asia/Shanghai",
                    f"{team.name_zh}：时区 {team.tz!r} 无效，交班按 Asia/Shanghai 计算")]


def _gaps(roster: Roster, team: Team, held: list[EffectiveShift], start: datetime,
          end: datetime) -> list[Finding]:
    covered = _union((p.start, p.end) for p in held if p.role is Role.PRIMARY)
    out = []
    for lo, hi in _complement(covered, start, end):
        when = _span(lo, hi, team)
        out.append(Finding(FindingKind.GAP, team.code, None, lo, hi,
                           f"{team.name_en}: nobody on call as primary {when}",
                           f"{team.name_zh}：{when} 无一线值班"))
    return out


def _short_chains(roster: Roster, team: Team, held: list[EffectiveShift], start: datetime,
                  end: datetime, min_chain: int) -> list[Finding]:
    cuts = sorted({start, end} | {t for p in held for t in (p.start, p.end)})
    runs: list[list] = []  # [lo, hi, people]
    for lo, hi in zip(cuts, cuts[1:]):
        people = len({p.surgeon_id for p in held if p.start <= lo < p.end})
        if people >= min_chain:
            continue
        if runs and runs[-1][1] == lo and runs[-1][2] == people:
            runs[-1][1] = hi
        else:
            runs.append([lo, hi, people])
    out = []
    for lo, hi, people in runs:
        when = _span(lo, hi, team)
        out.append(Finding(FindingKind.SHORT_CHAIN, team.code, None, lo, hi,
                           f"{team.name_en}: the escalation chain has {people} "
                           f"{'person' if people == 1 else 'people'} {when} "
                           f"(fewer than {min_chain})",
                           f"{team.name_zh}：{when} 呼叫升级顺序只有 {people} 人（少于 {min_chain} 人）"))
    return out


def _leave(roster: Roster, team: Team, vacated: list[EffectiveShift]) -> list[Finding]:
    out = []
    for p in vacated:
        name = _name(roster, p.surgeon_id)
        when = _span(p.start, p.end, team)
        out.append(Finding(FindingKind.ON_LEAVE, team.code, p.surgeon_id, p.start, p.end,
                           f"{team.name_en}: {name} is on leave but holds {p.role.value} "
                           f"{when}; nobody covers",
                           f"{team.name_zh}：{name} {when} 请假，{ROLE_ZH[p.role]}班次无人顶班"))
    return out


def _unknown_surgeons(roster: Roster, team: Team, start: datetime,
                      end: datetime) -> list[Finding]:
    known = roster.surgeons
    out = []

    def report(sid: int, lo: datetime, hi: datetime, what: str, what_zh: str) -> None:
        lo, hi = max(lo.astimezone(UTC), start), min(hi.astimezone(UTC), end)
        when = _span(lo, hi, team)
        out.append(Finding(FindingKind.UNKNOWN_SURGEON, team.code, sid, lo, hi,
                           f"{team.name_en}: {what} names surgeon {sid}, who is not in the "
                           f"roster ({when}); nobody is rung for it",
                           f"{team.name_zh}：{what_zh}中的医生 {sid} 不在排班表中（{when}）"))

    tz = team_zone(team)
    for rotation in roster.rotations:
        if rotation.team != team.code:
            continue
        for sid in dict.fromkeys(m for m in rotation.members if m not in known):
            slots = [s for s in RotationClock(rotation, tz).slots_between(start, end)
                     if s.surgeon_id == sid]
            if slots:
                label = rotation.name or f"{rotation.kind} {rotation.role.value} rotation"
                report(sid, slots[0].start, slots[-1].end, label, f"轮班 {label} ")
    for shift in roster.shifts:
        if shift.team == team.code and shift.surgeon_id not in known and _overlaps(shift, start, end):
            report(shift.surgeon_id, shift.start, shift.end, "a shift", "班次")
    for override in roster.overrides:
        if override.team == team.code and _overlaps(override, start, end):
            for sid in (override.surgeon_id, override.replaces):
                if sid is not None and sid not in known:
                    report(sid, override.start, override.end, "an override", "顶班")
    return out


def _double_booked(roster: Roster, held_by_team: dict[str, list[EffectiveShift]]) -> list[Finding]:
    spans: dict[int, dict[str, list[tuple[datetime, datetime]]]] = {}
    for code, held in held_by_team.items():
        for p in held:
            spans.setdefault(p.surgeon_id, {}).setdefault(code, []).append((p.start, p.end))
    out = []
    for sid, by_team in spans.items():
        if len(by_team) < 2:
            continue
        name = _name(roster, sid)
        merged = {code: _union(iv) for code, iv in by_team.items()}
        for a, b in combinations(sorted(merged), 2):
            team_a, team_b = roster.teams[a], roster.teams[b]
            for lo, hi in _intersect(merged[a], merged[b]):
                when = _span(lo, hi, team_a)
                out.append(Finding(
                    FindingKind.DOUBLE_BOOKED, a, sid, lo, hi,
                    f"{name} is on call for both {team_a.name_en} and {team_b.name_en} {when}",
                    f"{name} {when} 同时在{team_a.name_zh}和{team_b.name_zh}值班",
                    other_team=b))
    return out


# --------------------------------------------------------------------------- intervals


def _overlaps(item, start: datetime, end: datetime) -> bool:
    return item.start < end and item.end > start


def _union(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[list[datetime]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _complement(covered: list[tuple[datetime, datetime]], start: datetime,
                end: datetime) -> list[tuple[datetime, datetime]]:
    out, reach = [], start
    for lo, hi in covered:
        if lo > reach:
            out.append((reach, lo))
        reach = max(reach, hi)
    if reach < end:
        out.append((reach, end))
    return out


def _intersect(a: list[tuple[datetime, datetime]],
               b: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


# --------------------------------------------------------------------------- wording


def _name(roster: Roster, sid: int) -> str:
    surgeon = roster.surgeons.get(sid)
    return f"{surgeon.name} ({sid})" if surgeon else f"surgeon {sid}"


def _span(lo: datetime, hi: datetime, team: Team) -> str:
    """`2026-03-02 08:00–2026-03-03 08:00 (Asia/Shanghai)`, in the team's zone."""
    tz = team_zone(team)
    fmt = "%Y-%m-%d %H:%M"
    return f"{lo.astimezone(tz).strftime(fmt)}–{hi.astimezone(tz).strftime(fmt)} ({tz.key})"
