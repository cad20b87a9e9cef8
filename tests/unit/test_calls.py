"""The call desk: whole calls played with the time passed in, a roster built here, a recording sink.

No sockets, no clock: each request gets its `at`. The sink keeps deep copies of
what the desk handed it, so a test can read the case as it was at each step.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

import pytest

from cases.lifecycle import Case, CaseError
from ivr.calls import (
    CallDesk,
    CallEnd,
    Disagreement,
    Instruction,
    UnknownCall,
    attempt_result,
    new_case_id,
)
from ivr.menu import Menu, load_menu
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.callers import CallerClass
from routing.escalation import AttemptOutcome

MENU_FILE = Path(__file__).resolve().parents[2] / "ivr" / "menu.toml"
SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 19, 5, 12, tzinfo=SH)
LINKEDID = "1795633620.0"
CALLER_CHANNEL = "PJSIP/caller-00000001"
CALLER = "13800138000"
PARTNER_NUMBER = "043188888888"
PARTNER_ID = 7
NURSE_NUMBER = "13900000000"  # ivr/menu.toml
NURSE_RING_S = 30  # ivr/menu.toml

FACIAL_PRIMARY = Surgeon(1, "甲 facial primary", "13700000101", Rank.ATTENDING)
FACIAL_BACKUP = Surgeon(2, "乙 facial backup", "13700000102", Rank.RESIDENT)
FACIAL_OFF_DUTY = Surgeon(9, "己 facial yesterday", "13700000109", Rank.CHIEF)
REPLANT = Surgeon(3, "丙 replant", "13700000201", Rank.ATTENDING)
REFERRAL = Surgeon(5, "戊 referral", "13700000401", Rank.ATTENDING)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def build_roster() -> Roster:
    """facial: primary + backup on call, one surgeon whose shift ended; replant: one
    surgeon, two passes; burns: nobody on call; referral: one surgeon."""
    teams = {
        "facial": Team("facial", "颌面部创伤", "Facial trauma", ring_s=20, repeats=0),
        "replant": Team("replant", "断肢(指)再植", "Replantation", ring_s=25, repeats=1),
        "burns": Team("burns", "烧伤", "Burns", ring_s=25, repeats=0),
        "referral": Team("referral", "转诊转运", "Referral", ring_s=15, repeats=0),
    }
    surgeons = {x.id: x for x in (FACIAL_PRIMARY, FACIAL_BACKUP, FACIAL_OFF_DUTY, REPLANT, REFERRAL)}
    day = timedelta(days=1)
    shifts = (
        Shift("facial", FACIAL_BACKUP.id, Role.BACKUP, T0 - day, T0 + day),
        Shift("facial", FACIAL_PRIMARY.id, Role.PRIMARY, T0 - day, T0 + day),
        Shift("facial", FACIAL_OFF_DUTY.id, Role.PRIMARY, T0 - 2 * day, T0 - timedelta(minutes=1)),
        Shift("replant", REPLANT.id, Role.PRIMARY, T0 - day, T0 + day),
        Shift("referral", REFERRAL.id, Role.PRIMARY, T0 - day, T0 + day),
    )
    return Roster(teams=teams, surgeons=surgeons, shifts=shifts)


@dataclass
class FakeRoster:
    snapshot: Roster = field(default_factory=build_roster)
    partners: dict[str, int] = field(default_factory=lambda: {PARTNER_NUMBER: PARTNER_ID})
    reads: int = 0

    def roster(self) -> Roster:
        self.reads += 1
        return self.snapshot

    def partner_numbers(self) -> Mapping[str, int]:
        return self.partners


@dataclass
class Submitted:
    case: Case  # a deep copy, taken when the desk submitted it
    final: bool
    original: Case  # the object the desk passed in


class RecordingSink:
    """A CaseSink that keeps a deep copy of every snapshot, as the real writer does."""

    def __init__(self) -> None:
        self.submitted: list[Submitted] = []

    def submit(self, case: Case, final: bool = False) -> None:
        self.submitted.append(Submitted(copy.deepcopy(case), final, case))

    @property
    def last(self) -> Submitted:
        return self.submitted[-1]


class Ids:
    """Predictable case ids, so assertions can name them."""

    def __init__(self) -> None:
        self.n = 0
        self.asked_at: list[datetime] = []

    def __call__(self, at: datetime) -> str:
        self.n += 1
        self.asked_at.append(at)
        return f"C-{self.n:04d}"


@pytest.fixture(scope="module")
def menu() -> Menu:
    return load_menu(MENU_FILE)


@pytest.fixture
def roster() -> FakeRoster:
    return FakeRoster()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def desk(menu, roster, sink) -> CallDesk:
    return CallDesk(menu, roster, sink, new_id=Ids())


def start(desk: CallDesk, caller: str | None = CALLER, at: datetime = T0) -> Case:
    return desk.call_start(LINKEDID, CALLER_CHANNEL, caller, at).case


def dial(target: str, ring_s: int, attempt: int, whisper: str, partner: str = "") -> Instruction:
    return Instruction("dial", target=target, ring_s=ring_s, attempt=attempt, whisper=whisper,
                       partner=partner)


# --- whole calls ------------------------------------------------------------------------------

def test_primary_does_not_answer_backup_accepts_caller_hangs_up(desk, sink):
    case = start(desk)
    assert case.case_id == "C-0001" and case.started_at == T0
    assert case.caller.caller_class is CallerClass.PUBLIC and case.language == "zh"

    desk.menu_event(LINKEDID, "1", s(7))  # the key, recorded when pressed
    first = desk.route(LINKEDID, "facial", "1", s(8))  # after the consent prompt
    # ring order: primary before backup whatever the roster order; the off-duty surgeon never
    assert first == dial(FACIAL_PRIMARY.phone, 20, 1, "whisper_facial")

    second = desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 20, s(29))
    assert second == dial(FACIAL_BACKUP.phone, 20, 2, "whisper_facial")

    desk.accepted(LINKEDID, 2, s(40))
    assert desk.calls[LINKEDID].case.connected_seq == 2

    ended = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(
        hangup_source=CALLER_CHANNEL, dial_status="ANSWER", accepted="1", attempt=2,
        answered_s=250, dialed_s=261), s(301))

    assert ended is case
    assert LINKEDID not in desk.calls and desk.live_cases() == []
    assert ended.outcome == "connected"
    assert (ended.connected_at, ended.connected_seq, ended.connected_surgeon_id) == (s(40), 2, FACIAL_BACKUP.id)
    assert (ended.ended_at, ended.hangup_by, ended.team) == (s(301), "caller", "facial")
    assert [(m.at, m.choice, m.label) for m in ended.menu] == [(s(7), "1", "facial")]
    one, two = ended.attempts
    assert (one.seq, one.kind, one.surgeon_id, one.phone, one.started_at, one.ended_at) == (
        1, "chain", FACIAL_PRIMARY.id, FACIAL_PRIMARY.phone, s(8), s(29))
    assert (one.outcome, one.answered, one.ring_s) == (AttemptOutcome.NO_ANSWER, False, 20)
    assert (two.seq, two.surgeon_id, two.outcome, two.answered) == (
        2, FACIAL_BACKUP.id, AttemptOutcome.ACCEPTED, True)
    assert two.ended_at == s(40)  # the accept ended it; the call's end does not rewrite it

    finals = [x for x in sink.submitted if x.final]
    assert len(finals) == 1 and finals[0] is sink.last
    assert sink.last.case.outcome == "connected" and sink.last.case.revision == ended.revision


def test_surgeon_declines_with_2_and_the_next_one_is_rung(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    nxt = desk.attempt_ended(LINKEDID, 1, "ANSWER", "2", 5, 12, s(17))
    assert nxt == dial(FACIAL_BACKUP.phone, 20, 2, "whisper_facial")
    first = desk.calls[LINKEDID].case.attempts[0]
    assert (first.outcome, first.answered, first.ring_s) == (AttemptOutcome.DECLINED, True, 7)


def test_answered_without_a_key_is_a_no_answer_that_was_answered(desk):
    """A mobile voicemail box picks up and never presses 1: DIALSTATUS says ANSWER."""
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    nxt = desk.attempt_ended(LINKEDID, 1, "ANSWER", "0", 10, 18, s(23))
    assert nxt.action == "dial" and nxt.attempt == 2
    first = desk.calls[LINKEDID].case.attempts[0]
    assert (first.outcome, first.answered, first.ring_s) == (AttemptOutcome.NO_ANSWER, True, 8)
    assert desk.calls[LINKEDID].case.connected_seq is None


def test_chain_exhausted_then_nurse_then_voicemail(desk, sink):
    start(desk)
    assert desk.route(LINKEDID, "facial", "1", s(5)).attempt == 1
    assert desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 20, s(25)).attempt == 2
    nurse = desk.attempt_ended(LINKEDID, 2, "BUSY", "", None, 3, s(29))
    assert nurse == dial(NURSE_NUMBER, NURSE_RING_S, 3, "whisper_nurse")
    vm = desk.attempt_ended(LINKEDID, 3, "NOANSWER", "", None, 30, s(60))
    assert vm == Instruction("voicemail")
    assert sink.last.case.revision == desk.calls[LINKEDID].case.revision  # the voicemail step was stored

    path = "/var/recordings/C-0001-voicemail.wav"
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(
        hangup_source="", dial_status="NOANSWER", attempt=3, answered_s=0, dialed_s=30,
        system_hangup=True, voicemail_path=path), s(120))
    assert [(a.kind, a.outcome) for a in case.attempts] == [
        ("chain", AttemptOutcome.NO_ANSWER), ("chain", AttemptOutcome.BUSY),
        ("nurse", AttemptOutcome.NO_ANSWER)]
    assert case.attempts[2].surgeon_id is None and case.attempts[2].phone == NURSE_NUMBER
    assert case.attempts[2].ended_at == s(60)  # the later, repeated end of attempt 3 is ignored
    assert (case.outcome, case.voicemail_path, case.hangup_by) == ("voicemail", path, "system")


def test_a_team_with_two_passes_rings_its_surgeon_twice_before_the_nurse(desk):
    start(desk)
    assert desk.route(LINKEDID, "replant", "2", s(5)) == dial(REPLANT.phone, 25, 1, "whisper_replant")
    assert desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 25, s(30)) == dial(
        REPLANT.phone, 25, 2, "whisper_replant")
    assert desk.attempt_ended(LINKEDID, 2, "CHANUNAVAIL", "", None, 0, s(31)) == dial(
        NURSE_NUMBER, NURSE_RING_S, 3, "whisper_nurse")
    assert desk.calls[LINKEDID].case.attempts[1].outcome is AttemptOutcome.FAILED


def test_nurse_team_rings_the_nurse_at_once(desk):
    start(desk)
    desk.menu_event(LINKEDID, "0", s(3))
    first = desk.route(LINKEDID, "nurse", "0", s(4))
    assert first == dial(NURSE_NUMBER, NURSE_RING_S, 1, "whisper_nurse")
    desk.accepted(LINKEDID, 1, s(10))
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(
        hangup_source="PJSIP/surgeons-00000002", dial_status="ANSWER", accepted="1", attempt=1,
        answered_s=50, dialed_s=56), s(60))
    assert case.team == "nurse" and [(m.choice, m.label) for m in case.menu] == [("0", "nurse")]
    assert (case.outcome, case.hangup_by) == ("nurse", "surgeon")
    assert case.attempts[0].kind == "nurse"


def test_nurse_after_menu_retries_records_no_menu_choice(desk):
    start(desk)
    desk.menu_event(LINKEDID, "timeout", s(6))
    desk.menu_event(LINKEDID, "invalid", s(12))
    assert desk.route(LINKEDID, "nurse", "retries", s(14)).target == NURSE_NUMBER
    case = desk.calls[LINKEDID].case
    assert [(m.at, m.choice, m.label) for m in case.menu] == [
        (s(6), "timeout", "timeout"), (s(12), "invalid", "invalid")]


def test_team_with_nobody_on_call_goes_to_the_nurse_at_once(desk):
    start(desk)
    assert desk.route(LINKEDID, "burns", "3", s(5)) == dial(NURSE_NUMBER, NURSE_RING_S, 1, "whisper_nurse")
    assert desk.calls[LINKEDID].case.team == "burns"
    assert desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 30, s(36)) == Instruction("voicemail")


def test_the_chain_is_read_at_the_time_passed_in(desk):
    """At 19:04:30 the off-duty surgeon's shift still ran: he is rung first then."""
    start(desk, at=T0 - timedelta(minutes=2))
    first = desk.route(LINKEDID, "facial", "1", T0 - timedelta(seconds=90))
    assert first.target == FACIAL_OFF_DUTY.phone


