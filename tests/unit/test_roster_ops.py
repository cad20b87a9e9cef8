"""Swaps and give-aways: the state machine, who may do what, and what the roster becomes."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from oncall.model import Rank, Role, Roster, Surgeon, Team
from oncall.roster_ops import (
    AlreadyOffered,
    AuditAction,
    Conflict,
    Expired,
    InvalidTransition,
    NotCounterpart,
    NotDepartmentHead,
    NotHeld,
    OnCallElsewhere,
    OnLeave,
    OwnTrade,
    RosterOpError,
    TradeKind,
    TradeStatus,
    UnknownSurgeon,
    UnknownTeam,
    UnknownTrade,
    approve,
    decline,
    department_heads,
    offer_shift,
    request_swap,
    take,
)
from oncall.rotation import Leave, Override, Rotation, on_call, vacancies_between

SH = ZoneInfo("Asia/Shanghai")
P, B, H = Role.PRIMARY, Role.BACKUP, Role.DEPARTMENT_HEAD
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=SH)


def sh(mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, tzinfo=SH)


def slot(d: int) -> tuple[datetime, datetime]:
    """The 24 h slot that starts at 08:00 on 2026-03-d."""
    return sh(3, d, 8), sh(3, d + 1, 8)


def roster(*, leave=()) -> Roster:
    # facial: primary 1,2,3 daily (1 on the 1st, 2 on the 2nd, 3 on the 3rd, 1 on the 4th ...),
    # backup 4,5; department head 9 (on call); swaps need approval.
    # replant: primary 11,12; backup 13,14; head 19; no approval needed.
    # burns: primary 21,22; head on call 29, but the named department head is 30.
    teams = {
        "facial": Team("facial", "颌面部创伤", "Facial", requires_approval=True),
        "replant": Team("replant", "断肢(指)再植", "Replantation"),
        "burns": Team("burns", "烧伤", "Burns", requires_approval=True, department_head=30),
    }
    start = date(2026, 3, 1)
    rotations = (
        Rotation.daily("facial", P, [1, 2, 3], start), Rotation.daily("facial", B, [4, 5], start),
        Rotation.weekly("facial", H, [9], start),
        Rotation.daily("replant", P, [11, 12], start), Rotation.daily("replant", B, [13, 14], start),
        Rotation.weekly("replant", H, [19], start),
        Rotation.daily("burns", P, [21, 22], start), Rotation.weekly("burns", H, [29], start),
    )
    return Roster(teams=teams,
                  surgeons={i: Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in range(1, 41)},
                  rotations=rotations, leave=tuple(leave))


def primary(r: Roster, team: str, at: datetime) -> int:
    return next(m.surgeon.id for m in on_call(r, team, at) if m.role is P)


def offer(r: Roster, by: int, team: str, d: int, role: Role = P, at: datetime = NOW):
    start, end = slot(d)
    return offer_shift(r, by=by, team=team, role=role, start=start, end=end, at=at)


# --------------------------------------------------------------------------- give-away


def test_give_away_without_approval_is_approved_on_take_and_audited():
    r0 = roster()
    assert primary(r0, "replant", sh(3, 3, 9)) == 11
    r1, offered = offer(r0, 11, "replant", 3)
    assert offered.who == 11 and offered.when == NOW and offered.action is AuditAction.OFFER_SHIFT
    assert offered.before is None
    assert offered.after.status is TradeStatus.REQUESTED and offered.after.kind is TradeKind.GIVE_AWAY
    assert primary(r1, "replant", sh(3, 3, 9)) == 11  # an offer changes nobody's time

    later = NOW + timedelta(hours=1)
    r2, taken = take(r1, offered.trade_id, by=15, at=later)
    assert (taken.who, taken.when, taken.action) == (15, later, AuditAction.TAKE)
    assert taken.before == offered.after
    assert taken.after.status is TradeStatus.APPROVED and taken.after.decided_by is None
    cover = Override("replant", P, 15, *slot(3), replaces=11, note="trade 1")
    assert taken.after.overrides == (cover,) and r2.overrides == (cover,)
    assert primary(r2, "replant", sh(3, 3, 9)) == 15
    assert primary(r2, "replant", sh(3, 4, 8)) == 12
    # purity: the earlier snapshots are unchanged
    assert r0.trades == () and r1.overrides == () and primary(r1, "replant", sh(3, 3, 9)) == 11


def test_give_away_with_approval_waits_for_the_department_head():
    r1, offered = offer(roster(), 3, "facial", 3)
    r2, taken = take(r1, offered.trade_id, by=6, at=NOW)
    assert taken.after.status is TradeStatus.TAKEN and taken.after.taker == 6
    assert r2.overrides == () and primary(r2, "facial", sh(3, 3, 9)) == 3
    assert department_heads(r2, "facial", NOW) == {9}
    r3, approved = approve(r2, offered.trade_id, by=9, at=NOW)
    assert approved.action is AuditAction.APPROVE and approved.before == taken.after
    assert approved.after.status is TradeStatus.APPROVED and approved.after.decided_by == 9
    assert primary(r3, "facial", sh(3, 3, 9)) == 6
    assert [t.status for t in r3.trades] == [TradeStatus.APPROVED]


def test_only_the_department_head_of_that_team_approves():
    r, offered = offer(roster(), 3, "facial", 3)
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    for wrong in (4, 3, 6, 19):  # backup, requester, taker, another team's head
        with pytest.raises(NotDepartmentHead):
            approve(r, offered.trade_id, by=wrong, at=NOW)
    # A named department head replaces "whoever is on call as department head".
    r, offered = offer(roster(), 21, "burns", 3)
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    with pytest.raises(NotDepartmentHead):
        approve(r, offered.trade_id, by=29, at=NOW)
    r, approved = approve(r, offered.trade_id, by=30, at=NOW)
    assert approved.after.status is TradeStatus.APPROVED


def test_the_department_head_declines_and_nothing_changes():
    r, offered = offer(roster(), 3, "facial", 3)
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    r, declined = decline(r, offered.trade_id, by=9, at=NOW, note="不同意")
    assert declined.action is AuditAction.DECLINE and declined.after.status is TradeStatus.DECLINED
    assert declined.after.decided_by == 9 and declined.after.note == "不同意"
    assert r.overrides == () and primary(r, "facial", sh(3, 3, 9)) == 3
    with pytest.raises(InvalidTransition):
        approve(r, offered.trade_id, by=9, at=NOW)
    with pytest.raises(InvalidTransition):
        take(r, offered.trade_id, by=7, at=NOW)
    with pytest.raises(InvalidTransition):
        decline(r, offered.trade_id, by=9, at=NOW)


def test_invalid_transitions():
    r, offered = offer(roster(), 3, "facial", 3)
    with pytest.raises(InvalidTransition):
        approve(r, offered.trade_id, by=9, at=NOW)  # requested, not taken
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    with pytest.raises(InvalidTransition):
        take(r, offered.trade_id, by=7, at=NOW)  # already taken
    r, _ = approve(r, offered.trade_id, by=9, at=NOW)
    for op in (take, approve, decline):
        with pytest.raises(InvalidTransition):
            op(r, offered.trade_id, by=9 if op is not take else 7, at=NOW)


def test_a_surgeon_cannot_take_their_own_offer():
    r, offered = offer(roster(), 11, "replant", 3)
    with pytest.raises(OwnTrade):
        take(r, offered.trade_id, by=11, at=NOW)


def test_a_surgeon_cannot_take_time_overlapping_their_on_call_in_another_team():
    r, offered = offer(roster(), 3, "facial", 3)
    with pytest.raises(OnCallElsewhere):
        take(r, offered.trade_id, by=11, at=NOW)  # replant primary on the 3rd
    # partial overlap is enough: 12 is replant primary from 08:00 on the 4th
    start, end = sh(3, 3, 20), sh(3, 4, 8)
    r, offered = offer_shift(roster(), by=3, team="facial", role=P, start=start, end=end, at=NOW)
    take(r, offered.trade_id, by=12, at=NOW)  # 12 is off until 08:00 on the 4th: fine
    start, end = sh(3, 4, 8), sh(3, 4, 9)
    r, offered = offer_shift(roster(), by=1, team="facial", role=P, start=start, end=end, at=NOW)
    with pytest.raises(OnCallElsewhere):
        take(r, offered.trade_id, by=12, at=NOW)


def test_a_surgeon_on_leave_cannot_take():
    r, offered = offer(roster(leave=[Leave(6, sh(3, 4, 7), sh(3, 4, 12))]), 3, "facial", 3)
    with pytest.raises(OnLeave):
        take(r, offered.trade_id, by=6, at=NOW)


# --------------------------------------------------------------------------- swap


def test_swap_with_approval_exchanges_the_two_shifts():
    (s4, e4), (s5, e5) = slot(4), slot(5)  # 1 on the 4th, 2 on the 5th
    r, asked = request_swap(roster(), by=1, team="facial", role=P, start=s4, end=e4,
                            with_surgeon=2, their_start=s5, their_end=e5, at=NOW)
    assert asked.action is AuditAction.REQUEST_SWAP and asked.after.kind is TradeKind.SWAP
    assert asked.after.counterpart == 2 and asked.after.counter_role is P
    with pytest.raises(NotCounterpart):
        take(r, asked.trade_id, by=3, at=NOW)
    r, taken = take(r, asked.trade_id, by=2, at=NOW)
    assert taken.after.status is TradeStatus.TAKEN
    r, approved = approve(r, asked.trade_id, by=9, at=NOW)
    assert primary(r, "facial", sh(3, 4, 9)) == 2
    assert primary(r, "facial", sh(3, 5, 9)) == 1
    assert primary(r, "facial", sh(3, 6, 9)) == 3  # the rest of the rotation is untouched
    assert len(approved.after.overrides) == 2


def test_swap_without_approval_across_roles_is_applied_on_take():
    (s3, e3), (s4, e4) = slot(3), slot(4)  # replant: 11 primary on the 3rd, 14 backup on the 4th
    r, asked = request_swap(roster(), by=11, team="replant", role=P, start=s3, end=e3,
                            with_surgeon=14, their_role=B, their_start=s4, their_end=e4, at=NOW)
    r, taken = take(r, asked.trade_id, by=14, at=NOW)
    assert taken.after.status is TradeStatus.APPROVED
    assert [(m.surgeon.id, m.role) for m in on_call(r, "replant", sh(3, 3, 9))] == [(14, P), (13, B), (19, H)]
    assert [(m.surgeon.id, m.role) for m in on_call(r, "replant", sh(3, 4, 9))] == [(12, P), (11, B), (19, H)]


def test_the_named_surgeon_or_the_head_may_decline_a_requested_swap():
    (s4, e4), (s5, e5) = slot(4), slot(5)
    r, asked = request_swap(roster(), by=1, team="facial", role=P, start=s4, end=e4,
                            with_surgeon=2, their_start=s5, their_end=e5, at=NOW)
    with pytest.raises(NotDepartmentHead):
        decline(r, asked.trade_id, by=3, at=NOW)
    _, by_named = decline(r, asked.trade_id, by=2, at=NOW)
    _, by_head = decline(r, asked.trade_id, by=9, at=NOW)
    assert by_named.after.status is by_head.after.status is TradeStatus.DECLINED


def test_swap_checks_both_sides():
    (s4, e4), (s5, e5) = slot(4), slot(5)
    with pytest.raises(NotHeld):  # 3 does not hold the 5th
        request_swap(roster(), by=1, team="facial", role=P, start=s4, end=e4,
                     with_surgeon=3, their_start=s5, their_end=e5, at=NOW)
    with pytest.raises(OwnTrade):
        request_swap(roster(), by=1, team="facial", role=P, start=s4, end=e4,
                     with_surgeon=1, their_start=s5, their_end=e5, at=NOW)
    with pytest.raises(Conflict):
        request_swap(roster(), by=1, team="facial", role=P, start=s4, end=e4,
                     with_surgeon=2, their_start=s4 - timedelta(hours=1), their_end=e4, at=NOW)
    # the requester must be free at the time they take over: 1 on leave on the 5th
    r, asked = request_swap(roster(leave=[Leave(1, sh(3, 5, 12), sh(3, 5, 13))]), by=1, team="facial",
                            role=P, start=s4, end=e4, with_surgeon=2, their_start=s5, their_end=e5, at=NOW)
    with pytest.raises(OnLeave):
        take(r, asked.trade_id, by=2, at=NOW)


# --------------------------------------------------------------------------- validity


def test_only_time_a_surgeon_holds_can_be_offered():
    with pytest.raises(NotHeld):
        offer(roster(), 2, "facial", 3)  # the 3rd is 3's
    with pytest.raises(NotHeld):
        offer(roster(), 3, "facial", 3, role=B)
    with pytest.raises(NotHeld):  # 3 holds from 08:00 only
        offer_shift(roster(), by=3, team="facial", role=P, start=sh(3, 3, 6), end=sh(3, 3, 10), at=NOW)
    r, _ = offer_shift(roster(), by=3, team="facial", role=P, start=sh(3, 3, 12), end=sh(3, 3, 14), at=NOW)
    assert len(r.trades) == 1


def test_a_trade_gone_stale_is_refused_at_approval():
    r, offered = offer(roster(), 3, "facial", 3)
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    moved = replace(r, overrides=(Override("facial", P, 7, sh(3, 3, 20), sh(3, 3, 22)),))
    with pytest.raises(NotHeld):
        approve(moved, offered.trade_id, by=9, at=NOW)


def test_time_already_over_and_approval_that_never_rewrites_the_past():
    with pytest.raises(Expired):
        offer(roster(), 1, "facial", 1, at=sh(3, 2, 8))
    r, offered = offer(roster(), 3, "facial", 3)
    r, _ = take(r, offered.trade_id, by=6, at=NOW)
    late = sh(3, 3, 15)
    r2, approved = approve(r, offered.trade_id, by=9, at=late)
    assert approved.after.overrides[0].start == late
    assert primary(r2, "facial", sh(3, 3, 14)) == 3 and primary(r2, "facial", sh(3, 3, 15)) == 6
    with pytest.raises(Expired):
        approve(r, offered.trade_id, by=9, at=sh(3, 4, 8))


def test_the_same_time_cannot_be_offered_twice_while_open():
    r, first = offer(roster(), 3, "facial", 3)
    with pytest.raises(AlreadyOffered):
        offer_shift(r, by=3, team="facial", role=P, start=sh(3, 3, 12), end=sh(3, 3, 13), at=NOW)
    r, _ = take(r, first.trade_id, by=6, at=NOW)
    r, _ = decline(r, first.trade_id, by=9, at=NOW)
    r, second = offer(r, 3, "facial", 3)
    assert second.trade_id == 2


def test_unknown_names_and_naive_times():
    r, offered = offer(roster(), 11, "replant", 3)
    with pytest.raises(UnknownTrade):
        take(r, 99, by=15, at=NOW)
    with pytest.raises(UnknownSurgeon):
        take(r, offered.trade_id, by=99, at=NOW)
    with pytest.raises(UnknownTeam):
        offer(roster(), 11, "ghost", 3)
    with pytest.raises(ValueError):
        take(r, offered.trade_id, by=15, at=datetime(2026, 3, 1, 9))
    assert issubclass(UnknownTrade, RosterOpError) and issubclass(RosterOpError, ValueError)


# --------------------------------------------------------------------------- composition


def test_a_taken_shift_can_be_given_away_again_and_the_covers_chain():
    r, first = offer(roster(), 11, "replant", 3)
    r, _ = take(r, first.trade_id, by=15, at=NOW)
    r, second = offer(r, 15, "replant", 3)
    r, _ = take(r, second.trade_id, by=16, at=NOW)
    assert primary(r, "replant", sh(3, 3, 9)) == 16
    assert [o.surgeon_id for o in r.overrides] == [15, 16]
    assert [t.id for t in r.trades] == [1, 2]


def test_leave_is_covered_by_giving_the_emptied_slot_away():
    r = roster(leave=[Leave(12, sh(3, 4, 8), sh(3, 5, 8))])
    assert [m.role for m in on_call(r, "replant", sh(3, 4, 9))] == [B, H]  # 12's slot is empty
    r, offered = offer(r, 12, "replant", 4)
    r, _ = take(r, offered.trade_id, by=17, at=NOW)
    assert primary(r, "replant", sh(3, 4, 9)) == 17
    assert vacancies_between(r, "replant", sh(3, 4), sh(3, 6)) == []
