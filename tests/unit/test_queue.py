"""Queue priority and ordering (routing.queue): the values the dialplan hands app_queue, and its rule."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.callers import CallerClass
from routing.queue import (PARTNER_PRIO, PUBLIC_PRIO, Waiting, join_position, member_interface,
                           member_phone, queue_members, queue_name, queue_order, queue_priority)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def test_partner_hospitals_rank_above_everyone_else():
    assert queue_priority(CallerClass.PARTNER) == PARTNER_PRIO > PUBLIC_PRIO
    # Anonymous and unreadable caller IDs wait with the public, not behind it.
    for cls in (CallerClass.PUBLIC, CallerClass.ANONYMOUS, CallerClass.INVALID):
        assert queue_priority(cls) == PUBLIC_PRIO


def test_queue_names_and_member_interfaces_are_strict():
    assert queue_name("facial") == "hotline-facial"
    assert member_interface("13700000101") == "Local/13700000101@hotline-queue-member/n"
    assert member_phone(member_interface("13700000101")) == "13700000101"
    assert member_phone("PJSIP/13700000101@surgeons") is None
    assert member_phone("Local/137&PJSIP/x@hotline-queue-member/n") is None
    for bad in ("Facial", "a-b", "", "x;y"):
        with pytest.raises(ValueError):
            queue_name(bad)
    for bad in ("12", "137000001O1", "1370&PJSIP/trunk/001", "１３７00000101"):
        with pytest.raises(ValueError):
            member_interface(bad)


def w(key: str, prio: int, second: int) -> Waiting:
    return Waiting(key, prio, T0 + timedelta(seconds=second))


def test_a_partner_joins_ahead_of_every_public_caller_and_behind_earlier_partners():
    waiting = [w("p1", PARTNER_PRIO, 0), w("a", PUBLIC_PRIO, 1), w("b", PUBLIC_PRIO, 2)]
    assert join_position(waiting, PARTNER_PRIO) == 2
    assert join_position(waiting, PUBLIC_PRIO) == 4
    assert join_position([], PUBLIC_PRIO) == 1
    # Observed on the real app_queue too (test_incidents_live): ahead even of the head caller.
    assert join_position([w("a", PUBLIC_PRIO, 0)], PARTNER_PRIO) == 1


def test_queue_order_is_priority_then_arrival():
    callers = [w("a", PUBLIC_PRIO, 0), w("p", PARTNER_PRIO, 5), w("b", PUBLIC_PRIO, 3),
               w("q", PARTNER_PRIO, 1)]
    assert [c.key for c in queue_order(callers)] == ["q", "p", "a", "b"]


arrivals = st.lists(st.sampled_from([PUBLIC_PRIO, PARTNER_PRIO]), max_size=30)


@given(arrivals)
def test_joining_one_by_one_gives_the_queue_order(priorities):
    """Inserting callers as app_queue does, in arrival order, is the same as sorting them
    by priority then arrival: the two statements of the rule agree."""
    queue: list[Waiting] = []
    everyone = []
    for second, prio in enumerate(priorities):
        caller = w(f"c{second}", prio, second)
        everyone.append(caller)
        queue.insert(join_position(queue, prio) - 1, caller)
    assert queue == queue_order(everyone)


@given(arrivals)
def test_no_public_caller_ever_waits_ahead_of_a_partner_and_arrival_order_holds(priorities):
    ordered = queue_order(w(f"c{i}", p, i) for i, p in enumerate(priorities))
    prios = [c.priority for c in ordered]
    assert prios == sorted(prios, reverse=True)
    for prio in set(prios):
        same = [c.joined for c in ordered if c.priority == prio]
        assert same == sorted(same)


def test_members_are_every_surgeon_on_call_in_all_roles():
    team = Team("facial", "颌面部创伤", "Facial trauma")
    surgeons = {1: Surgeon(1, "甲", "13700000101", Rank.ATTENDING),
                2: Surgeon(2, "乙", "13700000102", Rank.RESIDENT),
                3: Surgeon(3, "丙", "13700000103", Rank.CHIEF),
                4: Surgeon(4, "丁 yesterday", "13700000104", Rank.CHIEF),
                5: Surgeon(5, "bad phone", "1370&x", Rank.CHIEF)}
    day = (T0 - timedelta(hours=1), T0 + timedelta(hours=8))
    shifts = (Shift("facial", 1, Role.PRIMARY, *day), Shift("facial", 2, Role.BACKUP, *day),
              Shift("facial", 3, Role.DEPARTMENT_HEAD, *day),
              Shift("facial", 4, Role.PRIMARY, T0 - timedelta(days=1), T0 - timedelta(hours=1)),
              Shift("facial", 5, Role.ATTENDING, *day))
    roster = Roster(teams={"facial": team}, surgeons=surgeons, shifts=shifts)
    members = queue_members(roster, "facial", T0)
    assert [(m.surgeon_id, m.role) for m in members.values()] == [
        (1, "primary"), (2, "backup"), (3, "department_head")]
    assert set(members) == {member_interface(p) for p in ("13700000101", "13700000102", "13700000103")}
    assert queue_members(roster, "burns", T0) == {}