def test_english_switch_is_recorded_and_changes_the_language(desk, sink):
    start(desk)
    desk.menu_event(LINKEDID, "english", s(3))
    case = desk.calls[LINKEDID].case
    assert case.language == "en" and [(m.choice, m.label) for m in case.menu] == [("9", "english")]
    assert sink.last.case.language == "en"


def test_partner_hospital_gets_the_fast_lane_with_whisper_and_partner_id(desk):
    case = start(desk, caller="+86 431 8888 8888")
    assert (case.caller.caller_class, case.caller.hospital_id, case.caller.number) == (
        CallerClass.PARTNER, PARTNER_ID, PARTNER_NUMBER)
    first = desk.route(LINKEDID, "referral", "partner", s(2))
    assert first == dial(REFERRAL.phone, 15, 1, "whisper_referral", partner=str(PARTNER_ID))
    # the nurse step of a partner's call still says who is calling
    nurse = desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 15, s(18))
    assert nurse == dial(NURSE_NUMBER, NURSE_RING_S, 2, "whisper_nurse", partner=str(PARTNER_ID))
    assert [(m.choice, m.label) for m in case.menu] == [("partner", "partner hospital fast lane")]


def test_public_caller_choosing_referral_is_no_partner(desk):
    start(desk)
    assert desk.route(LINKEDID, "referral", "4", s(5)).partner == ""


