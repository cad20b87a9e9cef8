"""Callback tasks (network/callbacks.py): which cases make one, when due, whose, and its states."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cases.lifecycle import (
    end_attempt,
    mark_connected,
    mark_ended,
    mark_fallback,
    open_case,
    record_menu,
    set_team,
    set_voicemail,
    start_attempt,
)
from network import callbacks as cb
from network.callbacks import (
    MAX_ATTEMPTS,
    AlreadyPlacing,
    CallbackError,
    CallbackReason,
    CallbackStatus,
    CallbackTask,
    NoSurgeon,
    NotPlacing,
    NumberUnknown,
    PlacementOutcome,
    TaskClosed,
)
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.callers import classify
from routing.escalation import ChainStep

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call(caller: str | None = "13912345678", team: str | None = "facial", **kw):
    case = open_case("C-1", "1772431200.17", classify(caller, {}), T0, **kw)
    if team is not None:
        record_menu(case, s(5), "1", team)
        set_team(case, s(5), team)
    return case


ROSTER = Roster(
    teams={"facial": Team("facial", "颌面部创伤", "Facial")},
    surgeons={101: Surgeon(101, "王建国", "13800000101", Rank.ATTENDING),
              102: Surgeon(102, "李明", "13800000102", Rank.RESIDENT)},
    shifts=(Shift("facial", 102, Role.BACKUP, T0 - timedelta(hours=1), T0 + timedelta(hours=2)),
            Shift("facial", 101, Role.PRIMARY, T0 - timedelta(hours=1), T0 + timedelta(minutes=1))),
)


# --------------------------------------------------------------------------- which cases


def test_a_voicemail_makes_a_task_as_soon_as_it_is_recorded_due_at_once():
    case = call()
    start_attempt(case, s(6), 1, "chain", PRIMARY)
    end_attempt(case, s(31), 1, "no-answer")
    set_voicemail(case, s(40), "/rec/C-1-voicemail.wav")
    plan = cb.plan_callback(case, ROSTER)
    assert plan == cb.CallbackPlan("C-1", CallbackReason.VOICEMAIL, s(40), "13912345678",
                                   "facial", 101)
    mark_ended(case, s(70), "system")
    assert cb.plan_callback(case, ROSTER).due_at == s(40)


def test_hanging_up_while_ringing_is_abandoned_due_after_five_minutes():
    case = call()
    start_attempt(case, s(6), 1, "chain", PRIMARY)
    assert cb.callback_reason(case) is None  # still ringing: not yet
    end_attempt(case, s(12), 1, "cancelled")
    mark_ended(case, s(12), "caller")
    plan = cb.plan_callback(case, ROSTER)
    assert (plan.reason, plan.due_at) == (CallbackReason.ABANDONED, s(12) + timedelta(minutes=5))


def test_an_unknown_hang_up_side_after_choosing_a_team_is_abandoned_too():
    case = call()
    mark_ended(case, s(8), None)  # e.g. closed from AMI: nobody said who hung up
    assert cb.callback_reason(case) is CallbackReason.ABANDONED


def test_call_me_back_in_the_menu_is_requested_due_at_the_end_without_owner():
    case = call(team=None)
    record_menu(case, s(4), "8", cb.REQUESTED_LABEL)
    assert cb.callback_reason(case) is None  # the call is not over yet
    mark_ended(case, s(9), "system")
    plan = cb.plan_callback(case, ROSTER)
    assert (plan.reason, plan.due_at, plan.team, plan.owner_surgeon_id) == (
        CallbackReason.REQUESTED, s(9), None, None)


@pytest.mark.parametrize("how", ["connected", "menu-only", "system-ended", "fallback",
                                 "callback-case"])
def test_cases_that_need_no_callback(how):
    case = call(team=None if how == "menu-only" else "facial",
                linked_case_id="C-0" if how == "callback-case" else None)
    if how == "connected":
        start_attempt(case, s(6), 1, "chain", PRIMARY)
        end_attempt(case, s(10), 1, "accepted")
        mark_connected(case, s(10), 1)
    if how == "fallback":
        mark_fallback(case, s(7))
    mark_ended(case, s(60), "system" if how == "system-ended" else "caller")
    assert cb.callback_reason(case) is None and cb.plan_callback(case, ROSTER) is None


def test_an_anonymous_caller_gets_a_task_that_says_the_number_is_unknown():
    case = call(caller=None)
    mark_ended(case, s(20), "caller")
    plan = cb.plan_callback(case, ROSTER)
    assert plan is not None and plan.number is None


def test_the_owner_is_the_primary_on_call_at_that_time_or_nobody():
    assert cb.owner_at(ROSTER, "facial", s(30)) == 101
    assert cb.owner_at(ROSTER, "facial", s(120)) is None  # primary's shift ended; backup only
    assert cb.owner_at(ROSTER, "burns", s(30)) is None
    assert cb.owner_at(ROSTER, None, s(30)) is None
    assert cb.plan_callback(mark(call(), s(120)), ROSTER).owner_surgeon_id is None


def mark(case, at):
    mark_ended(case, at, "caller")
    return case


# --------------------------------------------------------------------------- the state machine


def task(**kw) -> CallbackTask:
    values = dict(id=7, case_id="C-1", reason=CallbackReason.VOICEMAIL, due_at=s(40),
                  status=CallbackStatus.OPEN, created_at=s(41), number="13912345678",
                  team="facial", owner_surgeon_id=101)
    values.update(kw)
    return CallbackTask(**values)


def test_request_start_connected_done():
    placing = cb.request_placement(task(), s(100), "user:sup")
    assert (placing.status, placing.attempts, placing.placed_at, placing.placed_by,
            placing.owner_surgeon_id) == (CallbackStatus.PLACING, 1, s(100), "user:sup", 101)
    placed = cb.start_placing(placing, s(101))
    assert (placed.status, placed.placed_at) == (CallbackStatus.PLACED, s(101))
    done = cb.record_result(placed, s(200), PlacementOutcome.CONNECTED, "C-2")
    assert (done.status, done.closed_at, done.closed_by, done.callback_case_id) == (
        CallbackStatus.DONE, s(200), "service", "C-2")
    assert "回拨已接通" in done.note


def test_a_surgeon_who_places_it_is_rung_and_becomes_the_owner():
    placing = cb.request_placement(task(owner_surgeon_id=None), s(100), "user:doc2", surgeon_id=102)
    assert placing.owner_surgeon_id == 102


def test_a_failed_placement_reopens_the_task_with_a_note_then_fails_after_max_attempts():
    current = task()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        current = cb.start_placing(cb.request_placement(current, s(100 * attempt), "user:sup"),
                                   s(100 * attempt + 1))
        current = cb.record_result(current, s(100 * attempt + 30), PlacementOutcome.CALLER_NO_ANSWER)
        assert current.attempts == attempt and current.note.startswith("来电者未接听")
        expected = CallbackStatus.FAILED if attempt == MAX_ATTEMPTS else CallbackStatus.OPEN
        assert current.status is expected
    # failed still can be placed by hand, or closed
    assert cb.request_placement(current, s(900), "user:sup").status is CallbackStatus.PLACING


def test_typed_refusals():
    with pytest.raises(NumberUnknown):
        cb.request_placement(task(number=None), s(1), "user:sup")
    with pytest.raises(NoSurgeon):
        cb.request_placement(task(owner_surgeon_id=None), s(1), "user:sup")
    placing = cb.request_placement(task(), s(1), "user:sup")
    with pytest.raises(AlreadyPlacing):
        cb.request_placement(placing, s(2), "user:head")
    with pytest.raises(AlreadyPlacing):
        cb.close(placing, s(2), "user:sup", "reached by mobile")
    with pytest.raises(NotPlacing):
        cb.start_placing(task(), s(2))
    with pytest.raises(NotPlacing):
        cb.record_result(task(), s(2), PlacementOutcome.CONNECTED)
    closed = cb.close(task(), s(3), "user:sup", "reached by mobile")
    assert (closed.status, closed.note, closed.closed_by) == (CallbackStatus.DONE,
                                                              "reached by mobile", "user:sup")
    for change in (lambda t: cb.request_placement(t, s(4), "x"), lambda t: cb.assign(t, 102),
                   lambda t: cb.close(t, s(4), "x", "again")):
        with pytest.raises(TaskClosed):
            change(closed)
    with pytest.raises(CallbackError):
        cb.close(task(), s(3), "user:sup", "   ")
    with pytest.raises(CallbackError):
        cb.close(task(), s(3), "user:sup", "x" * (cb.NOTE_MAX + 1))
    assert cb.close(task(), s(3), "user:sup", "duplicate", cancelled=True).status \
        is CallbackStatus.CANCELLED
    with pytest.raises(ValueError):
        cb.request_placement(task(), datetime(2026, 3, 2, 14, 0), "user:sup")  # naive


def test_a_request_nobody_took_in_time_expires():
    placing = cb.request_placement(task(), s(0), "user:sup")
    assert not cb.request_expired(placing, s(0) + cb.REQUEST_TTL)
    assert cb.request_expired(placing, s(1) + cb.REQUEST_TTL)
    expired = cb.record_result(placing, s(200), PlacementOutcome.EXPIRED)
    assert expired.status is CallbackStatus.OPEN and "服务未运行" in expired.note


def test_overdue_and_placeable():
    assert task().overdue(s(40)) and not task().overdue(s(39))
    assert not replace(task(), status=CallbackStatus.DONE).overdue(s(100))
    assert task().placeable and not task(number=None).placeable
    assert not task(status=CallbackStatus.PLACED).placeable


# --------------------------------------------------------------------------- Asterisk's words


@pytest.mark.parametrize("reason, outcome", [
    ("3", PlacementOutcome.SURGEON_NO_ANSWER), ("1", PlacementOutcome.SURGEON_NO_ANSWER),
    ("5", PlacementOutcome.SURGEON_BUSY), ("8", PlacementOutcome.FAILED),
    ("0", PlacementOutcome.SURGEON_NO_ANSWER), ("", PlacementOutcome.FAILED),
    ("99", PlacementOutcome.FAILED)])
def test_originate_failure_reasons(reason, outcome):
    assert cb.originate_failure(reason) is outcome


@pytest.mark.parametrize("stage, status, outcome", [
    ("dialing", "ANSWER", PlacementOutcome.CONNECTED),
    ("dialing", "NOANSWER", PlacementOutcome.CALLER_NO_ANSWER),
    ("dialing", "CANCEL", PlacementOutcome.CALLER_NO_ANSWER),
    ("dialing", "BUSY", PlacementOutcome.CALLER_BUSY),
    ("dialing", "CHANUNAVAIL", PlacementOutcome.FAILED),
    ("answered", "", PlacementOutcome.SURGEON_NO_KEY),
    ("no-key", "", PlacementOutcome.SURGEON_NO_KEY)])
def test_callback_end_outcomes(stage, status, outcome):
    assert cb.callback_end(stage, status) is outcome


def test_reconciliation_leaves_a_callbacks_own_case_alone():
    from cases.reconcile import Directory, reconcile_call

    callback = call(linked_case_id="C-0")
    mark_ended(callback, s(60), "caller")
    result = reconcile_call(callback.linkedid, [], [], callback, Directory("13900000000"), s(3600))
    assert (result.status, result.case, result.note) == ("unchanged", None, "a callback's own case")


def test_the_owner_cannot_change_while_a_placement_is_requested_or_under_way():
    """Review of issue 6: 'assign to me' between the click on 回拨 and the service taking
    the request would make the service ring another surgeon than the one who clicked
    (CallbackStore.take reads the owner before its transaction), and during a placement
    it would hand the task to someone who is not on the call."""
    placing = cb.request_placement(task(), s(1), "user:doc1", surgeon_id=101)
    placed = cb.start_placing(placing, s(2))
    for busy in (placing, placed):
        with pytest.raises(AlreadyPlacing):
            cb.assign(busy, 102)
    assert cb.assign(task(), 102).owner_surgeon_id == 102
    failed = replace(task(), status=CallbackStatus.FAILED)
    assert cb.assign(failed, 102).owner_surgeon_id == 102


@pytest.mark.parametrize("number", ["110", "120", "96608", "12345", "0085212345678",
                                    "001415555121", "4008123456", "1234567890123", "13912345"])
def test_the_service_never_dials_a_short_special_or_foreign_number_back(number):
    # A forged caller-ID that presses 8 must not make the hotline call 110,
    # a premium-rate line or a number abroad on the surgeons' trunk.
    assert not cb.dialable(number)
    with pytest.raises(cb.NotDialable):
        cb.request_placement(task(number=number), s(1), "user:sup")


@pytest.mark.parametrize("number", ["13912345678", "19912345678", "043188888888", "01012345678",
                                    "0431888888"])
def test_domestic_mobiles_and_landlines_are_placed(number):
    assert cb.dialable(number)
    assert cb.request_placement(task(number=number), s(1), "user:sup").status is CallbackStatus.PLACING
