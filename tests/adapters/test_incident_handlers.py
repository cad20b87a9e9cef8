"""The major-incident and block-list AGI requests behind a real FastAgiServer, driven by the
fake Asterisk of test_handlers: what each sets, in which order, and what it refuses."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ivr import channel_vars as V
from ivr.calls import CallDesk
from ivr.menu import load_menu
from network.incidents import Incident
from routing.escalation import AttemptOutcome
from tests.adapters.test_handlers import (CALLER, MENU_FILE, PARTNER_NUMBER, T0, Clock, FakeRoster,
                                          Hotline, RecordingSink, Request, build_roster, serve)

QUEUE_CHANNEL = "Local/13700000101@hotline-queue-member-00000001;2"


class Network:
    def __init__(self, team: str | None = "facial", blocked=()) -> None:
        self.rows = [] if team == "none" else [Incident(1, team, T0 - timedelta(minutes=1), "user:sup")]
        self.blocked = frozenset(blocked)

    def incidents(self):
        return self.rows

    def blocked_numbers(self):
        return self.blocked


def hotline_with(tmp_path, network: Network) -> Hotline:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    counter = iter(range(1, 1000))
    desk = CallDesk(load_menu(MENU_FILE), FakeRoster(build_roster(), {PARTNER_NUMBER: 7}),
                    RecordingSink(), new_id=lambda at: f"C-{next(counter):04d}", network=network)
    return Hotline(desk, desk.sink, Clock(), recordings.resolve())


def test_call_start_announces_the_incident_and_route_answers_queue(tmp_path):
    hotline = hotline_with(tmp_path, Network("facial"))
    (start, menu, route), _ = serve(hotline, Request("call_start"), Request("menu", ["1"]),
                                    Request("route", ["facial", "1"]))
    assert start.sets == [(V.CASE_ID, "C-0001"), (V.ROUTE, "menu"), (V.INCIDENT, "1"), (V.OK, "1")]
    assert route.sets == [(V.ACTION, "queue"), (V.TARGET, "hotline-facial"), (V.QUEUE_PRIO, "0"),
                          (V.OK, "1")]


def test_queue_ring_records_the_attempt_and_names_the_phone_then_the_end_is_recorded(tmp_path):
    hotline = hotline_with(tmp_path, Network("facial"))
    sessions, _ = serve(
        hotline, Request("call_start"), Request("route", ["facial", "1"]),
        Request("queue_ring", ["13700000101"], channel=QUEUE_CHANNEL),
        Request("queue_ring_ended", ["1", "NOANSWER", "", "", "45"], channel=QUEUE_CHANNEL),
        Request("queue_left", ["TIMEOUT"]))
    ring, ended, left = sessions[2:]
    assert ring.variables == {V.ACTION: "dial", V.TARGET: "13700000101", V.RING_S: "0",
                              V.ATTEMPT: "1", V.WHISPER: "whisper_facial", V.PARTNER: "",
                              V.OK: "1"}
    assert ended.sets == [(V.OK, "1")]
    assert left.variables[V.ACTION] == "dial" and left.variables[V.TARGET] == "13900000000"
    case = hotline.case()
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        ("13700000101", AttemptOutcome.NO_ANSWER), ("13900000000", None)]


@pytest.mark.parametrize("request_", [
    Request("queue_ring", ["1370&PJSIP/trunk/001"]),
    Request("queue_ring", [""]),
    Request("queue_ring_ended", ["x", "CANCEL"]),
    Request("queue_ring_ended", ["1", "cancel;x"]),
    Request("queue_left", ["TIMEOUT\nHANGUP"]),
    Request("queue_left", ["SOMETHING"]),
], ids=["phone-injection", "no-phone", "bad-attempt", "bad-status", "status-newline", "unknown-status"])
def test_bad_queue_requests_get_no_ok(tmp_path, request_):
    hotline = hotline_with(tmp_path, Network("facial"))
    sessions, _ = serve(hotline, Request("call_start"), Request("route", ["facial", "1"]), request_)
    assert not sessions[-1].ok
    assert hotline.case().attempts == []


def test_a_blocked_caller_gets_the_blocked_route_and_no_incident_flag_matters(tmp_path):
    hotline = hotline_with(tmp_path, Network("facial", blocked={CALLER}))
    (start,), _ = serve(hotline, Request("call_start"))
    assert start.sets[:2] == [(V.CASE_ID, "C-0001"), (V.ROUTE, "blocked")]
    assert [m.choice for m in hotline.case().menu] == ["blocked"]


def test_a_listed_partner_number_still_gets_the_partner_route(tmp_path):
    hotline = hotline_with(tmp_path, Network("none", blocked={PARTNER_NUMBER}))
    (start,), _ = serve(hotline, Request("call_start", callerid=PARTNER_NUMBER))
    assert start.sets == [(V.CASE_ID, "C-0001"), (V.ROUTE, "referral"), (V.OK, "1")]