def test_repeated_call_start_returns_the_same_case_and_stores_nothing_new(desk, sink):
    first = desk.call_start(LINKEDID, CALLER_CHANNEL, CALLER, T0)
    count = len(sink.submitted)
    again = desk.call_start(LINKEDID, CALLER_CHANNEL, CALLER, s(1))
    assert again is first and len(sink.submitted) == count == 1


def test_repeated_route_request_does_not_start_a_second_attempt(desk, roster):
    start(desk)
    first = desk.route(LINKEDID, "facial", "1", s(5))
    again = desk.route(LINKEDID, "facial", "1", s(6))
    assert again == first
    case = desk.calls[LINKEDID].case
    assert len(case.attempts) == 1 and case.attempts[0].ended_at is None
    assert case.menu == [] and roster.reads == 1  # the chain stays frozen; route records no key


def test_repeated_route_with_a_one_step_chain_does_not_jump_to_the_nurse(desk):
    start(desk)
    first = desk.route(LINKEDID, "referral", "4", s(5))
    assert desk.route(LINKEDID, "referral", "4", s(6)) == first
    assert len(desk.calls[LINKEDID].case.attempts) == 1


def test_repeated_route_after_an_attempt_ended_repeats_the_current_dial(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    second = desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 20, s(25))
    assert desk.route(LINKEDID, "facial", "1", s(26)) == second
    assert len(desk.calls[LINKEDID].case.attempts) == 2


