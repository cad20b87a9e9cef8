"""on_call: who of a team is on call at a moment."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oncall.lookup import on_call
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 3, 2, 8, 0, tzinfo=SHANGHAI)


def hours(h: float) -> datetime:
    return DAY + timedelta(hours=h)


def surgeon(sid: int) -> Surgeon:
    return Surgeon(sid, f"医生{sid}", f"1380000{sid:04d}", Rank.ATTENDING)


def roster(*shifts: Shift, teams=("facial", "replant"), surgeons=range(1, 10)) -> Roster:
    return Roster(
        teams={code: Team(code, code, code) for code in teams},
        surgeons={sid: surgeon(sid) for sid in surgeons},
        shifts=tuple(shifts),
    )


def shift(sid: int, role: Role, start: float = 0, end: float = 24, team: str = "facial") -> Shift:
    return Shift(team, sid, role, hours(start), hours(end))


def ids(members) -> list[int]:
    return [m.surgeon.id for m in members]


def test_members_come_in_ring_order_of_roles():
    r = roster(
        shift(4, Role.DEPARTMENT_HEAD), shift(3, Role.ATTENDING),
        shift(1, Role.PRIMARY), shift(2, Role.BACKUP),
    )
    members = on_call(r, "facial", hours(3))
    assert ids(members) == [1, 2, 3, 4]
    assert [m.role for m in members] == [Role.PRIMARY, Role.BACKUP, Role.ATTENDING, Role.DEPARTMENT_HEAD]
    assert members[0].surgeon == surgeon(1)


def test_same_role_orders_by_shift_start_then_surgeon_id():
    r = roster(shift(5, Role.PRIMARY, 2, 10), shift(3, Role.PRIMARY, 0, 10), shift(2, Role.PRIMARY, 2, 10))
    assert ids(on_call(r, "facial", hours(4))) == [3, 2, 5]


def test_shifts_are_half_open():
    r = roster(shift(1, Role.PRIMARY, 0, 12), shift(2, Role.PRIMARY, 12, 24))
    assert ids(on_call(r, "facial", hours(0))) == [1]
    assert ids(on_call(r, "facial", hours(12) - timedelta(microseconds=1))) == [1]
    assert ids(on_call(r, "facial", hours(12))) == [2]
    assert on_call(r, "facial", hours(24)) == []
    assert on_call(r, "facial", hours(-0.001)) == []


def test_a_surgeon_appears_once_in_the_highest_priority_role():
    r = roster(shift(1, Role.ATTENDING), shift(1, Role.PRIMARY, 2, 6), shift(2, Role.BACKUP))
    members = on_call(r, "facial", hours(3))
    assert [(m.surgeon.id, m.role) for m in members] == [(1, Role.PRIMARY), (2, Role.BACKUP)]
    # Outside the primary shift the same surgeon is back to attending.
    assert [(m.surgeon.id, m.role) for m in on_call(r, "facial", hours(8))] == [
        (2, Role.BACKUP), (1, Role.ATTENDING)]


def test_unknown_team_is_empty_even_with_stray_shifts():
    r = roster(shift(1, Role.PRIMARY, team="ghost"))
    assert on_call(r, "ghost", hours(1)) == []
    assert on_call(r, "nope", hours(1)) == []


def test_other_teams_do_not_leak():
    r = roster(shift(1, Role.PRIMARY), shift(2, Role.PRIMARY, team="replant"))
    assert ids(on_call(r, "facial", hours(1))) == [1]
    assert ids(on_call(r, "replant", hours(1))) == [2]
    assert r.shifts_of("replant") == (shift(2, Role.PRIMARY, team="replant"),)
    assert r.shifts_of("nope") == ()


def test_a_shift_of_an_unknown_surgeon_is_skipped():
    r = roster(shift(1, Role.PRIMARY), shift(99, Role.BACKUP))
    assert ids(on_call(r, "facial", hours(1))) == [1]


def test_the_time_zone_of_at_does_not_matter():
    r = roster(shift(1, Role.PRIMARY, 0, 12), shift(2, Role.PRIMARY, 12, 24))
    at = hours(11.5)
    assert on_call(r, "facial", at) == on_call(r, "facial", at.astimezone(timezone.utc))
    assert ids(on_call(r, "facial", at.astimezone(timezone(timedelta(hours=-5))))) == [1]


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        on_call(roster(shift(1, Role.PRIMARY)), "facial", datetime(2026, 3, 2, 9))


def test_empty_roster():
    assert on_call(Roster(), "facial", hours(1)) == []


shift_strategy = st.builds(
    lambda sid, role, start, length, team: shift(sid, role, start, start + length, team),
    st.integers(1, 6), st.sampled_from(list(Role)), st.integers(-24, 48),
    st.integers(1, 36), st.sampled_from(["facial", "replant"]),
)


@given(st.lists(shift_strategy, max_size=30), st.integers(-30, 90))
def test_on_call_invariants(shifts, hour):
    r = roster(*shifts)
    at = hours(hour)
    members = on_call(r, "facial", at)
    assert len({m.surgeon.id for m in members}) == len(members)
    assert all(m.shift.team == "facial" and m.shift.start <= at < m.shift.end for m in members)
    keys = [(m.role.ring_order, m.shift.start, m.surgeon.id) for m in members]
    assert keys == sorted(keys)
    covering = {s.surgeon_id for s in shifts if s.team == "facial" and s.start <= at < s.end}
    assert {m.surgeon.id for m in members} == covering
    for m in members:
        best = min(s.role.ring_order for s in shifts
                   if s.team == "facial" and s.surgeon_id == m.surgeon.id and s.start <= at < s.end)
        assert m.role.ring_order == best
