"""Reconciliation from CDR/CEL (cases/reconcile.py): pure, rows in the shape Asterisk writes them.

The first fixture is copied from a real call on the sandboxed Asterisk 22.10
(service stopped, static fallback, the duty nurse pressed 1, the caller hung
up); the others are built with the same columns and values.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from cases import lifecycle
from cases.reconcile import (
    CASE_ID_PREFIX,
    Directory,
    parse_cdr,
    parse_cel,
    parse_epoch,
    reconcile_call,
    recording_paths,
)
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.callers import CallerClass, classify
from routing.escalation import CHAIN, NURSE, AttemptOutcome, ChainStep

A = AttemptOutcome
NURSE_PHONE = "13900000000"
CEL_COLUMNS = ("AcctId", "eventtype", "eventtime", "cidname", "cidnum", "cidani", "exten", "context",
               "channame", "appname", "appdata", "uniqueid", "linkedid", "peer", "extra")
CDR_COLUMNS = ("AcctId", "start_ts", "answer_ts", "end_ts", "clid", "src", "dst", "dcontext", "channel",
               "dstchannel", "lastapp", "lastdata", "duration", "billsec", "disposition", "uniqueid",
               "linkedid", "sequence")

# -- a real call: service down, static fallback, nurse accepts, caller hangs up ------
REAL_CEL = [dict(zip(CEL_COLUMNS, row)) for row in [
    (37, 'CHAN_START', '1795636567.289629', '', '13611113002', '', '96608', 'hotline-callers', 'PJSIP/caller-00000006', '', '', '1795636567.6', '1795636567.6', '', ''),
    (38, 'ANSWER', '1795636567.290688', '', '13611113002', '13611113002', 's', 'hotline-inbound', 'PJSIP/caller-00000006', 'Answer', '', '1795636567.6', '1795636567.6', '', ''),
    (39, 'APP_START', '1795636581.602930', '', '13611113002', '13611113002', 's', 'hotline-fallback', 'PJSIP/caller-00000006', 'Dial', 'PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000006^whisper_nurse^^u1795636567.6^0)', '1795636567.6', '1795636567.6', '', ''),
    (40, 'CHAN_START', '1795636581.603930', '', '', '', 's', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', '', '', '1795636581.7', '1795636567.6', '', ''),
    (41, 'ANSWER', '1795636582.118692', '', 's', '', 's', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', ''),
    (42, 'DTMF', '1795636583.337791', '', 's', '', 's', 'hotline-whisper', 'PJSIP/surgeons-00000007', 'Read', 'HOTLINE_KEY,/tmp/hl-lsdnu34g/prompts/zh/whisper_nurse&/tmp/hl-lsdnu34g/prompts/zh/press1,1,,1,4', '1795636581.7', '1795636567.6', '', '{"digit":"1","duration_ms":180}'),
    (43, 'BRIDGE_ENTER', '1795636583.340239', '', 's', '', '', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', '{"bridge_id":"978b7a87-321c-4fe6-9d07-a3745c3fb6da","bridge_technology":"simple_bridge"}'),
    (44, 'BRIDGE_ENTER', '1795636583.340346', '', '13611113002', '13611113002', 's', 'hotline-fallback', 'PJSIP/caller-00000006', 'Dial', 'PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000006^whisper_nurse^^u1795636567.6^0)', '1795636567.6', '1795636567.6', 'PJSIP/surgeons-00000007', '{"bridge_id":"978b7a87-321c-4fe6-9d07-a3745c3fb6da","bridge_technology":"simple_bridge"}'),
    (45, 'BRIDGE_EXIT', '1795636585.813621', '', '13611113002', '13611113002', 's', 'hotline-fallback', 'PJSIP/caller-00000006', 'Dial', 'PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000006^whisper_nurse^^u1795636567.6^0)', '1795636567.6', '1795636567.6', 'PJSIP/surgeons-00000007', '{"bridge_id":"978b7a87-321c-4fe6-9d07-a3745c3fb6da","bridge_technology":"simple_bridge"}'),
    (46, 'BRIDGE_EXIT', '1795636585.813679', '', 's', '', '', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', '{"bridge_id":"978b7a87-321c-4fe6-9d07-a3745c3fb6da","bridge_technology":"simple_bridge"}'),
    (47, 'HANGUP', '1795636585.815240', '', '13611113002', '13611113002', 's', 'hotline-fallback', 'PJSIP/caller-00000006', '', '', '1795636567.6', '1795636567.6', '', '{"hangupcause":16,"hangupsource":"PJSIP/caller-00000006","dialstatus":"ANSWER"}'),
    (48, 'CHAN_END', '1795636585.815240', '', '13611113002', '13611113002', 's', 'hotline-fallback', 'PJSIP/caller-00000006', '', '', '1795636567.6', '1795636567.6', '', ''),
    (49, 'HANGUP', '1795636585.815667', '', 's', '', '', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', '{"hangupcause":16,"hangupsource":"PJSIP/caller-00000006","dialstatus":""}'),
    (50, 'CHAN_END', '1795636585.815667', '', 's', '', '', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', ''),
    (51, 'LINKEDID_END', '1795636585.815667', '', 's', '', '', 'hotline-from-surgeons', 'PJSIP/surgeons-00000007', 'AppDial', '(Outgoing Line)', '1795636581.7', '1795636567.6', '', ''),
]]
REAL_CDR = [dict(zip(CDR_COLUMNS, (
    5, '1795636567.289629', '1795636567.290688', '1795636585.813621', '"" <13611113002>', '13611113002', 's',
    'hotline-fallback', 'PJSIP/caller-00000006', 'PJSIP/surgeons-00000007', 'Dial',
    'PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000006^whisper_n', '18', '18',
    'ANSWERED', '1795636567.6', '1795636567.6', '8')))]
REAL_LINKEDID = "1795636567.6"
AFTER = datetime(2026, 11, 25, 21, 0, tzinfo=timezone.utc)  # an hour after those calls


def at(epoch: str) -> datetime:
    stamp = parse_epoch(epoch)
    assert stamp is not None
    return stamp


def rows(cel_rows, cdr_rows=()):
    events = [e for e in (parse_cel(r) for r in cel_rows) if e is not None]
    cdrs = [c for c in (parse_cdr(r) for r in cdr_rows) if c is not None]
    return cdrs, events


def directory(**kwargs) -> Directory:
    return Directory(nurse_phone=NURSE_PHONE, **kwargs)


def run(cel_rows, cdr_rows=(), stored=None, now=AFTER, linkedid=None, **kwargs):
    cdrs, events = rows(cel_rows, cdr_rows)
    linkedid = linkedid or events[0].linkedid
    return reconcile_call(linkedid, cdrs, events, stored, kwargs.pop("dir", directory()), now, **kwargs)


# -- a builder for other calls, in the same shape ------------------------------------
class CallRows:
    """CEL/CDR rows of one call to 96608, written the way Asterisk writes them."""

    def __init__(self, caller: str = "13611110001", t0: float = 1795640000.0, n: int = 1,
                 dial_context: str = "hotline-route", team: str = "facial"):
        self.linkedid = f"{int(t0)}.{n}"
        self.chan = f"PJSIP/caller-{n:08x}"
        self.caller = caller
        self.t0 = t0
        self.dial_context = dial_context
        self.team = team
        self.cel: list[dict] = []
        self.cdr: list[dict] = []
        self.legs = 0
        self.bridge = 0
        self.event("CHAN_START", 0, exten="96608", context="hotline-callers", cidani="")
        self.event("ANSWER", 0.001, context="hotline-inbound", app="Answer")

    def event(self, kind, dt, *, channel=None, uniqueid=None, context="", exten="s", app="",
              data="", cidnum=None, cidani=None, peer="", extra=""):
        own = channel is None
        self.cel.append(dict(zip(CEL_COLUMNS, (
            len(self.cel) + 1, kind, f"{self.t0 + dt:.6f}", "",
            self.caller if own and cidnum is None else (cidnum or "s"),
            (self.caller if own else "") if cidani is None else cidani, exten, context,
            channel or self.chan, app, data, uniqueid or self.linkedid, self.linkedid, peer, extra))))

    def dial_data(self, number: str) -> str:
        return (f"PJSIP/{number}@surgeons,6,mU(hotline-whisper^{self.chan}^whisper_{self.team}"
                f"^^u{self.linkedid}^1)")

    def leg(self, number: str, dt: float, behaviour: str, *, ring: float = 0.5, talk: float = 2.0,
            cause: int = 16, cdr: str | None = None, data: str | None = None) -> float:
        """A Dial from the caller and the surgeon leg it makes; returns when the leg ended."""
        self.legs += 1
        chan = f"PJSIP/surgeons-{self.legs + 100:08x}"
        uid = f"{int(self.t0 + dt)}.{self.legs + 100}"
        data = data if data is not None else self.dial_data(number)
        leg = dict(channel=chan, uniqueid=uid, app="AppDial", data="(Outgoing Line)",
                   context="hotline-from-surgeons")
        self.event("APP_START", dt, context=self.dial_context, app="Dial", data=data)
        self.event("CHAN_START", dt + 0.001, channel=chan, uniqueid=uid,
                   context="hotline-from-surgeons", cidnum="", cidani="")
        end = dt + ring
        if behaviour in ("accept", "decline", "no-key"):
            self.event("ANSWER", dt + ring, **leg, cidnum="s", cidani="")
            if behaviour != "no-key":
                digit = "1" if behaviour == "accept" else "2"
                self.event("DTMF", dt + ring + 1.2, **{**leg, "context": "hotline-whisper", "app": "Read"},
                           extra=f'{{"digit":"{digit}","duration_ms":180}}')
            end = dt + ring + (1.3 if behaviour != "no-key" else 4.5)
        if behaviour == "accept":
            self.bridge += 1
            bridge = f'{{"bridge_id":"b{self.bridge}-{self.linkedid}","bridge_technology":"simple_bridge"}}'
            self.event("BRIDGE_ENTER", end, **leg, extra=bridge)
            self.event("BRIDGE_ENTER", end + 0.0001, context=self.dial_context, app="Dial", data=data,
                       peer=chan, extra=bridge)
            end += talk
            self.event("BRIDGE_EXIT", end, context=self.dial_context, app="Dial", data=data,
                       peer=chan, extra=bridge)
            self.event("BRIDGE_EXIT", end + 0.0001, **leg, extra=bridge)
        source = "" if behaviour != "accept" else self.chan
        self.event("HANGUP", end + 0.0002, **leg,
                   extra=f'{{"hangupcause":{cause},"hangupsource":"{source}","dialstatus":""}}')
        self.event("CHAN_END", end + 0.0002, **leg)
        if cdr is not None:
            self.cdr.append(dict(zip(CDR_COLUMNS, (
                len(self.cdr) + 1, f"{self.t0 + dt:.6f}", f"{self.t0 + dt:.6f}", f"{self.t0 + end:.6f}",
                f'"" <{self.caller}>', self.caller, "s", self.dial_context, self.chan, chan, "Dial",
                data[:80], "1", "1", cdr, self.linkedid, self.linkedid, str(len(self.cdr))))))
        return end

    def hangup(self, dt: float, source: str = "caller", end: bool = True, dialstatus: str = "ANSWER"):
        src = {"caller": self.chan, "system": "dialplan/builtin"}.get(source, source)
        self.event("HANGUP", dt, extra=f'{{"hangupcause":16,"hangupsource":"{src}","dialstatus":"{dialstatus}"}}')
        self.event("CHAN_END", dt)
        if end:
            self.event("LINKEDID_END", dt)
        return self

    def at(self, dt: float) -> datetime:
        return at(f"{self.t0 + dt:.6f}")


def roster() -> Roster:
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    return Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial trauma", 6, 0)},
        surgeons={1: Surgeon(1, "甲 primary facial", "13700000101", Rank.ATTENDING),
                  2: Surgeon(2, "乙 backup facial", "13700000102", Rank.RESIDENT)},
        shifts=(Shift("facial", 1, Role.PRIMARY, start, end), Shift("facial", 2, Role.BACKUP, start, end)),
    )


def stored_live_case(call: CallRows, attempts: int, *, ended: bool = False):
    """The case the live service had written for `call` when it lost track (attempts started)."""
    caller = classify(call.caller, {})
    case = lifecycle.open_case("20261125-210000-abcdef", call.linkedid, caller, call.at(0))
    lifecycle.record_menu(case, call.at(1), "1", "facial")
    lifecycle.set_team(case, call.at(2), "facial")
    phones = [("13700000101", 1, "甲 primary facial", "primary"), ("13700000102", 2, "乙 backup facial", "backup")]
    for seq in range(1, attempts + 1):
        phone, sid, name, role = phones[seq - 1]
        lifecycle.start_attempt(case, call.at(3), seq, CHAIN, ChainStep(sid, name, phone, role, 6))
    if ended:
        lifecycle.mark_ended(case, call.at(30), None)
    return case


# -- parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("1795636567.289629", datetime(2026, 11, 25, 19, 56, 7, 289629, tzinfo=timezone.utc)),
    ("1795636567.2", datetime(2026, 11, 25, 19, 56, 7, 200000, tzinfo=timezone.utc)),
    ("1795636567", datetime(2026, 11, 25, 19, 56, 7, tzinfo=timezone.utc)),
    (" 1795636567.000001 ", datetime(2026, 11, 25, 19, 56, 7, 1, tzinfo=timezone.utc)),
    (1795636567.5, datetime(2026, 11, 25, 19, 56, 7, 500000, tzinfo=timezone.utc)),
    ("0.000000", None), ("", None), (None, None), ("2026-11-25 19:56:07", None),
    ("-1795636567", None), ("1e9", None), (True, None),
])
def test_epoch_text_is_read_exactly(text, expected):
    assert parse_epoch(text) == expected


def test_cel_rows_parse_and_junk_is_dropped():
    event = parse_cel(REAL_CEL[6])
    assert event is not None and event.eventtype == "BRIDGE_ENTER"
    assert event.extra["bridge_id"] == "978b7a87-321c-4fe6-9d07-a3745c3fb6da"
    assert event.channel == "PJSIP/surgeons-00000007" and event.linkedid == REAL_LINKEDID
    assert parse_cel({**REAL_CEL[0], "extra": "{not json"}).extra == {}
    assert parse_cel({**REAL_CEL[0], "extra": "[1, 2]"}).extra == {}
    assert parse_cel({**REAL_CEL[0], "eventtime": ""}) is None
    assert parse_cel({**REAL_CEL[0], "linkedid": "1795636567.6\r\nEvil: 1"}) is None
    assert parse_cel({**REAL_CEL[0], "linkedid": "x" * 63}) is None
    assert parse_cdr({**REAL_CDR[0], "uniqueid": ""}) is None
    assert parse_cdr(REAL_CDR[0]).disposition == "ANSWERED"


# -- a call the service never saw ----------------------------------------------------
def test_real_fallback_call_becomes_one_complete_case():
    result = run(REAL_CEL, REAL_CDR)
    assert result.status == "created" and result.changed
    case = result.case
    assert case.case_id == CASE_ID_PREFIX + REAL_LINKEDID == "r-1795636567.6"
    assert case.linkedid == REAL_LINKEDID
    assert case.fallback and case.outcome == "fallback"
    assert case.caller.number == "13611113002" and case.caller.caller_class is CallerClass.PUBLIC
    assert case.started_at == at("1795636567.289629")
    assert case.team == "nurse"
    [attempt] = case.attempts
    assert (attempt.seq, attempt.kind, attempt.phone, attempt.outcome) == (1, NURSE, NURSE_PHONE, A.ACCEPTED)
    assert attempt.answered and attempt.ring_s == 1 and attempt.surgeon_id is None
    assert attempt.started_at == at("1795636581.603930")
    assert case.connected_seq == 1 and case.connected_at == at("1795636583.340346")
    assert case.ended_at == at("1795636585.815240")  # the caller's hang-up
    assert case.hangup_by == "caller"
    assert case.recording_path is None and case.voicemail_path is None
    text = "\n".join(result.changes)
    assert "new case r-1795636567.6" in text and "fallback (hotline-fallback)" in text
    assert "attempt #1 nurse 13900000000" in text and "accepted" in text
    assert "connected to #1 at 2026-11-25T19:56:23Z" in text
    assert "ended 2026-11-25T19:56:25Z, hang-up by caller" in text


def test_reconciling_twice_changes_nothing_the_second_time():
    first = run(REAL_CEL, REAL_CDR)
    second = run(REAL_CEL, REAL_CDR, stored=first.case)
    assert second.status == "unchanged" and second.changes == () and not second.changed
    assert second.case is None


def test_the_stored_case_is_not_modified():
    call = CallRows()
    call.leg("13700000101", 3, "decline")
    call.leg("13700000102", 6, "accept")
    call.hangup(12)
    stored = stored_live_case(call, 1)
    before = copy.deepcopy(stored)
    result = run(call.cel, stored=stored)
    assert result.status == "updated" and stored == before and result.case is not stored


def test_works_from_cel_alone_without_cdr():
    assert run(REAL_CEL).case.caller.number == "13611113002"


def test_caller_number_from_cdr_src_and_partner_classified():
    call = CallRows(caller="043188888888", dial_context="hotline-fallback", team="nurse")
    call.leg(NURSE_PHONE, 14, "accept", cdr="ANSWERED")
    call.hangup(20)
    result = run(call.cel, call.cdr, dir=directory(partner_numbers={"043188888888": 7}))
    caller = result.case.caller
    assert caller.caller_class is CallerClass.PARTNER and caller.hospital_id == 7


def test_hostile_caller_id_is_kept_escaped():
    call = CallRows(caller="13611110001\r\nEvil: 1")
    call.hangup(5)
    caller = run(call.cel).case.caller
    assert caller.caller_class is CallerClass.INVALID and "\n" not in caller.raw_safe


def test_caller_who_hangs_up_in_the_menu_is_still_a_case():
    call = CallRows()
    call.hangup(4)
    result = run(call.cel)
    case = result.case
    assert result.status == "created" and case.attempts == [] and case.team is None
    assert case.fallback and case.hangup_by == "caller" and case.ended_at == call.at(4)


def test_legs_with_each_outcome():
    call = CallRows(dial_context="hotline-mirror")
    call.leg("13700000101", 3, "ignore", ring=6, cause=0)  # rang out
    call.leg("13700000102", 10, "decline")
    call.leg("13700000101", 14, "no-key")  # a voicemail box answered
    call.leg("13700000102", 20, "ignore", ring=0.1, cause=17)  # busy
    call.leg("13700000101", 21, "ignore", ring=0.1, cause=34)  # no circuit
    call.leg("13700000102", 22, "ignore", ring=3, cdr="CANCEL")  # the caller gave up
    call.hangup(25, dialstatus="CANCEL")
    result = run(call.cel, call.cdr, dir=directory(roster=roster()))
    case = result.case
    assert [(a.phone, a.outcome, a.answered) for a in case.attempts] == [
        ("13700000101", A.NO_ANSWER, False),
        ("13700000102", A.DECLINED, True),
        ("13700000101", A.NO_ANSWER, True),
        ("13700000102", A.BUSY, False),
        ("13700000101", A.FAILED, False),
        ("13700000102", A.CANCELLED, False),
    ]
    assert [a.ring_s for a in case.attempts] == [6, 0, 0, 0, 0, 3]
    assert case.attempts[0].surgeon_id == 1 and case.attempts[0].role == "primary"
    assert case.attempts[1].name == "乙 backup facial" and case.attempts[1].role == "backup"
    assert case.team == "facial" and case.connected_seq is None
    assert case.fallback and "fallback (hotline-mirror)" in result.changes[0]


def test_caller_hanging_up_while_it_rings_is_cancelled_even_without_cdr():
    call = CallRows()
    call.leg("13700000101", 3, "ignore", ring=2.0)
    call.hangup(5.0 - 0.0001, dialstatus="NOANSWER")
    # The leg goes a moment after the caller (its HANGUP is written after).
    call.cel[-3], call.cel[-4] = call.cel[-4], call.cel[-3]
    [attempt] = run(call.cel).case.attempts
    assert attempt.outcome is A.CANCELLED


def test_unknown_number_is_kept_as_a_bare_attempt():
    call = CallRows()
    call.leg("13812345678", 3, "accept")
    call.hangup(9)
    [attempt] = run(call.cel, dir=directory(roster=roster())).case.attempts
    assert (attempt.kind, attempt.surgeon_id, attempt.name, attempt.phone) == (CHAIN, None, "unknown", "13812345678")


def test_a_dial_that_is_not_a_plain_number_is_left_out():
    call = CallRows()
    call.leg("", 3, "accept", data="PJSIP/500&PJSIP/trunk/0014165551212@surgeons,6,m")
    call.hangup(9)
    result = run(call.cel)
    assert result.case.attempts == [] and "no dialled number" in result.note


def test_number_from_cdr_lastdata_when_the_dial_event_is_lost():
    call = CallRows()
    call.leg("13700000101", 3, "ignore", ring=6, cause=0, cdr="NO ANSWER")
    call.hangup(12)
    del call.cel[2]  # the APP_START of the Dial
    [attempt] = run(call.cel, call.cdr).case.attempts
    assert attempt.phone == "13700000101" and attempt.outcome is A.NO_ANSWER


def test_voicemail_and_recording():
    call = CallRows(dial_context="hotline-mirror")
    call.event("APP_START", 2, context="hotline-mirror", app="MixMonitor",
               data=f"/var/rec/u{call.linkedid}.wav,b")
    call.leg("13700000101", 3, "no-key")
    call.event("APP_START", 12, context="hotline-voicemail", app="Record",
               data=f"/var/rec/u{call.linkedid}-voicemail.wav,3,120,k")
    call.hangup(20, source="system", dialstatus="")
    case = run(call.cel, recordings={f"/var/rec/u{call.linkedid}.wav": 0}).case
    assert case.voicemail_path == f"/var/rec/u{call.linkedid}-voicemail.wav"
    assert case.voicemail_at == call.at(12)
    assert case.recording_path is None  # nobody connected: nothing to attach
    assert case.hangup_by == "system"
    assert recording_paths(rows(call.cel)[1], call.linkedid) == [f"/var/rec/u{call.linkedid}.wav"]


def test_recording_is_attached_only_when_the_file_exists():
    call = CallRows()
    call.event("APP_START", 2, context="hotline-route", app="MixMonitor",
               data=f"/var/rec/u{call.linkedid}.wav,b")
    call.leg("13700000101", 3, "accept")
    call.hangup(10)
    path = f"/var/rec/u{call.linkedid}.wav"
    assert run(call.cel).case.recording_path is None
    result = run(call.cel, recordings={path: 4})
    assert (result.case.recording_path, result.case.recording_s) == (path, 4)
    assert f"recording {path} (4s)" in result.changes


def test_surgeon_hangs_up():
    call = CallRows()
    call.leg("13700000101", 3, "accept")
    call.hangup(10, source="PJSIP/surgeons-00000065")
    assert run(call.cel).case.hangup_by == "surgeon"


# -- calls the service knew -------------------------------------------------------------
def test_complete_stored_case_is_left_alone():
    call = CallRows()
    call.leg("13700000101", 3, "decline")
    call.leg("13700000102", 6, "accept")
    call.hangup(12)
    stored = stored_live_case(call, 2)
    lifecycle.end_attempt(stored, call.at(5), 1, A.DECLINED)
    lifecycle.mark_connected(stored, call.at(8), 2)
    lifecycle.mark_ended(stored, call.at(12), "caller")
    lifecycle.set_recording(stored, call.at(12), "/rec/x.wav", 3)
    result = run(call.cel, stored=stored)
    assert result.status == "unchanged" and result.changes == ()


def test_in_progress_stored_case_is_completed_from_the_records():
    """The service died after ringing the first surgeon; the mirror rang the second."""
    call = CallRows()
    call.leg("13700000101", 3, "decline")
    call.leg("13700000102", 6, "accept")
    call.hangup(12)
    stored = stored_live_case(call, 1)
    result = run(call.cel, stored=stored, dir=directory(roster=roster()))
    case = result.case
    assert result.status == "updated" and case.case_id == stored.case_id
    assert case.revision > stored.revision and not case.fallback
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        ("13700000101", A.DECLINED), ("13700000102", A.ACCEPTED)]
    assert case.attempts[0].role == "primary"  # the stored attempt is kept as it was
    assert case.connected_seq == 2 and case.connected_surgeon_id == 2
    assert case.ended_at == call.at(12) and case.hangup_by == "caller"
    assert case.menu == stored.menu and case.team == "facial"
    assert run(call.cel, stored=case).status == "unchanged"


def test_stored_case_ended_without_its_legs_is_replayed():
    """A service restarted mid-call closed the case at the hang-up without the legs."""
    call = CallRows(dial_context="hotline-mirror")
    call.leg("13700000101", 3, "ignore", ring=6, cause=0)
    call.leg("13700000102", 10, "accept")
    call.hangup(16)
    caller = classify(call.caller, {})
    stored = lifecycle.open_case("20261125-210000-abcdef", call.linkedid, caller, call.at(16.2))
    lifecycle.mark_fallback(stored, call.at(16.2))
    lifecycle.mark_ended(stored, call.at(16.2), "caller")
    stored.revision = 7
    result = run(call.cel, stored=stored, dir=directory(roster=roster()))
    case = result.case
    assert result.status == "updated" and case.revision > 7
    # The start is Asterisk's (issue 18 item 9): the service opened the case at the hang-up.
    assert (case.case_id, case.started_at, case.ended_at, case.hangup_by) == (
        stored.case_id, call.at(0), stored.ended_at, "caller")
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        ("13700000101", A.NO_ANSWER), ("13700000102", A.ACCEPTED)]
    assert case.connected_seq == 2 and case.fallback
    assert not any(c.startswith("ended") for c in result.changes)
    assert run(call.cel, stored=case).status == "unchanged"


def test_an_attempt_the_restarted_service_closed_as_cancelled_is_corrected():
    """The service restarted while the surgeon's phone rang; at the hang-up it
    closed that attempt as cancelled (absorb_end) although the surgeon accepted."""
    call = CallRows()
    call.leg("13700000101", 3, "accept", talk=5)
    call.hangup(11)
    stored = stored_live_case(call, 1)
    lifecycle.absorb_end(stored, _late_case(call, at_s=11.1))
    assert stored.attempts[0].outcome is A.CANCELLED and stored.connected_seq is None
    result = run(call.cel, stored=stored)
    case = result.case
    assert result.status == "updated"
    assert case.attempts[0].outcome is A.ACCEPTED and case.connected_seq == 1
    assert case.connected_at == call.at(4.8001)
    assert (case.ended_at, case.hangup_by) == (stored.ended_at, stored.hangup_by)
    assert "(the service had closed it as cancelled)" in "\n".join(result.changes)
    assert run(call.cel, stored=case).status == "unchanged"


def test_a_cancel_the_records_agree_with_is_kept():
    call = CallRows()
    call.leg("13700000101", 3, "ignore", ring=2, cdr="CANCEL")
    call.hangup(5.0001, dialstatus="CANCEL")
    stored = stored_live_case(call, 1)
    lifecycle.absorb_end(stored, _late_case(call, at_s=5.1))
    assert run(call.cel, call.cdr, stored=stored).status == "unchanged"


def _late_case(call: CallRows, at_s: float):
    """The minimal case a restarted service opens at the hang-up of a call it never saw."""
    late = lifecycle.open_case("20261125-210100-123456", call.linkedid, classify(call.caller, {}),
                               call.at(at_s))
    lifecycle.mark_ended(late, call.at(at_s), "caller")
    return late


def test_stored_case_ended_by_ami_gets_its_open_attempt_ended():
    call = CallRows()
    call.leg("13700000101", 3, "no-key")
    call.hangup(12)
    stored = stored_live_case(call, 1, ended=True)
    result = run(call.cel, stored=stored)
    [attempt] = result.case.attempts
    assert attempt.outcome is A.NO_ANSWER and attempt.answered
    assert result.case.hangup_by == "caller"  # filled: the stored end had no one
    assert result.case.ended_at == stored.ended_at  # the first end wins
    assert "hang-up by caller" in result.changes


def test_a_leg_to_another_phone_than_the_stored_attempt_is_not_merged():
    call = CallRows()
    call.leg("13700000102", 3, "accept")
    call.hangup(9)
    stored = stored_live_case(call, 1)  # attempt 1 is 13700000101
    result = run(call.cel, stored=stored)
    assert "left out" in result.note
    assert [a.outcome for a in result.case.attempts] == [A.CANCELLED]
    assert result.case.connected_seq is None


def test_stored_case_from_a_fallback_dial_is_marked_fallback():
    call = CallRows(dial_context="hotline-fallback", team="nurse")
    call.leg(NURSE_PHONE, 3, "accept")
    call.hangup(9)
    caller = classify(call.caller, {})
    stored = lifecycle.open_case("20261125-210000-abcdef", call.linkedid, caller, call.at(0))
    result = run(call.cel, stored=stored)
    assert result.case.fallback and result.case.outcome == "fallback"
    assert result.case.attempts[0].kind == NURSE


# -- when not to act ----------------------------------------------------------------
def test_a_call_still_going_on_is_left_alone():
    call = CallRows()
    call.leg("13700000101", 3, "accept", talk=600)
    now = call.at(100)
    assert run(call.cel, now=now).status == "in-progress"
    stored = stored_live_case(call, 1)
    result = run(call.cel, stored=stored, now=now)
    assert result.status == "in-progress" and result.case is None


def test_a_call_that_just_ended_is_left_to_the_service():
    call = CallRows()
    call.hangup(5)
    assert run(call.cel, now=call.at(30)).status == "in-progress"
    assert run(call.cel, now=call.at(30), settle_s=10).status == "created"


def test_no_linkedid_end_long_ago_counts_as_ended_at_the_callers_hangup():
    call = CallRows()
    call.leg("13700000101", 3, "accept")
    call.hangup(10, end=False)  # Asterisk died before the call's last channel went
    result = run(call.cel, now=call.at(4 * 3600))
    assert result.status == "created" and result.case.ended_at == call.at(10)
    assert "no LINKEDID_END" in result.note


def test_calls_that_are_not_to_the_hotline_are_ignored():
    call = CallRows()
    call.cel[0]["context"] = "hotline-from-surgeons"
    call.hangup(5)
    assert run(call.cel).status == "ignored"
    assert run([r for r in call.cel if r["eventtype"] != "CHAN_START"],
               linkedid=call.linkedid).status == "ignored"



# -- issue 18 item 9: a case the service heard of late ------------------------------------
MENU_KEYS = {"1": ("1", "facial"), "2": ("2", "replant"), "0": ("0", "nurse"), "9": ("9", "english")}


def test_a_case_opened_at_the_hang_up_gets_its_start_team_and_menu_keys_from_the_records():
    """call_start and the menu reached no worker; the mirror rang facial; the
    service heard of the call only at the hang-up and opened the case then."""
    call = CallRows(dial_context="hotline-mirror")
    call.event("DTMF", 2.5, context="hotline-menu", app="Read", extra='{"digit":"1","duration_ms":120}')
    call.leg("13700000101", 5, "accept", talk=3)
    call.hangup(12)
    stored = lifecycle.open_case("u" + call.linkedid, call.linkedid, classify(call.caller, {}), call.at(12.1))
    lifecycle.mark_fallback(stored, call.at(12.1))
    lifecycle.mark_ended(stored, call.at(12.1), "caller")
    stored.revision = 3
    result = run(call.cel, stored=stored, dir=directory(roster=roster(), menu_keys=MENU_KEYS))
    case = result.case
    assert result.status == "updated" and case.revision > 3
    assert case.started_at == call.at(0) and case.team == "facial"
    assert [(m.choice, m.label, m.at) for m in case.menu] == [("1", "facial", call.at(2.5))]
    assert [(a.phone, a.outcome) for a in case.attempts] == [("13700000101", A.ACCEPTED)]
    assert any("heard of the call late" in c for c in result.changes)
    assert run(call.cel, stored=case, dir=directory(roster=roster(), menu_keys=MENU_KEYS)).status == "unchanged"


def served_facial_call(call: CallRows, opened: float, key: float):
    """The rest of `call` (key 1 at `key` s, the primary accepts) and the case the
    service stored of it, opened `opened` s after the caller's channel."""
    call.event("DTMF", key, context="hotline-menu", app="Read", extra='{"digit":"1","duration_ms":120}')
    call.leg("13700000101", key + 2, "accept", talk=2)
    call.hangup(key + 8)
    stored = lifecycle.open_case("u" + call.linkedid, call.linkedid, classify(call.caller, {}), call.at(opened))
    lifecycle.record_menu(stored, call.at(key + 0.3), "1", "facial")
    lifecycle.set_team(stored, call.at(key + 0.4), "facial")
    lifecycle.start_attempt(stored, call.at(key + 2), 1, "chain",
                            ChainStep(1, "甲", "13700000101", "primary", 6))
    lifecycle.mark_connected(stored, call.at(key + 4.8), 1)
    lifecycle.mark_ended(stored, call.at(key + 8), "caller")
    return call, stored


def test_keys_before_the_service_heard_of_the_call_are_added_ahead_of_its_own():
    """Adopted at the second menu (English, then facial): the first key is added, the second kept."""
    call = CallRows()
    call.event("DTMF", 2.0, context="hotline-menu", app="Read", extra='{"digit":"9","duration_ms":120}')
    call, stored = served_facial_call(call, opened=5.5, key=6.0)
    result = run(call.cel, stored=stored, dir=directory(menu_keys=MENU_KEYS))
    case = result.case
    assert result.status == "updated" and case.started_at == call.at(0)
    assert [(m.choice, m.label) for m in case.menu] == [("9", "english"), ("1", "facial")]


def test_a_case_the_service_served_from_the_start_is_not_corrected():
    call, stored = served_facial_call(CallRows(), opened=0.4, key=2.0)
    result = run(call.cel, stored=stored, dir=directory(menu_keys=MENU_KEYS))
    assert result.status == "unchanged", result.changes