def test_repeated_route_after_acceptance_says_stop(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    desk.accepted(LINKEDID, 1, s(9))
    assert desk.route(LINKEDID, "facial", "1", s(10)) == Instruction("stop")
    assert desk.attempt_ended(LINKEDID, 1, "ANSWER", "1", 1, 4, s(200)) == Instruction("stop")


# --- the end of a call -----------------------------------------------------------------------

def test_call_end_for_an_unknown_call_opens_and_closes_a_fallback_case(desk, sink):
    """The service was down when the call started: the static fallback rang the nurse."""
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, "+8613800138000", CallEnd(
        hangup_source=CALLER_CHANNEL, dial_status="ANSWER", accepted="1", attempt=0,
        answered_s=40, dialed_s=46, fallback_used=True), s(50))
    assert (case.case_id, case.linkedid, case.started_at, case.ended_at) == ("C-0001", LINKEDID, s(50), s(50))
    assert case.caller.number == CALLER and case.caller.caller_class is CallerClass.PUBLIC
    assert (case.outcome, case.fallback, case.hangup_by, case.attempts) == ("fallback", True, "caller", [])
    assert [(x.final, x.case.outcome) for x in sink.submitted] == [(True, "fallback")]
    assert desk.calls == {}


def test_call_end_for_an_unknown_call_without_fallback_is_abandoned(desk, sink):
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, None, CallEnd(), s(3))
    assert (case.outcome, case.caller.caller_class, case.hangup_by) == ("abandoned", CallerClass.ANONYMOUS, None)
    assert sink.last.final


