"""Rotations, layers, overrides and leave: who is on call, at boundary minutes and by property."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncall import lookup
from oncall.model import OnCall, Rank, Role, Roster, Shift, Surgeon, Team
from oncall.rotation import (
    EffectiveShift,
    Leave,
    Override,
    Rotation,
    RotationClock,
    Source,
    local_instant,
    on_call,
    shifts_between,
    vacancies_between,
)
from routing.escalation import build_chain

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
P, B, A, H = Role.PRIMARY, Role.BACKUP, Role.ATTENDING, Role.DEPARTMENT_HEAD


def sh(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=SH)


def berlin(y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN, fold=fold)


def surgeon(sid: int) -> Surgeon:
    return Surgeon(sid, f"医生{sid}", f"1380000{sid:04d}", Rank.ATTENDING)


def make(*, rotations=(), shifts=(), overrides=(), leave=(), tz="Asia/Shanghai",
         teams=("facial", "replant"), surgeons=range(1, 20)) -> Roster:
    return Roster(
        teams={code: Team(code, code, code, tz=tz) for code in teams},
        surgeons={sid: surgeon(sid) for sid in surgeons},
        shifts=tuple(shifts), rotations=tuple(rotations), overrides=tuple(overrides),
        leave=tuple(leave),
    )


def who(roster: Roster, at: datetime, team: str = "facial") -> list[int]:
    return [m.surgeon.id for m in on_call(roster, team, at)]


def roles(roster: Roster, at: datetime, team: str = "facial") -> list[tuple[int, Role]]:
    return [(m.surgeon.id, m.role) for m in on_call(roster, team, at)]


def days(a: date, b: date) -> int:
    return (b - a).days


TICK = timedelta(microseconds=1)

# --------------------------------------------------------------------------- handoffs

DAILY_0800 = make(rotations=[Rotation.daily("facial", P, [1, 2, 3], date(2026, 3, 1))])
MIDNIGHT = make(rotations=[Rotation.daily("facial", P, [1, 2, 3], date(2026, 1, 30), at=time(0, 0))])
LEAP = make(rotations=[Rotation.daily("facial", P, [1, 2, 3, 4], date(2028, 2, 27))])
WEEKLY_LEAP = make(rotations=[Rotation.weekly("facial", P, [1, 2], date(2028, 2, 24))])  # a Thursday
EVERY_3 = make(rotations=[Rotation.every(3, "facial", P, [1, 2], date(2028, 2, 27), at=time(20, 0))])
DAY_NIGHT = make(rotations=[Rotation("facial", P, (1, 2, 3), date(2026, 3, 1), (time(8), time(20)))])
UNTIL = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1), until=date(2026, 3, 3))])


@pytest.mark.parametrize("roster, at, expected", [
    # the handoff minute, half-open
    (DAILY_0800, sh(2026, 3, 1, 7, 59), []),  # before the first handoff
    (DAILY_0800, sh(2026, 3, 1, 8, 0), [1]),
    (DAILY_0800, sh(2026, 3, 2, 7, 59), [1]),
    (DAILY_0800, sh(2026, 3, 2, 8, 0) - TICK, [1]),
    (DAILY_0800, sh(2026, 3, 2, 8, 0), [2]),
    (DAILY_0800, sh(2026, 3, 2, 8, 1), [2]),
    (DAILY_0800, sh(2026, 3, 4, 8, 0), [1]),  # wraps round the members
    # 23:59 / 00:00: no handoff at midnight for an 08:00 rotation ...
    (DAILY_0800, sh(2026, 3, 2, 23, 59), [2]),
    (DAILY_0800, sh(2026, 3, 3, 0, 0), [2]),
    # ... and one exactly at midnight, across the 31st -> 1st
    (MIDNIGHT, sh(2026, 1, 30, 0, 0), [1]),
    (MIDNIGHT, sh(2026, 1, 31, 0, 0) - TICK, [1]),
    (MIDNIGHT, sh(2026, 1, 31, 23, 59), [2]),
    (MIDNIGHT, sh(2026, 2, 1, 0, 0), [3]),
    (MIDNIGHT, sh(2026, 3, 31, 23, 59), [days(date(2026, 1, 30), date(2026, 3, 31)) % 3 + 1]),
    (MIDNIGHT, sh(2026, 4, 1, 0, 0), [days(date(2026, 1, 30), date(2026, 4, 1)) % 3 + 1]),
    (DAILY_0800, sh(2026, 3, 31, 23, 59), [days(date(2026, 3, 1), date(2026, 3, 31)) % 3 + 1]),
    (DAILY_0800, sh(2026, 4, 1, 7, 59), [days(date(2026, 3, 1), date(2026, 3, 31)) % 3 + 1]),
    (DAILY_0800, sh(2026, 4, 1, 8, 0), [days(date(2026, 3, 1), date(2026, 4, 1)) % 3 + 1]),
    # Feb 28 / 29 2028 (leap year)
    (LEAP, sh(2028, 2, 28, 8, 0), [2]),
    (LEAP, sh(2028, 2, 29, 7, 59), [2]),
    (LEAP, sh(2028, 2, 29, 8, 0), [3]),
    (LEAP, sh(2028, 2, 29, 23, 59), [3]),
    (LEAP, sh(2028, 3, 1, 0, 0), [3]),
    (LEAP, sh(2028, 3, 1, 8, 0), [4]),
    (WEEKLY_LEAP, sh(2028, 3, 2, 7, 59), [1]),  # Thu 24 Feb + 7 days = Thu 2 Mar
    (WEEKLY_LEAP, sh(2028, 3, 2, 8, 0), [2]),
    (EVERY_3, sh(2028, 2, 29, 23, 59), [1]),
    (EVERY_3, sh(2028, 3, 1, 19, 59), [1]),
    (EVERY_3, sh(2028, 3, 1, 20, 0), [2]),  # 27 Feb + 3 days = 1 Mar in a leap year
    (EVERY_3, sh(2028, 3, 4, 20, 0), [1]),
    # day / night shifts: two handoffs a day
    (DAY_NIGHT, sh(2026, 3, 1, 19, 59), [1]),
    (DAY_NIGHT, sh(2026, 3, 1, 20, 0), [2]),
    (DAY_NIGHT, sh(2026, 3, 2, 0, 0), [2]),
    (DAY_NIGHT, sh(2026, 3, 2, 8, 0), [3]),
    (DAY_NIGHT, sh(2026, 3, 2, 20, 0), [1]),
    # until: the last slot is cut at 08:00 on the until day
    (UNTIL, sh(2026, 3, 3, 7, 59), [2]),
    (UNTIL, sh(2026, 3, 3, 8, 0), []),
])
def test_handoffs_at_boundary_minutes(roster, at, expected):
    assert who(roster, at) == expected
    assert who(roster, at.astimezone(UTC)) == expected  # the zone of `at` does not matter


def test_slot_shift_is_the_whole_slot_in_utc():
    [member] = on_call(DAILY_0800, "facial", sh(2026, 3, 2, 3, 0))
    assert member.shift == Shift("facial", 1, P, sh(2026, 3, 1, 8), sh(2026, 3, 2, 8))
    assert member.shift.start.tzinfo is UTC


def test_rotation_kinds():
    assert Rotation.daily("f", P, [1], date(2026, 1, 1)).kind == "daily"
    assert Rotation.weekly("f", P, [1], date(2026, 1, 1)).kind == "weekly"
    assert Rotation.every(3, "f", P, [1], date(2026, 1, 1)).kind == "custom"
    assert Rotation("f", P, (1,), date(2026, 1, 1), (time(8), time(20))).kind == "custom"


@pytest.mark.parametrize("kwargs", [
    dict(members=()),
    dict(every_days=0),
    dict(handoff_times=()),
    dict(handoff_times=(time(20), time(8))),
    dict(handoff_times=(time(8, 0, 30),)),
    dict(handoff_times=(time(8, tzinfo=SH),)),
    dict(until=date(2026, 3, 1)),
    dict(start=datetime(2026, 3, 1, 8)),
])
def test_rotation_rejects_bad_definitions(kwargs):
    base = dict(team="facial", role=P, members=(1, 2), start=date(2026, 3, 1))
    with pytest.raises(ValueError):
        Rotation(**{**base, **kwargs})


def test_naive_times_and_bad_windows_are_refused():
    with pytest.raises(ValueError):
        on_call(DAILY_0800, "facial", datetime(2026, 3, 2, 9))
    with pytest.raises(ValueError):
        shifts_between(DAILY_0800, "facial", datetime(2026, 3, 2), sh(2026, 3, 3))
    with pytest.raises(ValueError):
        shifts_between(DAILY_0800, "facial", sh(2026, 3, 3), sh(2026, 3, 3))
    with pytest.raises(ValueError):
        Override("facial", P, 1, datetime(2026, 3, 2), sh(2026, 3, 3))
    with pytest.raises(ValueError):
        Leave(1, sh(2026, 3, 3), sh(2026, 3, 2))


# --------------------------------------------------------------------------- daylight saving


def test_local_instant_skipped_and_repeated_wall_times():
    assert local_instant(date(2026, 3, 29), time(2, 30), BERLIN) == berlin(2026, 3, 29, 3, 0)
    assert local_instant(date(2026, 10, 25), time(2, 30), BERLIN) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert local_instant(date(2026, 3, 29), time(8), BERLIN) == datetime(2026, 3, 29, 6, tzinfo=UTC)
    assert local_instant(date(2026, 3, 29), time(8), SH) == datetime(2026, 3, 29, 0, tzinfo=UTC)


BERLIN_0800 = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 27))], tz="Europe/Berlin")


OCT_24 = (date(2026, 10, 24) - date(2026, 3, 27)).days


@pytest.mark.parametrize("at, expected", [
    (berlin(2026, 3, 28, 7, 59), [1]),
    (berlin(2026, 3, 28, 8, 0), [2]),  # CET
    (berlin(2026, 3, 29, 7, 59), [2]),  # CEST, 23 h later
    (berlin(2026, 3, 29, 8, 0), [1]),
    (berlin(2026, 10, 24, 8, 0), [OCT_24 % 2 + 1]),  # CEST
    (berlin(2026, 10, 25, 7, 59), [OCT_24 % 2 + 1]),  # CET, 25 h later
    (berlin(2026, 10, 25, 8, 0), [(OCT_24 + 1) % 2 + 1]),
])
def test_berlin_handoffs_stay_at_0800_local_across_daylight_saving(at, expected):
    assert who(BERLIN_0800, at) == expected


def test_berlin_slot_lengths_across_daylight_saving():
    spring = on_call(BERLIN_0800, "facial", berlin(2026, 3, 28, 12))[0].shift
    autumn = on_call(BERLIN_0800, "facial", berlin(2026, 10, 24, 12))[0].shift
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_berlin_handoff_inside_the_skipped_and_the_repeated_hour():
    r = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 28), at=time(2, 30))],
             tz="Europe/Berlin")
    # 29 Mar: 02:30 does not exist; the handoff is when the clock jumps to 03:00.
    assert who(r, berlin(2026, 3, 29, 1, 59)) == [1]
    assert who(r, berlin(2026, 3, 29, 3, 0)) == [2]
    r = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 10, 24), at=time(2, 30))],
             tz="Europe/Berlin")
    # 25 Oct: 02:30 shows twice; the handoff is at the first (CEST, 00:30 UTC).
    assert who(r, berlin(2026, 10, 25, 2, 29)) == [1]
    assert who(r, berlin(2026, 10, 25, 2, 30)) == [2]
    assert who(r, berlin(2026, 10, 25, 2, 30, fold=1)) == [2]


def test_unknown_time_zone_falls_back_to_shanghai():
    r = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1))], tz="Mars/Olympus")
    assert who(r, sh(2026, 3, 2, 7, 59)) == [1]
    assert who(r, sh(2026, 3, 2, 8, 0)) == [2]


# --------------------------------------------------------------------------- layers and shifts


def test_a_higher_layer_wins_for_its_role_where_it_has_a_slot():
    r = make(rotations=[
        Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
        Rotation.daily("facial", P, [7], date(2026, 3, 3), layer=1, until=date(2026, 3, 5)),
        Rotation.daily("facial", B, [5], date(2026, 3, 1)),
    ])
    assert roles(r, sh(2026, 3, 3, 7, 59)) == [(2, P), (5, B)]
    assert roles(r, sh(2026, 3, 3, 8, 0)) == [(7, P), (5, B)]  # backup untouched
    assert roles(r, sh(2026, 3, 5, 7, 59)) == [(7, P), (5, B)]
    assert roles(r, sh(2026, 3, 5, 8, 0)) == [(1, P), (5, B)]


def test_rotations_of_the_same_layer_add_up():
    r = make(rotations=[Rotation.daily("facial", P, [1], date(2026, 3, 1)),
                        Rotation.daily("facial", P, [2], date(2026, 3, 1), at=time(9))])
    assert who(r, sh(2026, 3, 2, 8, 30)) == [2, 1]  # same role: the earlier slot start first
    assert who(r, sh(2026, 3, 2, 9, 30)) == [1, 2]


def test_three_layers_the_highest_present_wins():
    r = make(rotations=[
        Rotation.daily("facial", P, [1], date(2026, 3, 1)),
        Rotation.daily("facial", P, [2], date(2026, 3, 2), layer=5, until=date(2026, 3, 4)),
        Rotation.daily("facial", P, [3], date(2026, 3, 3), layer=2, until=date(2026, 3, 6)),
    ])
    assert who(r, sh(2026, 3, 2, 12)) == [2]
    assert who(r, sh(2026, 3, 3, 12)) == [2]
    assert who(r, sh(2026, 3, 4, 12)) == [3]
    assert who(r, sh(2026, 3, 6, 12)) == [1]


def test_one_off_shifts_add_to_rotations_and_a_surgeon_appears_once():
    r = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
                        Rotation.daily("facial", A, [3], date(2026, 3, 1))],
             shifts=[Shift("facial", 4, P, sh(2026, 3, 2, 10), sh(2026, 3, 2, 12)),
                     Shift("facial", 3, B, sh(2026, 3, 2, 10), sh(2026, 3, 2, 12))])
    assert roles(r, sh(2026, 3, 2, 9, 59)) == [(2, P), (3, A)]
    assert roles(r, sh(2026, 3, 2, 10)) == [(2, P), (4, P), (3, B)]
    assert roles(r, sh(2026, 3, 2, 12)) == [(2, P), (3, A)]


# --------------------------------------------------------------------------- overrides


BASE = [Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
        Rotation.daily("facial", B, [3], date(2026, 3, 1))]


def test_a_role_wide_override_replaces_every_holder_of_that_role_half_open():
    r = make(rotations=BASE,
             shifts=[Shift("facial", 4, P, sh(2026, 3, 2), sh(2026, 3, 3))],
             overrides=[Override("facial", P, 9, sh(2026, 3, 2, 12), sh(2026, 3, 2, 14))])
    assert who(r, sh(2026, 3, 2, 12) - TICK) == [4, 2, 3]
    assert roles(r, sh(2026, 3, 2, 12)) == [(9, P), (3, B)]
    assert who(r, sh(2026, 3, 2, 13, 59)) == [9, 3]
    assert who(r, sh(2026, 3, 2, 14)) == [4, 2, 3]


def test_a_cover_replaces_only_the_named_surgeon_and_only_while_they_hold_the_role():
    r = make(rotations=BASE,
             shifts=[Shift("facial", 4, P, sh(2026, 3, 2), sh(2026, 3, 3))],
             overrides=[Override("facial", P, 9, sh(2026, 3, 2, 0), sh(2026, 3, 3, 0), replaces=1)])
    assert who(r, sh(2026, 3, 2, 7)) == [4, 9, 3]  # 9 stands in for 1; 4 untouched
    assert who(r, sh(2026, 3, 2, 8)) == [4, 2, 3]  # 1 is off from 08:00: the cover does nothing


def test_overrides_inside_overrides_the_later_created_wins():
    week = Override("facial", P, 7, sh(2026, 3, 2, 8), sh(2026, 3, 6, 8))
    afternoon = Override("facial", P, 8, sh(2026, 3, 4, 12), sh(2026, 3, 4, 18))
    later_inside = make(rotations=BASE, overrides=[week, afternoon])
    assert who(later_inside, sh(2026, 3, 4, 11, 59)) == [7, 3]
    assert who(later_inside, sh(2026, 3, 4, 12)) == [8, 3]
    assert who(later_inside, sh(2026, 3, 4, 18)) == [7, 3]
    # created the other way round: the week-long override hides the afternoon
    earlier_inside = make(rotations=BASE, overrides=[afternoon, week])
    assert who(earlier_inside, sh(2026, 3, 4, 12)) == [7, 3]


def test_covers_chain_in_creation_order():
    a_to_b = Override("facial", P, 5, sh(2026, 3, 2, 8), sh(2026, 3, 3, 8), replaces=2)
    b_to_c = Override("facial", P, 6, sh(2026, 3, 2, 12), sh(2026, 3, 2, 20), replaces=5)
    r = make(rotations=BASE, overrides=[a_to_b, b_to_c])
    assert who(r, sh(2026, 3, 2, 11)) == [5, 3]
    assert who(r, sh(2026, 3, 2, 12)) == [6, 3]
    assert who(r, sh(2026, 3, 2, 20)) == [5, 3]
    # created the other way round, 6's cover of 5 predates 5 holding anything
    r = make(rotations=BASE, overrides=[b_to_c, a_to_b])
    assert who(r, sh(2026, 3, 2, 12)) == [5, 3]


def test_override_on_an_empty_team_and_for_another_role():
    r = make(overrides=[Override("facial", H, 9, sh(2026, 3, 2), sh(2026, 3, 3)),
                        Override("facial", B, 8, sh(2026, 3, 2), sh(2026, 3, 3), replaces=1)])
    assert roles(r, sh(2026, 3, 2, 1)) == [(9, H)]  # a cover of nobody adds nobody


def test_an_override_for_an_unknown_surgeon_still_removes_whom_it_replaces():
    r = make(rotations=BASE, overrides=[Override("facial", P, 99, sh(2026, 3, 2), sh(2026, 3, 3), replaces=1)])
    assert who(r, sh(2026, 3, 2, 1)) == [3]


# --------------------------------------------------------------------------- leave


def test_leave_empties_the_slot_without_falling_through_to_a_lower_layer():
    r = make(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
                        Rotation.daily("facial", P, [7], date(2026, 3, 1), layer=1),
                        Rotation.daily("facial", B, [3], date(2026, 3, 1))],
             leave=[Leave(7, sh(2026, 3, 2, 10), sh(2026, 3, 2, 12))])
    assert who(r, sh(2026, 3, 2, 10) - TICK) == [7, 3]
    assert who(r, sh(2026, 3, 2, 10)) == [3]
    assert who(r, sh(2026, 3, 2, 12)) == [7, 3]
    [gap] = vacancies_between(r, "facial", sh(2026, 3, 2), sh(2026, 3, 3))
    assert (gap.surgeon_id, gap.role, gap.start, gap.end) == (7, P, sh(2026, 3, 2, 10), sh(2026, 3, 2, 12))


def test_leave_is_covered_by_an_override_and_never_overridden_by_one():
    leave = Leave(1, sh(2026, 3, 1, 8), sh(2026, 3, 2, 8))
    cover = Override("facial", P, 5, sh(2026, 3, 1, 8), sh(2026, 3, 2, 8), replaces=1)
    r = make(rotations=BASE, leave=[leave], overrides=[cover])
    assert who(r, sh(2026, 3, 1, 9)) == [5, 3]
    assert vacancies_between(r, "facial", sh(2026, 3, 1), sh(2026, 3, 3)) == []
    on_leave_cover = Override("facial", P, 1, sh(2026, 3, 2, 8), sh(2026, 3, 3, 8))
    r = make(rotations=BASE, leave=[Leave(1, sh(2026, 3, 2, 9), sh(2026, 3, 2, 10))],
             overrides=[on_leave_cover])
    assert who(r, sh(2026, 3, 2, 9)) == [3]
    assert who(r, sh(2026, 3, 2, 10)) == [1, 3]


def test_leave_applies_to_one_off_shifts_and_other_teams_alike():
    r = make(shifts=[Shift("facial", 1, P, sh(2026, 3, 2), sh(2026, 3, 3)),
                     Shift("replant", 1, B, sh(2026, 3, 2), sh(2026, 3, 3))],
             leave=[Leave(1, sh(2026, 3, 2, 6), sh(2026, 3, 2, 7))])
    assert who(r, sh(2026, 3, 2, 6)) == [] and who(r, sh(2026, 3, 2, 6), "replant") == []
    assert who(r, sh(2026, 3, 2, 7)) == [1] and who(r, sh(2026, 3, 2, 7), "replant") == [1]


# --------------------------------------------------------------------------- empty and unknown


def test_empty_and_unknown_teams():
    r = make(rotations=[Rotation.daily("ghost", P, [1], date(2026, 3, 1))],
             overrides=[Override("ghost", P, 1, sh(2026, 3, 1), sh(2026, 3, 9))])
    assert on_call(r, "facial", sh(2026, 3, 2)) == []
    assert on_call(r, "ghost", sh(2026, 3, 2)) == []
    assert shifts_between(r, "facial", sh(2026, 3, 1), sh(2026, 3, 9)) == []
    assert shifts_between(r, "ghost", sh(2026, 3, 1), sh(2026, 3, 9)) == []
    assert on_call(Roster(leave=(Leave(1, sh(2026, 3, 1), sh(2026, 3, 2)),)), "facial", sh(2026, 3, 1)) == []


def test_unknown_rotation_members_are_skipped():
    r = make(rotations=[Rotation.daily("facial", P, [1, 99], date(2026, 3, 1))])
    assert who(r, sh(2026, 3, 1, 9)) == [1]
    assert who(r, sh(2026, 3, 2, 9)) == []


# --------------------------------------------------------------------------- expansion


def test_shifts_between_cuts_a_slot_around_an_override_and_at_the_window():
    r = make(rotations=BASE[:1], overrides=[Override("facial", P, 9, sh(2026, 3, 2, 12), sh(2026, 3, 2, 14))])
    got = [(e.surgeon_id, e.start, e.end, e.source) for e in
           shifts_between(r, "facial", sh(2026, 3, 2, 6), sh(2026, 3, 3, 6))]
    assert got == [
        (1, sh(2026, 3, 2, 6), sh(2026, 3, 2, 8), Source.ROTATION),
        (2, sh(2026, 3, 2, 8), sh(2026, 3, 2, 12), Source.ROTATION),
        (9, sh(2026, 3, 2, 12), sh(2026, 3, 2, 14), Source.OVERRIDE),
        (2, sh(2026, 3, 2, 14), sh(2026, 3, 3, 6), Source.ROTATION),
    ]
    pieces = shifts_between(r, "facial", sh(2026, 3, 2, 6), sh(2026, 3, 3, 6))
    assert pieces[1].shift == pieces[3].shift == Shift("facial", 2, P, sh(2026, 3, 2, 8), sh(2026, 3, 3, 8))
    assert all(e.start.tzinfo is UTC for e in pieces)


def test_shifts_between_lists_every_role_a_surgeon_holds():
    r = make(rotations=[Rotation.daily("facial", P, [1], date(2026, 3, 1)),
                        Rotation.daily("facial", A, [1], date(2026, 3, 1))])
    pieces = shifts_between(r, "facial", sh(2026, 3, 2, 9), sh(2026, 3, 2, 10))
    assert {(e.surgeon_id, e.role) for e in pieces} == {(1, P), (1, A)}
    assert roles(r, sh(2026, 3, 2, 9)) == [(1, P)]


def test_lookup_and_the_chain_use_rotations_when_present():
    r = make(rotations=BASE, overrides=[Override("facial", B, 8, sh(2026, 3, 2), sh(2026, 3, 3))])
    at = sh(2026, 3, 2, 9)
    assert lookup.on_call(r, "facial", at) == on_call(r, "facial", at)
    assert [s.surgeon_id for s in build_chain(r, "facial", at).steps] == [2, 8]


# --------------------------------------------------------------------------- properties

ORIGIN = date(2026, 3, 26)  # Berlin changes clocks on 29 Mar 2026
SPAN_DAYS = 12
TIMES = [time(0, 0), time(2, 30), time(7, 59), time(8, 0), time(12, 0), time(20, 0), time(23, 59)]
members = st.lists(st.integers(1, 8), min_size=1, max_size=4)


@st.composite
def rotations(draw, team: str) -> Rotation:
    start = ORIGIN + timedelta(days=draw(st.integers(-4, 6)))
    until = draw(st.none() | st.integers(1, 10).map(lambda d: start + timedelta(days=d)))
    handoffs = tuple(sorted(draw(st.sets(st.sampled_from(TIMES), min_size=1, max_size=3))))
    return Rotation(team, draw(st.sampled_from(list(Role))), tuple(draw(members)), start, handoffs,
                    draw(st.sampled_from([1, 1, 2, 3, 7])), draw(st.integers(0, 2)), until)


def instants(tz: ZoneInfo):
    """Quarter hours, any minute, and handoff wall times (and a minute either side)."""
    base = datetime.combine(ORIGIN, time(0), tz).astimezone(UTC) - timedelta(days=3)
    quarters = st.integers(0, (SPAN_DAYS + 3) * 24 * 4).map(lambda q: base + timedelta(minutes=15 * q))
    minutes = st.integers(0, (SPAN_DAYS + 3) * 24 * 60).map(lambda m: base + timedelta(minutes=m))
    handoffs = st.builds(
        lambda d, t, nudge: (datetime.combine(ORIGIN + timedelta(days=d), t, tz)
                             + timedelta(minutes=nudge)).astimezone(UTC),
        st.integers(-3, SPAN_DAYS), st.sampled_from(TIMES), st.sampled_from([-1, 0, 0, 1]))
    return st.one_of(quarters, minutes, handoffs)


@st.composite
def rosters(draw, tz_name: str) -> Roster:
    tz = ZoneInfo(tz_name)
    teams = ("facial", "replant")
    when = instants(tz)

    def span(draw_):
        a = draw_(when)
        return a, a + timedelta(minutes=15 * draw_(st.integers(1, 4 * 24 * 3)))

    rots, shifts, overrides, leave = [], [], [], []
    for _ in range(draw(st.integers(0, 5))):
        rots.append(draw(rotations(draw(st.sampled_from(teams)))))
    for _ in range(draw(st.integers(0, 4))):
        a, b = span(draw)
        shifts.append(Shift(draw(st.sampled_from(teams)), draw(st.integers(1, 8)),
                            draw(st.sampled_from(list(Role))), a, b))
    for _ in range(draw(st.integers(0, 5))):
        a, b = span(draw)
        overrides.append(Override(draw(st.sampled_from(teams)), draw(st.sampled_from(list(Role))),
                                  draw(st.integers(1, 9)), a, b, draw(st.none() | st.integers(1, 8))))
    for _ in range(draw(st.integers(0, 3))):
        a, b = span(draw)
        leave.append(Leave(draw(st.integers(1, 8)), a, b))
    return Roster(
        teams={code: Team(code, code, code, tz=tz_name) for code in teams},
        surgeons={sid: surgeon(sid) for sid in range(1, 9)},  # 9 is unknown on purpose
        shifts=tuple(shifts), rotations=tuple(rots), overrides=tuple(overrides), leave=tuple(leave),
    )


def brute_force(roster: Roster, team: str, at: datetime, window: tuple[datetime, datetime]) -> list[OnCall]:
    """shifts_between over a window, then: the pieces covering `at`, best role per surgeon."""
    best: dict[int, EffectiveShift] = {}
    for piece in shifts_between(roster, team, *window):
        if piece.start <= at < piece.end:
            held = best.get(piece.surgeon_id)
            if held is None or piece.rank < held.rank:
                best[piece.surgeon_id] = piece
    return [OnCall(roster.surgeons[p.surgeon_id], p.role, p.shift)
            for p in sorted(best.values(), key=lambda p: p.rank)]


@pytest.mark.parametrize("tz_name", ["Asia/Shanghai", "Europe/Berlin"])
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_on_call_equals_brute_force_expansion(tz_name, data):
    roster = data.draw(rosters(tz_name))
    at = data.draw(instants(ZoneInfo(tz_name)))
    team = data.draw(st.sampled_from(["facial", "replant"]))
    day = at.replace(hour=0, minute=0)
    assert on_call(roster, team, at) == brute_force(roster, team, at, (day, day + timedelta(days=1)))
    before = data.draw(st.integers(0, 3000))
    after = data.draw(st.integers(1, 3000))
    window = (at - timedelta(minutes=before), at + timedelta(minutes=after))
    assert on_call(roster, team, at) == brute_force(roster, team, at, window)
    assert lookup.on_call(roster, team, at) == on_call(roster, team, at)


@pytest.mark.parametrize("tz_name", ["Asia/Shanghai", "Europe/Berlin"])
@settings(deadline=None)
@given(data=st.data())
def test_slot_lookup_matches_walking_the_slots_from_the_start(tz_name, data):
    tz = ZoneInfo(tz_name)
    rotation = data.draw(rotations("facial"))
    at = data.draw(instants(tz))
    clock = RotationClock(rotation, tz)
    expected = None
    k = 0
    while clock.slot_start(k) <= at and (clock.until is None or clock.slot_start(k) < clock.until):
        end = clock.slot_start(k + 1) if clock.until is None else min(clock.slot_start(k + 1), clock.until)
        if clock.slot_start(k) <= at < end:
            expected = (rotation.members[k % len(rotation.members)], clock.slot_start(k), end)
        k += 1
    got = clock.slot_at(at)
    assert (None if got is None else (got.surgeon_id, got.start, got.end)) == expected
    assert all(s.start < s.end for s in clock.slots_between(at, at + timedelta(days=2)))


legacy_shift = st.builds(
    lambda sid, role, start, length, team: Shift(team, sid, role, sh(2026, 3, 2) + timedelta(hours=start),
                                                 sh(2026, 3, 2) + timedelta(hours=start + length)),
    st.integers(1, 6), st.sampled_from(list(Role)), st.integers(-24, 48),
    st.integers(1, 36), st.sampled_from(["facial", "replant"]),
)


@given(st.lists(legacy_shift, max_size=30), st.integers(-30, 90))
def test_plain_shift_rosters_resolve_exactly_as_before(shifts, hour):
    r = make(shifts=shifts, surgeons=range(1, 5))  # 5 and 6 are unknown
    at = sh(2026, 3, 2) + timedelta(hours=hour)
    for team in ("facial", "replant", "nope"):
        assert on_call(r, team, at) == lookup.on_call(r, team, at)  # the old loop, no rotations
