"""Roster checks: gaps, double booking, leave, short chains, bad data."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from oncall.checks import Finding, FindingKind, check_roster
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from oncall.rotation import Leave, Override, Rotation

SH = ZoneInfo("Asia/Shanghai")
P, B, H = Role.PRIMARY, Role.BACKUP, Role.DEPARTMENT_HEAD
GAP, DOUBLE, LEAVE, SHORT = (FindingKind.GAP, FindingKind.DOUBLE_BOOKED, FindingKind.ON_LEAVE,
                             FindingKind.SHORT_CHAIN)


def sh(mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, tzinfo=SH)


START, END = sh(3, 2), sh(3, 5)  # the checked window: three days


def team(code: str, **kw) -> Team:
    return Team(code, {"facial": "颌面部创伤", "replant": "断肢(指)再植"}.get(code, code),
                code.capitalize(), **kw)


def roster(*, rotations=(), shifts=(), overrides=(), leave=(), teams=("facial", "replant"), **team_kw) -> Roster:
    return Roster(teams={c: team(c, **team_kw) for c in teams},
                  surgeons={i: Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in range(1, 30)},
                  rotations=tuple(rotations), shifts=tuple(shifts), overrides=tuple(overrides),
                  leave=tuple(leave))


FULL = [
    Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)), Rotation.daily("facial", B, [3, 4], date(2026, 3, 1)),
    Rotation.daily("replant", P, [11, 12], date(2026, 3, 1)), Rotation.daily("replant", B, [13], date(2026, 3, 1)),
]


def kinds(findings: list[Finding]) -> list[tuple]:
    return [(f.kind, f.team, f.surgeon_id, f.start, f.end) for f in findings]


def test_a_fully_staffed_roster_has_no_findings():
    assert check_roster(roster(rotations=FULL), START, END) == []


def test_an_empty_team_is_one_gap_and_one_empty_chain_over_the_window():
    findings = check_roster(roster(rotations=FULL[2:]), START, END)
    assert kinds(findings) == [(GAP, "facial", None, START, END), (SHORT, "facial", None, START, END)]
    assert "nobody on call as primary 2026-03-02 00:00–2026-03-05 00:00 (Asia/Shanghai)" in findings[0].message
    assert "无一线值班" in findings[0].message_zh and findings[0].message_zh.startswith("颌面部创伤")
    assert "0 people" in findings[1].message


def test_gaps_before_a_rotation_starts_and_where_a_role_wide_override_names_nobody_known():
    r = roster(rotations=[Rotation.daily("facial", P, [1], date(2026, 3, 3)), *FULL[1:]],
               overrides=[Override("facial", P, 99, sh(3, 4, 10), sh(3, 4, 11))])
    gaps = [(f.start, f.end) for f in check_roster(r, START, END) if f.kind is GAP]
    assert gaps == [(START, sh(3, 3, 8)), (sh(3, 4, 10), sh(3, 4, 11))]


def test_a_surgeon_on_call_in_two_teams_at_once():
    # 1 is facial primary until 08:00 on the 2nd and again from 08:00 on the 3rd
    r = roster(rotations=FULL, shifts=[Shift("replant", 1, B, sh(3, 2, 20), sh(3, 3, 2)),
                                       Shift("replant", 1, B, sh(3, 3, 9), sh(3, 3, 11))])
    [double] = [f for f in check_roster(r, START, END) if f.kind is DOUBLE]
    assert (double.team, double.other_team, double.surgeon_id) == ("facial", "replant", 1)
    assert (double.start, double.end) == (sh(3, 3, 9), sh(3, 3, 11))
    assert "医生1 (1) is on call for both Facial and Replant" in double.message


def test_double_booking_is_cut_to_the_overlap():
    r = roster(rotations=FULL, shifts=[Shift("replant", 2, B, sh(3, 2, 6), sh(3, 2, 10))])
    # 2 is facial primary from 08:00 on the 2nd: the overlap is 08:00-10:00
    [double] = [f for f in check_roster(r, START, END) if f.kind is DOUBLE]
    assert (double.surgeon_id, double.start, double.end) == (2, sh(3, 2, 8), sh(3, 2, 10))


def test_leave_without_cover_is_reported_with_the_gap_it_leaves():
    r = roster(rotations=FULL, leave=[Leave(2, sh(3, 2, 12), sh(3, 2, 14))])
    found = kinds(check_roster(r, START, END))
    assert (LEAVE, "facial", 2, sh(3, 2, 12), sh(3, 2, 14)) in found
    assert (GAP, "facial", None, sh(3, 2, 12), sh(3, 2, 14)) in found
    assert (SHORT, "facial", None, sh(3, 2, 12), sh(3, 2, 14)) in found
    assert len(found) == 3


def test_leave_covered_by_an_override_is_not_reported():
    r = roster(rotations=FULL, leave=[Leave(2, sh(3, 2, 12), sh(3, 2, 14))],
               overrides=[Override("facial", P, 5, sh(3, 2, 8), sh(3, 3, 8), replaces=2)])
    assert check_roster(r, START, END) == []


def test_leave_of_a_one_off_shift_in_another_team():
    r = roster(rotations=FULL, shifts=[Shift("replant", 20, H, sh(3, 3), sh(3, 4))],
               leave=[Leave(20, sh(3, 3, 22), sh(3, 4, 6))])
    [leave] = [f for f in check_roster(r, START, END) if f.kind is LEAVE]
    assert (leave.team, leave.surgeon_id, leave.start, leave.end) == ("replant", 20, sh(3, 3, 22), sh(3, 4))
    assert "请假" in leave.message_zh and "科主任" in leave.message_zh


def test_a_chain_of_one_is_short_and_min_chain_is_a_parameter():
    r = roster(rotations=FULL[:1], teams=("facial",))
    [short] = check_roster(r, START, END)
    assert (short.kind, short.start, short.end) == (SHORT, START, END)
    assert "1 person" in short.message
    assert check_roster(r, START, END, min_chain=1) == []


def test_a_surgeon_in_two_roles_counts_once_in_the_chain():
    r = roster(rotations=[FULL[0], Rotation.daily("facial", B, [1], date(2026, 3, 1))], teams=("facial",))
    shorts = [(f.start, f.end) for f in check_roster(r, START, END) if f.kind is SHORT]
    assert shorts == [(START, sh(3, 2, 8)), (sh(3, 3, 8), sh(3, 4, 8))]  # the days 1 is both


def test_unknown_surgeons_and_a_bad_time_zone_are_reported():
    r = roster(rotations=[Rotation.daily("facial", P, [1, 99], date(2026, 3, 1)), FULL[1]],
               shifts=[Shift("facial", 98, H, sh(3, 2), sh(3, 3))], teams=("facial",), tz="Mars/Olympus")
    found = check_roster(r, START, END)
    unknown = {(f.surgeon_id, f.start, f.end) for f in found if f.kind is FindingKind.UNKNOWN_SURGEON}
    # a rotation member: from their first slot in the window to the end of their last
    assert unknown == {(99, sh(3, 2, 8), END), (98, sh(3, 2), sh(3, 3))}
    [bad] = [f for f in found if f.kind is FindingKind.BAD_TIME_ZONE]
    assert "Mars/Olympus" in bad.message


def test_findings_are_sorted_and_teams_can_be_chosen():
    r = roster(rotations=FULL[:1])  # facial: primary only; replant: nothing
    found = check_roster(r, START, END)
    assert found == sorted(found, key=lambda f: (f.start, f.team, list(FindingKind).index(f.kind)))
    assert {f.team for f in check_roster(r, START, END, teams=["replant"])} == {"replant"}
    assert check_roster(r, START, END, teams=["nope"]) == []


def test_times_in_utc_and_refusals():
    [f, *_] = check_roster(roster(rotations=FULL[2:]), START, END)
    assert f.start.tzinfo is timezone.utc
    with pytest.raises(ValueError):
        check_roster(roster(), datetime(2026, 3, 2), END)
    with pytest.raises(ValueError):
        check_roster(roster(), END, START)