def test_caller_hangs_up_while_it_rings(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(
        hangup_source=CALLER_CHANNEL, dial_status="CANCEL", attempt=1, dialed_s=9), s(14))
    (attempt,) = case.attempts
    assert (attempt.outcome, attempt.answered, attempt.ring_s, attempt.ended_at) == (
        AttemptOutcome.CANCELLED, False, 9, s(14))
    assert (case.outcome, case.hangup_by) == ("abandoned", "caller")


def test_call_end_without_attempt_details_cancels_what_still_rings(desk):
    """AMI saw the channel go and the hangup handler never asked: nothing stays ringing."""
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    desk.hung_up(LINKEDID, s(12))
    assert LINKEDID not in desk.calls
    with pytest.raises(UnknownCall):
        desk.route(LINKEDID, "facial", "1", s(13))


def test_accepted_request_lost_call_end_connects_from_the_flag(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(
        hangup_source="PJSIP/surgeons-00000004", dial_status="ANSWER", accepted="1", attempt=1,
        answered_s=100, dialed_s=108), s(113))
    assert (case.outcome, case.connected_seq, case.connected_at, case.hangup_by) == (
        "connected", 1, s(113), "surgeon")


def test_bridge_seen_on_ami_connects_the_ringing_attempt(desk, sink):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    desk.bridged(LINKEDID, s(11))
    desk.bridged(LINKEDID, s(12))  # repeated event: no change
    case = desk.calls[LINKEDID].case
    assert (case.connected_seq, case.connected_at) == (1, s(11))
    desk.bridged("999.9", s(12))  # unknown call: ignored


@pytest.mark.parametrize(("source", "system", "expected"), [
    (CALLER_CHANNEL, False, "caller"),
    ("PJSIP/surgeons-0000000a", False, "surgeon"),
    ("", True, "system"),
    (CALLER_CHANNEL, True, "system"),  # our own Hangup() wins over the channel named
    ("", False, None),
    ("PJSIP/caller-00000009", False, None),  # another caller's channel: not this caller
    ("PJSIP/surgeons", False, None),
])
def test_hangup_by(desk, source, system, expected):
    start(desk)
    case = desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER,
                         CallEnd(hangup_source=source, system_hangup=system), s(30))
    assert case.hangup_by == expected


def test_hangup_by_is_not_caller_when_the_channel_is_unknown(desk):
    """An empty channel on both sides must not read as 'the caller hung up'."""
    desk.call_start(LINKEDID, "", CALLER, T0)
    assert desk.call_end(LINKEDID, "", CALLER, CallEnd(hangup_source=""), s(1)).hangup_by is None


# --- attempt_result: DIALSTATUS and the whisper's flag -----------------------------------------

NO, ACC, DEC, BUSY, FAIL, CANC = (
    AttemptOutcome.NO_ANSWER, AttemptOutcome.ACCEPTED, AttemptOutcome.DECLINED,
    AttemptOutcome.BUSY, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED,
)


