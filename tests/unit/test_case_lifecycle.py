"""The case record of one call: transitions, derived outcome, timeline."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cases.lifecycle import (
    MENU_CHOICES,
    Case,
    CaseError,
    MenuEvent,
    end_attempt,
    mark_connected,
    mark_ended,
    mark_fallback,
    open_case,
    record_menu,
    routing_attempts,
    set_language,
    set_recording,
    set_team,
    set_voicemail,
    start_attempt,
    timeline,
)
from routing.callers import CallerClass, classify
from routing.escalation import AttemptOutcome, ChainStep, Dial, EscalationChain, Voicemail, next_decision

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)
BACKUP = ChainStep(102, "李明", "13800000102", "backup", 25)
NURSE = ChainStep(None, "值班护士", "13800009999", "nurse", 30)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def case() -> Case:
    return open_case("C-20260302-0001", "1772431200.17", classify("13800000001", {}), T0)


def test_a_connected_call(case):
    record_menu(case, s(5), "1", "颌面部创伤")
    set_team(case, s(5), "facial")
    start_attempt(case, s(6), 1, "chain", PRIMARY)
    end_attempt(case, s(31), 1, AttemptOutcome.NO_ANSWER)
    start_attempt(case, s(32), 2, "chain", BACKUP)
    end_attempt(case, s(40), 2, "accepted", ring_s=6)
    assert case.outcome == "in-progress"
    mark_connected(case, s(40), 2)
    set_recording(case, s(40), "2026/03/02/C-20260302-0001.wav")
    mark_ended(case, s(300), "caller")
    set_recording(case, s(301), "2026/03/02/C-20260302-0001.wav", 260)

    assert case.outcome == "connected"
    assert (case.connected_at, case.connected_surgeon_id, case.connected_seq) == (s(40), 102, 2)
    assert case.menu == [MenuEvent(s(5), "1", "颌面部创伤")]
    first, second = case.attempts
    assert (first.outcome, first.ring_s, first.answered, first.ended_at) == (
        AttemptOutcome.NO_ANSWER, 25, False, s(31))
    assert (second.outcome, second.ring_s, second.answered) == (AttemptOutcome.ACCEPTED, 6, True)
    assert (case.recording_path, case.recording_s) == ("2026/03/02/C-20260302-0001.wav", 260)
    assert [kind for _, kind, _ in timeline(case)] == [
        "started", "menu", "dial", "dial-end", "dial", "dial-end", "connected", "ended"]


def test_the_duty_nurse_answers(case):
    start_attempt(case, s(1), 1, "nurse", NURSE)
    mark_connected(case, s(10), 1)  # an open attempt is ended as accepted
    mark_ended(case, s(60), "surgeon")
    assert case.outcome == "nurse"
    assert case.attempts[0].outcome is AttemptOutcome.ACCEPTED and case.attempts[0].answered
    assert case.connected_surgeon_id is None


def test_voicemail(case):
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    end_attempt(case, s(26), 1, "no-answer")
    set_voicemail(case, s(30), "vm/C-20260302-0001.wav")
    mark_ended(case, s(90), "caller")
    assert case.outcome == "voicemail"
    assert case.voicemail_at == s(30)
    with pytest.raises(CaseError):
        set_voicemail(case, s(91), "vm/other.wav")
    set_voicemail(case, s(91), "vm/C-20260302-0001.wav")  # the same again: no-op
    assert case.voicemail_at == s(30)


def test_abandoned(case):
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    mark_ended(case, s(10), "caller")
    assert case.outcome == "abandoned"
    end_attempt(case, s(11), 1, "no-answer")  # the surgeon's leg ends after the caller's
    assert case.attempts[0].outcome is AttemptOutcome.NO_ANSWER
    assert case.outcome == "abandoned"


def test_fallback_is_set_explicitly_and_wins(case):
    mark_fallback(case, s(1))
    assert case.outcome == "fallback"
    mark_ended(case, s(60), "system")
    assert case.outcome == "fallback"


def test_in_progress_until_ended(case):
    assert case.outcome == "in-progress"


def test_ending_an_attempt_twice_keeps_the_first(case):
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    end_attempt(case, s(10), 1, "declined")
    again = end_attempt(case, s(20), 1, "no-answer", ring_s=19)
    assert (again.outcome, again.ended_at, again.ring_s, again.answered) == (
        AttemptOutcome.DECLINED, s(10), 9, True)


def test_ending_the_case_twice_keeps_the_first_time_and_fills_gaps(case):
    mark_ended(case, s(60))
    assert case.hangup_by is None
    mark_ended(case, s(70), "caller")
    mark_ended(case, s(80), "system")
    assert (case.ended_at, case.hangup_by) == (s(60), "caller")


def test_revision_counts_changes_only(case):
    assert case.revision == 1
    mark_ended(case, s(60), "caller")
    assert case.revision == 2
    mark_ended(case, s(61), "caller")
    mark_ended(case, s(62))
    assert case.revision == 2


def test_attempts_are_numbered_in_order(case):
    with pytest.raises(CaseError):
        start_attempt(case, s(1), 2, "chain", PRIMARY)
    first = start_attempt(case, s(1), 1, "chain", PRIMARY)
    assert start_attempt(case, s(2), 1, "chain", PRIMARY) is first  # a retried request
    with pytest.raises(CaseError):
        start_attempt(case, s(2), 1, "chain", BACKUP)
    with pytest.raises(CaseError):
        start_attempt(case, s(2), 2, "other", BACKUP)  # type: ignore[arg-type]
    with pytest.raises(CaseError):
        end_attempt(case, s(3), 7, "no-answer")
    with pytest.raises(CaseError):
        end_attempt(case, s(3), 1, "hung-up")


def test_no_dialling_after_connect_or_end(case):
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    mark_connected(case, s(5), 1)
    with pytest.raises(CaseError):
        start_attempt(case, s(6), 2, "chain", BACKUP)
    with pytest.raises(CaseError):
        set_team(case, s(6), "burns")
    with pytest.raises(CaseError):
        set_voicemail(case, s(6), "vm/x.wav")
    mark_ended(case, s(60), "caller")
    with pytest.raises(CaseError):
        record_menu(case, s(61), "1", "颌面部创伤")


def test_connecting_checks_the_attempt(case):
    with pytest.raises(CaseError):
        mark_connected(case, s(1), 1)
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    end_attempt(case, s(5), 1, "declined")
    with pytest.raises(CaseError):
        mark_connected(case, s(5), 1)
    start_attempt(case, s(6), 2, "chain", BACKUP)
    mark_connected(case, s(9), 2)
    mark_connected(case, s(10), 2)  # repeated: no-op
    assert case.connected_at == s(9)
    with pytest.raises(CaseError):
        mark_connected(case, s(10), 1)


def test_no_connect_after_end_or_voicemail(case):
    start_attempt(case, s(1), 1, "chain", PRIMARY)
    set_voicemail(case, s(30), "vm/x.wav")
    with pytest.raises(CaseError):
        mark_connected(case, s(31), 1)
    mark_ended(case, s(40), "caller")
    with pytest.raises(CaseError):
        mark_connected(case, s(41), 1)


@pytest.mark.parametrize(
    ("case_id", "linkedid"),
    [("", "1.1"), ("a b", "1.1"), ("x" * 65, "1.1"), ("ok", "1.1;DROP"), ("ok", "../x"), ("ok", "１")],
)
def test_bad_ids_are_refused(case_id, linkedid):
    with pytest.raises(CaseError):
        open_case(case_id, linkedid, classify(None, {}), T0)


def test_times_must_be_aware_and_values_known(case):
    with pytest.raises(CaseError):
        open_case("c", "1.1", classify(None, {}), datetime(2026, 3, 2, 14))
    with pytest.raises(CaseError):
        mark_ended(case, datetime(2026, 3, 2, 14))
    with pytest.raises(CaseError):
        open_case("c", "1.1", classify(None, {}), T0, language="fr")
    with pytest.raises(CaseError):
        record_menu(case, s(1), "13#", "nothing")
    with pytest.raises(CaseError):
        record_menu(case, s(1), "1", "x" * 129)
    with pytest.raises(CaseError):
        mark_ended(case, s(1), "nobody")  # type: ignore[arg-type]
    with pytest.raises(CaseError):
        set_team(case, s(1), "facial; Dial(PJSIP/x)")
    assert case.revision == 1


@pytest.mark.parametrize("choice", sorted(MENU_CHOICES))
def test_every_menu_choice(case, choice):
    assert {"1", "2", "3", "4", "0", "9", "timeout", "invalid"} <= MENU_CHOICES
    record_menu(case, s(1), choice, "label")
    assert case.menu[-1].choice == choice


def test_language(case):
    set_language(case, s(2), "en")
    assert case.language == "en"
    with pytest.raises(CaseError):
        set_language(case, s(2), "de")


def test_recording_path_is_set_once(case):
    set_recording(case, s(1), "a.wav", 10)
    set_recording(case, s(2), "a.wav", 99)
    assert case.recording_s == 10
    with pytest.raises(CaseError):
        set_recording(case, s(3), "b.wav")
    with pytest.raises(CaseError):
        set_recording(Case("c", "l", case.caller, T0), s(3), "b.wav", -1)


def test_timeline_escapes_hostile_caller_ids_and_is_sorted():
    hostile = "13800000001\r\nFAKE: entry\x00"
    case = open_case("c1", "1.1", classify(hostile, {}), T0)
    assert case.caller.caller_class is CallerClass.INVALID
    start_attempt(case, s(10), 1, "chain", PRIMARY)
    record_menu(case, s(5), "1", "颌面部创伤")  # arrives late, sorted in place
    mark_ended(case, s(20), "caller")
    entries = timeline(case)
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert [e.kind for e in entries] == ["started", "menu", "dial", "ended"]
    for entry in entries:
        assert not {"\r", "\n", "\x00"} & set(entry.detail)
    assert "\\r\\nFAKE" in entries[0].detail


def test_case_attempts_drive_next_decision(case):
    chain = EscalationChain("facial", (PRIMARY, BACKUP), 0)
    at = 0.0
    while isinstance(decision := next_decision(chain, routing_attempts(case), NURSE), Dial):
        start_attempt(case, s(at), decision.seq, decision.kind, decision.step)
        end_attempt(case, s(at + 25), decision.seq, "no-answer")
        at += 26
    assert decision == Voicemail()
    assert [(a.seq, a.kind, a.phone) for a in case.attempts] == [
        (1, "chain", PRIMARY.phone), (2, "chain", BACKUP.phone), (3, "nurse", NURSE.phone)]


def test_absorb_end_completes_the_case_a_restarted_service_lost():
    from datetime import datetime, timedelta, timezone

    from cases import lifecycle
    from routing.callers import classify
    from routing.escalation import AttemptOutcome, ChainStep

    t0 = datetime(2026, 11, 25, 19, 0, tzinfo=timezone.utc)
    caller = classify("13800138000", {})
    stored = lifecycle.open_case("C-1", "1795633620.0", caller, t0)
    lifecycle.set_team(stored, t0, "facial")
    lifecycle.start_attempt(stored, t0 + timedelta(seconds=5), 1, "chain",
                            ChainStep(1, "甲", "13700000101", "primary", 20))
    late = lifecycle.open_case("C-2", "1795633620.0", caller, t0 + timedelta(seconds=90))
    lifecycle.mark_fallback(late, t0 + timedelta(seconds=90))
    lifecycle.mark_ended(late, t0 + timedelta(seconds=90), "caller")

    assert lifecycle.absorb_end(stored, late) is True
    assert stored.ended_at == t0 + timedelta(seconds=90) and stored.hangup_by == "caller"
    assert stored.fallback and stored.attempts[0].outcome is AttemptOutcome.CANCELLED
    assert lifecycle.absorb_end(stored, late) is False  # idempotent
