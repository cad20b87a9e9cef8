"""The call desk in major-incident mode and with a block list: pure, the time passed in.

A facial call while facial is in incident mode goes to the team's app_queue
queue (every on-call surgeon rings at once), each member ring is an attempt of
the case, the first to press 1 is the one connected; after the queue only the
duty nurse and voicemail. A blocked number is answered with goodbye and rings
nobody, and a partner hospital's number is never treated as blocked.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

import pytest

from cases.lifecycle import Case, CaseError
from ivr.calls import CallDesk, CallEnd
from ivr.menu import load_menu
from network.incidents import Incident
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.escalation import AttemptOutcome as A
from routing.queue import PARTNER_PRIO, PUBLIC_PRIO

MENU = load_menu(Path(__file__).resolve().parents[2] / "ivr" / "menu.toml")
SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 12, 1, 16, 0, tzinfo=SH)
CALLER, PARTNER = "13800138000", "043188888888"
PRIMARY = Surgeon(1, "甲", "13700000101", Rank.ATTENDING)
BACKUP = Surgeon(2, "乙", "13700000102", Rank.RESIDENT)
REFERRAL = Surgeon(5, "戊", "13700000401", Rank.ATTENDING)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def roster() -> Roster:
    day = timedelta(days=1)
    return Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial", ring_s=20, repeats=0),
               "burns": Team("burns", "烧伤", "Burns"),
               "referral": Team("referral", "转诊转运", "Referral")},
        surgeons={x.id: x for x in (PRIMARY, BACKUP, REFERRAL)},
        shifts=(Shift("facial", 1, Role.PRIMARY, T0 - day, T0 + day),
                Shift("facial", 2, Role.BACKUP, T0 - day, T0 + day),
                Shift("referral", 5, Role.PRIMARY, T0 - day, T0 + day)))


@dataclass
class Source:
    snapshot: Roster = field(default_factory=roster)

    def roster(self) -> Roster:
        return self.snapshot

    def partner_numbers(self) -> Mapping[str, int]:
        return {PARTNER: 7}


@dataclass
class Network:
    rows: list[Incident] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)

    def incidents(self) -> Sequence[Incident]:
        return self.rows

    def blocked_numbers(self) -> frozenset[str]:
        return frozenset(self.blocked)


class Sink:
    def __init__(self) -> None:
        self.cases: list[tuple[Case, bool]] = []

    def submit(self, case: Case, final: bool = False) -> None:
        self.cases.append((copy.deepcopy(case), final))


def desk(network: Network | None) -> tuple[CallDesk, Sink]:
    sink = Sink()
    ids = iter(f"C-{n:04d}" for n in range(1, 100))
    return CallDesk(MENU, Source(), sink, new_id=lambda at: next(ids), network=network), sink


def on(team: str | None) -> Incident:
    return Incident(1, team, T0 - timedelta(minutes=5), "user:sup", note="pile-up")


def queued(network: Network, caller: str = CALLER, linkedid: str = "1.1", key: str = "1",
           team: str = "facial"):
    d, sink = desk(network)
    live = d.call_start(linkedid, "PJSIP/caller-1", caller, s(0))
    return d, sink, live, d.route(linkedid, team, key, s(5))


def test_incident_mode_sends_the_call_to_the_team_queue_with_the_public_priority():
    d, sink, live, instruction = queued(Network([on("facial")]))
    assert live.incident is True  # call_start: the dialplan announces the incident
    assert (instruction.action, instruction.target, instruction.priority) == (
        "queue", "hotline-facial", PUBLIC_PRIO)
    assert live.case.team == "facial" and live.case.attempts == []
    # Asterisk repeating the request gets the same queue, not a second one
    assert d.route("1.1", "facial", "1", s(6)) == instruction


def test_a_partner_hospital_queues_with_the_partner_priority():
    _, _, live, instruction = queued(Network([on(None)]), caller=PARTNER, key="partner",
                                     team="referral")
    assert (instruction.action, instruction.target, instruction.priority) == (
        "queue", "hotline-referral", PARTNER_PRIO)


def test_other_teams_and_switched_off_incidents_ring_one_by_one():
    d, _, live, instruction = queued(Network([on("referral")]))
    assert instruction.action == "dial" and instruction.target == PRIMARY.phone
    ended = Incident(1, "facial", T0 - timedelta(hours=1), "user:sup", T0 - timedelta(minutes=1), "user:sup")
    _, _, live, instruction = queued(Network([ended]))
    assert live.incident is False and instruction.action == "dial"
    _, _, live, instruction = queued(None)
    assert live.incident is False and instruction.action == "dial"


def test_a_team_with_nobody_on_call_is_not_queued_it_goes_to_the_nurse():
    _, _, _, instruction = queued(Network([on(None)]), key="3", team="burns")
    assert instruction.action == "dial" and instruction.target == MENU.duty_nurse_number


def test_every_member_ring_is_an_attempt_and_the_first_to_press_1_is_connected():
    d, sink, live, _ = queued(Network([on("facial")]))
    ring1 = d.queue_ring("1.1", PRIMARY.phone, s(6))
    ring2 = d.queue_ring("1.1", BACKUP.phone, s(6))
    assert (ring1.action, ring1.target, ring1.attempt, ring1.whisper) == (
        "dial", PRIMARY.phone, 1, "whisper_facial")
    assert (ring2.target, ring2.attempt) == (BACKUP.phone, 2)
    assert [(a.surgeon_id, a.role) for a in live.case.attempts] == [(1, "primary"), (2, "backup")]
    d.accepted("1.1", 2, s(12))
    # the queue hangs up the other member's leg: its ring ends cancelled
    d.queue_ring_ended("1.1", 1, "CANCEL", "", None, 7, s(12))
    d.queue_ring_ended("1.1", 2, "ANSWER", "1", 4, 7, s(60))  # the conversation ends
    case = live.case
    assert case.connected_surgeon_id == 2 and case.connected_seq == 2
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        (PRIMARY.phone, A.CANCELLED), (BACKUP.phone, A.ACCEPTED)]
    # a ring that starts after the connection rings nobody
    assert d.queue_ring("1.1", PRIMARY.phone, s(13)).action == "stop"
    ended = d.call_end("1.1", "PJSIP/caller-1", CALLER,
                       CallEnd(hangup_source="Local/13700000102@hotline-queue-member-00000002;2"),
                       s(61))
    assert ended.outcome == "connected" and ended.hangup_by == "surgeon"
    assert sink.cases[-1][1] is True


def test_pressing_1_just_after_another_surgeon_does_not_connect_twice():
    d, _, live, _ = queued(Network([on("facial")]))
    d.queue_ring("1.1", PRIMARY.phone, s(6))
    d.queue_ring("1.1", BACKUP.phone, s(6))
    d.queue_ring_ended("1.1", 1, "ANSWER", "1", 3, 8, s(10))
    d.queue_ring_ended("1.1", 2, "ANSWER", "1", 3, 8, s(10.5))
    assert live.case.connected_seq == 1
    assert live.case.attempts[1].outcome is A.CANCELLED


def test_declines_and_ring_outs_are_recorded_and_the_queue_rings_on():
    d, _, live, _ = queued(Network([on("facial")]))
    d.queue_ring("1.1", PRIMARY.phone, s(6))
    d.queue_ring("1.1", BACKUP.phone, s(6))
    d.queue_ring_ended("1.1", 1, "ANSWER", "2", 3, 9, s(15))
    d.queue_ring_ended("1.1", 2, "NOANSWER", "", None, 45, s(51))
    again = d.queue_ring("1.1", BACKUP.phone, s(53))  # app_queue's next round
    assert again.attempt == 3
    assert [a.outcome for a in live.case.attempts] == [A.DECLINED, A.NO_ANSWER, None]


def test_leaving_the_queue_goes_to_the_duty_nurse_then_voicemail():
    d, _, live, _ = queued(Network([on("facial")]))
    d.queue_ring("1.1", PRIMARY.phone, s(6))
    nurse = d.queue_left("1.1", "TIMEOUT", s(185))
    assert live.case.attempts[0].outcome is A.NO_ANSWER  # the queue hung its ring up
    assert (nurse.action, nurse.target, nurse.attempt, nurse.whisper) == (
        "dial", MENU.duty_nurse_number, 2, "whisper_nurse")
    after = d.attempt_ended("1.1", 2, "NOANSWER", "", None, 30, s(216))
    assert after.action == "voicemail"


def test_queue_requests_are_checked():
    d, _, _, _ = queued(Network([on("facial")]))
    with pytest.raises(CaseError):
        d.queue_left("1.1", "WHATEVER", s(9))
    with pytest.raises(CaseError):
        d.queue_ring_ended("1.1", 9, "CANCEL", "", None, None, s(9))
    plain, _, _, _ = queued(Network())
    assert plain.queue_ring("1.1", PRIMARY.phone, s(9)).action == "stop"  # not queued
    with pytest.raises(CaseError):
        plain.queue_left("1.1", "TIMEOUT", s(9))


def test_a_member_the_roster_no_longer_lists_is_still_recorded_honestly():
    d, _, live, _ = queued(Network([on("facial")]))
    ring = d.queue_ring("1.1", "13799999999", s(6))
    assert ring.action == "dial"
    attempt = live.case.attempts[0]
    assert (attempt.surgeon_id, attempt.name, attempt.role) == (None, "queue member", "queue")


def test_a_blocked_number_is_recorded_and_gets_no_route():
    d, sink = desk(Network(blocked={CALLER}))
    live = d.call_start("1.1", "PJSIP/caller-1", "+86 138 0013 8000", s(0))
    assert live.blocked is True
    assert [m.choice for m in live.case.menu] == ["blocked"]
    ended = d.call_end("1.1", "PJSIP/caller-1", CALLER, CallEnd(system_hangup=True), s(3))
    assert ended.outcome == "abandoned" and ended.hangup_by == "system" and ended.attempts == []
    assert sink.cases[-1][1] is True


def test_a_partner_hospital_number_is_never_blocked_even_if_listed():
    d, _ = desk(Network(blocked={PARTNER}))
    live = d.call_start("1.1", "PJSIP/caller-1", PARTNER, s(0))
    assert live.blocked is False and [m.choice for m in live.case.menu] == ["partner"]


def test_anonymous_and_other_callers_are_not_blocked():
    d, _ = desk(Network(blocked={CALLER}))
    assert d.call_start("1.1", "c", None, s(0)).blocked is False
    assert d.call_start("1.2", "c", "13800138001", s(0)).blocked is False


def test_a_ring_starting_after_the_caller_left_the_queue_rings_nobody():
    d, _, live, _ = queued(Network([on("facial")]))
    d.queue_left("1.1", "LEAVEEMPTY", s(30))
    assert d.queue_ring("1.1", PRIMARY.phone, s(30.1)).action == "stop"
    assert [a.kind for a in live.case.attempts] == ["nurse"]
    with pytest.raises(CaseError):
        d.queue_left("1.1", "TIMEOUT", s(31))  # left once only