@pytest.mark.parametrize(("dial_status", "accepted", "answered_s", "dialed_s", "expected"), [
    # no key pressed (flag empty): DIALSTATUS decides
    ("ANSWER", "", 10, 18, (NO, True, 8)),
    ("NOANSWER", "", None, 25, (NO, False, 25)),
    ("BUSY", "", None, 2, (BUSY, False, 2)),
    ("CANCEL", "", None, 9, (CANC, False, 9)),
    ("CONGESTION", "", None, 1, (FAIL, False, 1)),
    ("CHANUNAVAIL", "", None, 0, (FAIL, False, 0)),
    ("DONTCALL", "", None, 0, (FAIL, False, 0)),
    ("TORTURE", "", None, 0, (FAIL, False, 0)),
    ("INVALIDARGS", "", None, 0, (FAIL, False, 0)),
    ("", "", None, None, (NO, False, None)),  # Dial never returned a status
    # the whisper's flag wins over DIALSTATUS (a dropped surgeon leg still reads ANSWER)
    ("ANSWER", "1", 3, 9, (ACC, True, 6)),
    ("ANSWER", "2", 5, 12, (DEC, True, 7)),
    ("ANSWER", "0", 10, 18, (NO, True, 8)),
    ("NOANSWER", "0", None, 20, (NO, True, 20)),  # answered, then the leg timed out
    ("CANCEL", "0", None, 14, (CANC, True, 14)),  # caller gave up during the whisper
    ("CANCEL", "1", 2, 5, (ACC, True, 3)),
    # times: ring time is dialed minus answered, never negative
    ("ANSWER", "1", None, 7, (ACC, True, 7)),
    ("ANSWER", "1", 9, 5, (ACC, True, 0)),
    ("ANSWER", "1", 3, None, (ACC, True, None)),
])
def test_attempt_result(dial_status, accepted, answered_s, dialed_s, expected):
    assert attempt_result(dial_status, accepted, answered_s, dialed_s) == expected


# --- refused requests ------------------------------------------------------------------------

@pytest.mark.parametrize("team", ["cardiac", "FACIAL", "", "facial ", "nurse;x"])
def test_unknown_team_is_refused(desk, team):
    start(desk)
    with pytest.raises(CaseError, match="unknown team"):
        desk.route(LINKEDID, team, "1", s(5))
    assert desk.calls[LINKEDID].case.attempts == []


@pytest.mark.parametrize("key", ["10", "*", "#", "", "timeout", "invalid", "a"])
def test_unknown_menu_key_is_refused(desk, key):
    start(desk)
    with pytest.raises(CaseError, match="unknown menu key"):
        desk.route(LINKEDID, "facial", key, s(5))


@pytest.mark.parametrize("event", ["hangup", "9", "", "English", "partner"])
def test_unknown_menu_event_is_refused(desk, event):
    start(desk)
    with pytest.raises(CaseError, match="unknown menu event"):
        desk.menu_event(LINKEDID, event, s(5))
    assert desk.calls[LINKEDID].case.menu == []


def test_attempt_end_before_any_route_is_refused(desk):
    start(desk)
    with pytest.raises(CaseError):
        desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 20, s(5))


def test_accept_of_an_attempt_that_never_started_is_refused(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    with pytest.raises(CaseError):
        desk.accepted(LINKEDID, 2, s(6))
    assert desk.calls[LINKEDID].case.connected_seq is None


def test_attempt_end_for_an_unknown_seq_changes_nothing_recorded(desk):
    start(desk)
    desk.route(LINKEDID, "facial", "1", s(5))
    with pytest.raises(Disagreement):  # issue 18: refused, not answered with a next ring
        desk.attempt_ended(LINKEDID, 7, "BUSY", "", None, 1, s(6))
    assert desk.calls[LINKEDID].case.attempts[0].outcome is None


@pytest.mark.parametrize("request_", [
    lambda d: d.menu_event("1.1", "timeout", s(1)),
    lambda d: d.route("1.1", "facial", "1", s(1)),
    lambda d: d.attempt_ended("1.1", 1, "NOANSWER", "", None, 20, s(1)),
    lambda d: d.accepted("1.1", 1, s(1)),
])
def test_requests_for_an_unknown_call_raise_unknown_call(desk, sink, request_):
    start(desk)
    count = len(sink.submitted)
    with pytest.raises(UnknownCall):
        request_(desk)
    assert len(sink.submitted) == count


# --- snapshots and ids -----------------------------------------------------------------------

def test_every_snapshot_is_a_copy_that_later_changes_do_not_touch(desk, sink):
    start(desk)
    desk.menu_event(LINKEDID, "english", s(2))
    desk.route(LINKEDID, "facial", "1", s(5))
    desk.attempt_ended(LINKEDID, 1, "NOANSWER", "", None, 20, s(25))
    desk.accepted(LINKEDID, 2, s(30))
    live = desk.calls[LINKEDID].case
    taken = copy.deepcopy([x.case for x in sink.submitted])
    desk.call_end(LINKEDID, CALLER_CHANNEL, CALLER, CallEnd(hangup_source=CALLER_CHANNEL), s(90))
    live.menu.append(live.menu[0])  # and someone mangles the desk's case afterwards
    live.attempts.clear()
    live.team = "burns"

    kept = [x.case for x in sink.submitted[:len(taken)]]
    assert kept == taken
    assert all(x.case is not x.original for x in sink.submitted)
    assert all(x.original is live for x in sink.submitted)
    revisions = [x.case.revision for x in sink.submitted]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert sink.submitted[0].case.attempts == [] and sink.submitted[0].case.revision == 1
    assert [x.final for x in sink.submitted].count(True) == 1 and sink.last.final


CASE_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$", re.ASCII)


@pytest.mark.parametrize(("at", "prefix"), [
    (datetime(2026, 11, 25, 11, 5, 12, tzinfo=timezone.utc), "20261125-190512-"),
    (datetime(2026, 11, 25, 17, 30, 0, tzinfo=timezone.utc), "20261126-013000-"),  # next day in Shanghai
    (datetime(2026, 12, 31, 23, 59, 59, tzinfo=SH), "20261231-235959-"),
    (datetime(2027, 1, 1, 0, 0, 0, tzinfo=ZoneInfo("America/New_York")), "20270101-130000-"),
])
def test_new_case_id_is_the_local_shanghai_time_plus_randomness(at, prefix):
    case_id = new_case_id(at)
    assert CASE_ID.fullmatch(case_id) and case_id.startswith(prefix)


def test_new_case_ids_differ_within_one_second():
    ids = {new_case_id(T0) for _ in range(50)}
    assert len(ids) > 45


def test_the_desk_asks_for_an_id_with_the_call_time(menu, roster, sink):
    ids = Ids()
    desk = CallDesk(menu, roster, sink, new_id=ids)
    desk.call_start(LINKEDID, CALLER_CHANNEL, CALLER, T0)
    assert ids.asked_at == [T0]
    default = CallDesk(menu, roster, RecordingSink())
    assert CASE_ID.fullmatch(default.call_start(LINKEDID, CALLER_CHANNEL, CALLER, T0).case.case_id)


def test_a_second_caller_reaches_the_free_surgeon_first(desk):
    """Two callers for the same team at once: the second starts with the backup."""
    start(desk)
    first = desk.route(LINKEDID, "facial", "1", s(5))
    assert first.target == FACIAL_PRIMARY.phone
    other = "1795633620.7"
    desk.call_start(other, "PJSIP/caller-00000009", "13900139000", s(6))
    second = desk.route(other, "facial", "1", s(7))
    assert second.target == FACIAL_BACKUP.phone
    # the primary is rung for the second caller too, after the free one
    assert desk.attempt_ended(other, 1, "NOANSWER", "", None, 20, s(30)).target == FACIAL_PRIMARY.phone


def test_after_an_ami_gap_calls_without_channels_are_closed(desk, sink):
    from hotline.service import close_vanished_calls
    from ivr.ami import Message

    start(desk)
    other = "1795633620.7"
    desk.call_start(other, "PJSIP/caller-00000009", "13900139000", s(1))
    still_up = [Message([("Event", "CoreShowChannel"), ("Uniqueid", other), ("Linkedid", other)])]
    assert close_vanished_calls(desk, still_up, s(60)) == [LINKEDID]
    assert list(desk.calls) == [other]
    closed = sink.last.case
    assert closed.linkedid == LINKEDID and closed.ended_at == s(60) and sink.last.final
