"""The AGI handlers behind a real FastAgiServer, driven by a fake Asterisk over loopback sockets.

The fake sends the environment the way res_agi does (agi_network first, the
route and the linkedid in agi_network_script, agi_arg_N last, a blank line),
answers every command with ``200 result=1`` and records what it was sent.
Behind the server sits a real CallDesk with an in-memory roster and sink.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

import pytest

from cases.lifecycle import Case
from ivr import channel_vars as V
from ivr.calls import CallDesk
from ivr.fastagi import ERROR_VARIABLE, FastAgiServer, ServerStats
from ivr.handlers import build_routes
from ivr.menu import load_menu
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.callers import RAW_KEEP, CallerClass
from routing.escalation import AttemptOutcome

MENU_FILE = Path(__file__).resolve().parents[2] / "ivr" / "menu.toml"
T0 = datetime(2026, 11, 25, 19, 5, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
LINKEDID = "1795633620.0"
CALLER_CHANNEL = "PJSIP/caller-00000001"
CALLER = "13800138000"
PARTNER_NUMBER = "043188888888"
PRIMARY = Surgeon(1, "甲 facial primary", "13700000101", Rank.ATTENDING)
BACKUP = Surgeon(2, "乙 facial backup", "13700000102", Rank.RESIDENT)
NURSE_NUMBER = "13900000000"  # ivr/menu.toml


# --- fakes -----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeRoster:
    snapshot: Roster
    partners: Mapping[str, int]

    def roster(self) -> Roster:
        return self.snapshot

    def partner_numbers(self) -> Mapping[str, int]:
        return self.partners


class RecordingSink:
    def __init__(self) -> None:
        self.submitted: list[tuple[Case, bool]] = []

    def submit(self, case: Case, final: bool = False) -> None:
        self.submitted.append((copy.deepcopy(case), final))


def build_roster() -> Roster:
    day = timedelta(days=1)
    return Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial trauma", ring_s=20, repeats=0)},
        surgeons={PRIMARY.id: PRIMARY, BACKUP.id: BACKUP},
        shifts=(Shift("facial", PRIMARY.id, Role.PRIMARY, T0 - day, T0 + day),
                Shift("facial", BACKUP.id, Role.BACKUP, T0 - day, T0 + day)),
    )


@dataclass
class Hotline:
    desk: CallDesk
    sink: RecordingSink
    clock: Clock
    recordings: Path

    def case(self, linkedid: str = LINKEDID) -> Case:
        return self.desk.calls[linkedid].case


@pytest.fixture
def hotline(tmp_path) -> Hotline:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    sink = RecordingSink()
    counter = iter(range(1, 1000))
    desk = CallDesk(load_menu(MENU_FILE), FakeRoster(build_roster(), {PARTNER_NUMBER: 7}), sink,
                    new_id=lambda at: f"C-{next(counter):04d}")
    return Hotline(desk, sink, Clock(), recordings.resolve())


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog):
    """asyncio logs (rather than raises) unhandled task errors: treat any as a failure."""
    yield
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


# --- the fake Asterisk -------------------------------------------------------------------------

def OK_REPLY(command: str) -> str:
    return "200 result=1\n"


@dataclass
class Request:
    """One AGI request as the dialplan makes it: AGI(agi://host:port/<route>?linkedid=...,args)."""

    route: str
    args: Sequence[str] = ()
    linkedid: str | None = LINKEDID
    callerid: str = CALLER
    channel: str = CALLER_CHANNEL
    script: str | None = None  # the whole agi_network_script, replacing route + linkedid
    raw_env: bytes | None = None  # bytes sent instead of the environment built here
    respond: Callable[[str], str | None] = OK_REPLY
    uniqueid: str = "1795633620.0"  # the channel's own: the caller's is the linkedid

    def environment(self, port: int) -> bytes:
        if self.raw_env is not None:
            return self.raw_env
        script = self.script
        if script is None:
            script = self.route if self.linkedid is None else f"{self.route}?linkedid={self.linkedid}"
        lines = [
            ("agi_network", "yes"),
            ("agi_network_script", script),
            ("agi_request", f"agi://127.0.0.1:{port}/{script}"),
            ("agi_channel", self.channel),
            ("agi_language", "en"),
            ("agi_type", "PJSIP"),
            ("agi_uniqueid", self.uniqueid),
            ("agi_version", "22.10.1+dfsg+~cs6.17.60671434-1"),
            ("agi_callerid", self.callerid),
            ("agi_calleridname", "unknown"),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", "96608"),
            ("agi_rdnis", "unknown"),
            ("agi_context", "hotline-inbound"),
            ("agi_extension", "s"),
            ("agi_priority", "7"),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", ""),
            ("agi_threadid", "140700372162240"),
        ]
        lines += [(f"agi_arg_{i}", arg) for i, arg in enumerate(self.args, start=1)]
        return "".join(f"{k}: {v}\n" for k, v in lines).encode("utf-8") + b"\n"


def unquote(text: str) -> str:
    """Read back one argument written by fastagi.quote_arg."""
    assert text.startswith('"') and text.endswith('"'), text
    out, escaped = [], False
    for ch in text[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            assert ch != '"', f"unescaped quote in {text!r}"
            out.append(ch)
    assert not escaped
    return "".join(out)


@dataclass
class Session:
    commands: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def sets(self) -> list[tuple[str, str]]:
        found = []
        for command in self.commands:
            assert command.startswith("SET VARIABLE "), command
            name, _, value = command[len("SET VARIABLE "):].partition(" ")
            found.append((name, unquote(value)))
        return found

    @property
    def variables(self) -> dict[str, str]:
        return dict(self.sets)

    @property
    def ok(self) -> bool:
        return (V.OK, "1") in self.sets

    @property
    def error(self) -> str | None:
        return self.variables.get(ERROR_VARIABLE)


async def play(port: int, request: Request) -> Session:
    session = Session()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.environment(port))
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                break
            session.raw += line
            session.commands.append(line.decode("utf-8").removesuffix("\n"))
            reply = request.respond(session.commands[-1])
            if reply is None:
                break
            writer.write(reply.encode())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return session


def serve(hotline: Hotline, *requests: Request, lookup=None) -> tuple[list[Session], ServerStats]:
    """Start a FastAgiServer on a free loopback port and play the requests one after another."""
    async def main():
        server = FastAgiServer(build_routes(hotline.desk, hotline.clock, hotline.recordings,
                                            lookup=lookup),
                               host="127.0.0.1", port=0)
        async with server:
            sessions = []
            for request in requests:
                sessions.append(await play(server.port, request))
                hotline.clock.advance(1)
        return sessions, server.stats

    async def bounded():
        async with asyncio.timeout(20):
            return await main()

    return asyncio.run(bounded())


def call_end_args(source: str = CALLER_CHANNEL, cause: str = "16", status: str = "",
                  accepted: str = "", attempt: str = "", answered: str = "", dialed: str = "",
                  system: str = "", voicemail: str = "", fallback: str = "") -> tuple[str, ...]:
    """The ten arguments of the hangup handler's call_end request, in the dialplan's order."""
    return (source, cause, status, accepted, attempt, answered, dialed, system, voicemail, fallback)


# --- the call path -----------------------------------------------------------------------------

def test_call_start_sets_case_id_and_route_then_ok_last(hotline):
    (session,), stats = serve(hotline, Request("call_start"))
    assert session.sets == [(V.CASE_ID, "C-0001"), (V.ROUTE, "menu"), (V.OK, "1")]
    case = hotline.case()
    assert (case.case_id, case.linkedid, case.started_at) == ("C-0001", LINKEDID, T0)
    assert case.caller.caller_class is CallerClass.PUBLIC and case.caller.number == CALLER
    assert hotline.desk.calls[LINKEDID].channel == CALLER_CHANNEL
    assert (stats.served, stats.handler_failures) == (1, 0)


def test_call_start_of_a_partner_hospital_takes_the_referral_route(hotline):
    (session,), _ = serve(hotline, Request("call_start", callerid="+8643188888888"))
    assert session.sets[1:] == [(V.ROUTE, "referral"), (V.OK, "1")]
    assert hotline.case().caller.hospital_id == 7


@pytest.mark.parametrize("callerid", ["", "unknown"])
def test_call_start_without_a_number_is_anonymous(hotline, callerid):
    (session,), _ = serve(hotline, Request("call_start", callerid=callerid))
    assert session.ok
    assert hotline.case().caller.caller_class is CallerClass.ANONYMOUS


def test_a_whole_call_through_the_server(hotline):
    sessions, stats = serve(
        hotline,
        Request("call_start"),
        Request("menu", ["timeout"]),
        Request("menu", ["1"]),
        Request("route", ["facial", "1"]),
        Request("attempt_ended", ["1", "NOANSWER", "", "", "20"]),
        Request("accepted", ["2"], channel="PJSIP/surgeons-00000003"),
        Request("call_end", call_end_args(status="ANSWER", accepted="1", attempt="2",
                                          answered="95", dialed="104")),
    )
    start, menu, choice, route, ended, accepted, end = sessions
    assert start.ok and menu.sets == [(V.OK, "1")] and choice.sets == [(V.OK, "1")]
    assert route.sets == [
        (V.ACTION, "dial"), (V.TARGET, PRIMARY.phone), (V.RING_S, "20"), (V.ATTEMPT, "1"),
        (V.WHISPER, "whisper_facial"), (V.PARTNER, ""), (V.OK, "1"),
    ]
    assert ended.sets == [
        (V.ACTION, "dial"), (V.TARGET, BACKUP.phone), (V.RING_S, "20"), (V.ATTEMPT, "2"),
        (V.WHISPER, "whisper_facial"), (V.PARTNER, ""), (V.OK, "1"),
    ]
    assert accepted.sets == [(V.OK, "1")]
    assert end.sets == [(V.OK, "1")]
    assert (stats.served, stats.handler_failures) == (7, 0)

    assert hotline.desk.calls == {}
    case, final = hotline.sink.submitted[-1]
    assert final and case.outcome == "connected" and case.hangup_by == "caller"
    assert [(m.choice, m.at) for m in case.menu] == [("timeout", T0 + timedelta(seconds=1)),
                                                     ("1", T0 + timedelta(seconds=2))]
    assert [(a.outcome, a.ring_s, a.answered) for a in case.attempts] == [
        (AttemptOutcome.NO_ANSWER, 20, False), (AttemptOutcome.ACCEPTED, 1, True)]
    assert case.connected_at == T0 + timedelta(seconds=5)
    assert case.ended_at == T0 + timedelta(seconds=6)


def test_another_instance_adopts_a_call_it_never_saw_from_the_stored_case(hotline, tmp_path):
    # Instance 1 starts the call and rings the primary, then dies; the node asks
    # instance 2, whose desk has never seen the call: it reads the stored case
    # (what instance 1 wrote) and carries on -- the same case, the next phone.
    serve(hotline, Request("call_start"), Request("menu", ["1"]), Request("route", ["facial", "1"]))
    stored = {case.linkedid: copy.deepcopy(case) for case, _ in hotline.sink.submitted}
    second = CallDesk(load_menu(MENU_FILE), FakeRoster(build_roster(), {PARTNER_NUMBER: 7}),
                      RecordingSink(), new_id=lambda at: "C-9999")
    other = Hotline(second, second.sink, hotline.clock, hotline.recordings)
    looked_up: list[str] = []

    def lookup(linkedid: str):
        looked_up.append(linkedid)
        return copy.deepcopy(stored.get(linkedid))

    (ended, end), stats = serve(
        other, Request("attempt_ended", ["1", "NOANSWER", "", "", "20"]),
        Request("call_end", call_end_args(status="ANSWER", accepted="1", attempt="2",
                                          answered="30", dialed="40")), lookup=lookup)
    assert looked_up == [LINKEDID]  # once: the call is known from then on
    assert ended.sets[:3] == [(V.ACTION, "dial"), (V.TARGET, BACKUP.phone), (V.RING_S, "20")]
    assert ended.variables[V.ATTEMPT] == "2" and end.ok and stats.handler_failures == 0
    case, final = second.sink.submitted[-1]
    assert final and case.case_id == "C-0001" and case.outcome == "connected"
    assert [a.phone for a in case.attempts] == [PRIMARY.phone, BACKUP.phone]


def test_a_request_about_an_unknown_call_from_another_leg_is_not_adopted(hotline):
    # A surgeon's leg (or a queue member's Local channel) does not say who called:
    # no case is made from it, and the dialplan falls back.
    (accepted,), stats = serve(hotline, Request("accepted", ["1"], channel="PJSIP/surgeons-00000002",
                                                uniqueid="1795633620.1"),
                               lookup=lambda linkedid: None)
    assert not accepted.ok and stats.handler_failures == 1
    assert hotline.desk.calls == {} and hotline.sink.submitted == []


def test_a_call_unknown_everywhere_is_adopted_from_the_callers_own_request(hotline):
    # Issue 18 item 9: call_start went to a worker that hung; the one that replaced
    # it hears of the call first at the menu. It opens the case from the request --
    # the caller's number, and the start time Asterisk wrote into the linkedid --
    # and serves the call from then on.
    started = datetime.fromtimestamp(int(LINKEDID.split(".")[0]), timezone.utc)
    hotline.clock.now = started + timedelta(seconds=9)
    (menu, route), stats = serve(hotline, Request("menu", ["1"]), Request("route", ["facial", "1"]),
                                 lookup=lambda linkedid: None)
    assert menu.ok and route.ok and stats.handler_failures == 0
    assert route.variables[V.TARGET] == PRIMARY.phone
    case = hotline.desk.calls[LINKEDID].case
    assert case.started_at == started and case.caller.raw_safe == CALLER
    assert [m.choice for m in case.menu] == ["1"] and case.team == "facial"


def test_partner_route_sends_the_partner_id(hotline):
    (_, route), _ = serve(hotline, Request("call_start", callerid=PARTNER_NUMBER),
                          Request("route", ["facial", "partner"]))
    assert route.variables[V.PARTNER] == "7" and route.sets[-1] == (V.OK, "1")


def test_attempt_ended_after_the_nurse_says_voicemail_and_only_that(hotline):
    sessions, _ = serve(
        hotline,
        Request("call_start"),
        Request("route", ["nurse", "0"]),
        Request("attempt_ended", ["1", "NOANSWER", "", "", "30"]),
        Request("call_end", call_end_args(status="NOANSWER", attempt="1", dialed="30", system="1",
                                          voicemail=f"{hotline.recordings}/C-0001-voicemail.wav")),
    )
    assert sessions[1].variables[V.TARGET] == NURSE_NUMBER
    assert sessions[2].sets == [(V.ACTION, "voicemail"), (V.OK, "1")]
    assert sessions[3].ok
    case, final = hotline.sink.submitted[-1]
    assert final and (case.outcome, case.hangup_by) == ("voicemail", "system")
    assert case.voicemail_path == f"{hotline.recordings}/C-0001-voicemail.wav"


def test_accepted_for_attempt_0_is_the_static_fallback_and_touches_no_case(hotline):
    (session,), _ = serve(hotline, Request("accepted", ["0"], linkedid="1795639999.4"))
    assert session.sets == [(V.OK, "1")]
    assert hotline.desk.calls == {} and hotline.sink.submitted == []


def test_call_end_of_a_call_the_service_never_saw_records_a_fallback_case(hotline):
    (session,), _ = serve(hotline, Request("call_end", call_end_args(
        status="ANSWER", accepted="1", attempt="0", answered="30", dialed="36", fallback="1")))
    assert session.sets == [(V.OK, "1")]
    ((case, final),) = hotline.sink.submitted
    assert final and case.outcome == "fallback" and case.linkedid == LINKEDID


def test_call_end_on_a_dead_channel_still_records_the_case(hotline):
    """In the hangup handler Asterisk may refuse commands: the case is ended all the same."""
    dead = Request("call_end", call_end_args(status="CANCEL", attempt="1", dialed="7"),
                   respond=lambda cmd: "511 Command Not Permitted on a dead channel or intercept routine\n")
    sessions, stats = serve(hotline, Request("call_start"), Request("route", ["facial", "1"]), dead)
    assert sessions[2].commands == [f'SET VARIABLE {V.OK} "1"']  # tried once, refused with 511
    case, final = hotline.sink.submitted[-1]
    assert final and case.attempts[0].outcome is AttemptOutcome.CANCELLED
    assert stats.hangups == 1 and stats.handler_failures == 0


# --- hostile caller IDs ------------------------------------------------------------------------

HOSTILE_CALLER_IDS = [
    ("'; DROP TABLE cases;--", CallerClass.INVALID),
    ("$(reboot)", CallerClass.INVALID),
    ("500&PJSIP/trunk/0014165551212", CallerClass.INVALID),
    ("\\x00", CallerClass.INVALID),  # the four characters, as a SIP From user could carry them
    ("../../etc/passwd", CallerClass.INVALID),
    ("1" * 1000, CallerClass.INVALID),  # 1 kB: fits the server's line limit with its key
    ("Zx" * 500, CallerClass.INVALID),
    ("王医生 ☎ \u202e1234", CallerClass.INVALID),
    ("１３８００１３８０００", CallerClass.INVALID),  # fullwidth digits: not dialable
    ("١٣٨٠٠١٣٨٠٠٠", CallerClass.INVALID),  # Arabic-Indic digits
    ("anonymous", CallerClass.ANONYMOUS),
    ("Anonymous ", CallerClass.ANONYMOUS),
    ("\"Dr. Li\" <sip:1@x>", CallerClass.INVALID),
]


@pytest.mark.parametrize(("callerid", "expected"), HOSTILE_CALLER_IDS)
def test_hostile_caller_id_opens_a_case_and_nothing_of_it_goes_back(hotline, callerid, expected):
    sessions, stats = serve(hotline, Request("call_start", callerid=callerid),
                            Request("call_start", linkedid="1795633621.0"))
    session = sessions[0]
    assert session.sets == [(V.CASE_ID, "C-0001"), (V.ROUTE, "menu"), (V.OK, "1")]
    assert b"\r" not in session.raw
    assert all("\r" not in value and "\n" not in value for _, value in session.sets)
    assert callerid.strip() not in "".join(session.commands) or callerid.strip() == ""
    caller = hotline.case().caller
    assert caller.caller_class is expected and caller.hospital_id is None and caller.number is None
    assert caller.raw == callerid[:RAW_KEEP]
    assert len(caller.raw_safe) <= 64 and caller.raw_safe.isprintable()
    assert sessions[1].ok and stats.served == 2


def test_caller_id_that_is_not_utf8_is_invalid_and_kept_replaced(hotline):
    env = Request("call_start").environment(0).replace(
        f"agi_callerid: {CALLER}\n".encode(), b"agi_callerid: 138\xff\xfe00\n")
    (session,), _ = serve(hotline, Request("call_start", raw_env=env))
    assert session.ok
    assert hotline.case().caller.caller_class is CallerClass.INVALID


@pytest.mark.parametrize("injected", [
    b"138\x00; System(reboot)",  # NUL: no C string from Asterisk holds one
    b"138\rEXEC System reboot",
    b"138\nagi_network_script: call_end?linkedid=1795633620.0",  # a second script line
    b"1" * 1011,  # over the server's 1024-byte line limit once the key is added
])
def test_caller_id_that_breaks_the_environment_is_refused_and_the_next_call_is_served(hotline, injected):
    env = Request("call_start").environment(0).replace(f"agi_callerid: {CALLER}\n".encode(),
                                                       b"agi_callerid: " + injected + b"\n")
    sessions, stats = serve(hotline, Request("call_start", raw_env=env),
                            Request("call_start", linkedid="1795633621.0"))
    assert not sessions[0].ok
    assert LINKEDID not in hotline.desk.calls
    assert sessions[1].ok and "1795633621.0" in hotline.desk.calls
    assert stats.served == 1 and stats.dropped + stats.bad_requests == 1


def test_caller_id_at_the_line_limit_is_still_served(hotline):
    callerid = "1" * (1024 - len("agi_callerid: "))
    (session,), _ = serve(hotline, Request("call_start", callerid=callerid))
    assert session.ok and hotline.case().caller.raw == callerid


# --- invalid requests ---------------------------------------------------------------------------

OTHER = "1795633621.0"
INVALID_REQUESTS = {
    "team with dialplan": Request("route", ["FACIAL; System(x)", "1"]),
    "team upper case": Request("route", ["FACIAL", "1"]),
    "team unknown": Request("route", ["cardiac", "1"]),
    "team missing": Request("route", []),
    "key 12": Request("route", ["facial", "12"]),
    "key star": Request("route", ["facial", "*"]),
    "key missing": Request("route", ["facial"]),
    "linkedid missing": Request("route", ["facial", "1"], linkedid=None),
    "linkedid abc": Request("route", ["facial", "1"], linkedid="abc"),
    "linkedid empty": Request("route", ["facial", "1"], linkedid=""),
    "linkedid twice": Request("route", ["facial", "1"], script=f"route?linkedid={LINKEDID}&linkedid=x"),
    "linkedid with junk": Request("route", ["facial", "1"], linkedid=f"{LINKEDID};x"),
    "linkedid unknown": Request("route", ["facial", "1"], linkedid="1795639999.9"),
    "call_start linkedid abc": Request("call_start", linkedid="abc"),
    "call_start linkedid missing": Request("call_start", linkedid=None),
    "menu event with space": Request("menu", ["time out"]),
    "menu event unknown": Request("menu", ["hangup"]),
    "attempt not a number": Request("attempt_ended", ["1a", "NOANSWER", "", "", "20"]),
    "attempt missing": Request("attempt_ended", []),
    "dial status injected": Request("attempt_ended", ["1", "NOANSWER,1", "", "", "20"]),
    "accepted flag 3": Request("attempt_ended", ["1", "ANSWER", "3", "", "20"]),
    "dialed time negative": Request("attempt_ended", ["1", "NOANSWER", "", "", "-5"]),
    "accepted not a number": Request("accepted", ["1;2"]),
    "accepted unknown attempt": Request("accepted", ["5"]),
    "hangup source injected": Request("call_end", call_end_args(source="PJSIP/x,System(reboot)")),
    "voicemail outside": Request("call_end", call_end_args(voicemail="/tmp/elsewhere/C-0001-voicemail.wav")),
    "voicemail relative": Request("call_end", call_end_args(voicemail="C-0001-voicemail.wav")),
    "voicemail not ours": Request("call_end", call_end_args(voicemail="{rec}/evil.wav")),
    "voicemail with ..": Request("call_end", call_end_args(voicemail="{rec}/../{name}/C-0001-voicemail.wav")),
    "voicemail in a subdir": Request("call_end", call_end_args(voicemail="{rec}/x/C-0001-voicemail.wav")),
    "voicemail dotdot name": Request("call_end", call_end_args(voicemail="{rec}/..-voicemail.wav/../x-voicemail.wav")),
    "unknown route": Request("originate", ["x"]),
}


def _fill(request: Request, recordings: Path) -> Request:
    args = tuple(a.format(rec=recordings, name=recordings.name) for a in request.args)
    return Request(request.route, args, request.linkedid, request.callerid, request.channel,
                   request.script, request.raw_env, request.respond)


@pytest.mark.parametrize("bad", INVALID_REQUESTS.values(), ids=INVALID_REQUESTS.keys())
def test_invalid_request_gets_no_ok_and_the_server_serves_the_next(hotline, bad):
    sessions, stats = serve(
        hotline,
        Request("call_start"),
        Request("route", ["facial", "1"]) if bad.route in ("attempt_ended", "accepted") else Request("menu", ["invalid"]),
        _fill(bad, hotline.recordings),
        Request("call_start", linkedid=OTHER),
        Request("menu", ["timeout"], linkedid=OTHER),
    )
    refused = sessions[2]
    assert not refused.ok
    assert refused.error in ("handler_failed", "unknown_route", "bad_request")
    assert b"\r" not in refused.raw
    assert sessions[3].ok and sessions[4].ok and OTHER in hotline.desk.calls
    assert stats.served == 4
    case = hotline.case()
    assert case.ended_at is None  # a refused call_end does not close the case half-read
    assert len(case.attempts) <= 1 and case.voicemail_path is None and case.connected_seq is None


def test_a_second_request_after_a_handler_error_works(hotline):
    sessions, stats = serve(
        hotline,
        Request("call_start"),
        Request("route", ["facial", "12"]),
        Request("route", ["facial", "1"]),
    )
    assert sessions[1].sets == [(ERROR_VARIABLE, "handler_failed")]
    assert sessions[2].ok and sessions[2].variables[V.ATTEMPT] == "1"
    assert (stats.served, stats.handler_failures) == (2, 1)


def test_concurrent_calls_are_kept_apart(hotline):
    async def main():
        server = FastAgiServer(build_routes(hotline.desk, hotline.clock, hotline.recordings),
                               host="127.0.0.1", port=0)
        async with server:
            ids = [f"17956336{n:02d}.0" for n in range(20)]
            starts = await asyncio.gather(*(play(server.port, Request("call_start", linkedid=i)) for i in ids))
            routes = await asyncio.gather(*(play(server.port, Request("route", ["facial", "1"], linkedid=i))
                                            for i in ids))
        return ids, starts, routes

    ids, starts, routes = asyncio.run(main())
    assert all(s.ok for s in starts) and all(r.variables[V.ATTEMPT] == "1" for r in routes)
    assert len({s.variables[V.CASE_ID] for s in starts}) == 20
    assert set(hotline.desk.calls) == set(ids)


# --- issue 18 item 2: the proof, and requests the desk disagrees with ---------------------

def test_the_proof_is_the_dialplans_sha1_and_is_checked_against_route_and_call():
    import hashlib

    from ivr.fastagi import AgiRequest
    from ivr.handlers import ProofCheck, request_proof

    key = "k" * 32
    assert request_proof(key, LINKEDID, "menu") == hashlib.sha1(
        f"{key}:{LINKEDID}:menu".encode()).hexdigest()
    check = ProofCheck(key)

    def request(script: str) -> AgiRequest:
        return AgiRequest.from_env({"agi_network_script": script})

    good = request_proof(key, LINKEDID, "menu")
    assert check(request(f"menu?linkedid={LINKEDID}&proof={good}"))
    assert not check(request(f"route?linkedid={LINKEDID}&proof={good}"))
    assert not check(request(f"menu?linkedid={OTHER}&proof={good}"))
    assert not check(request(f"menu?linkedid={LINKEDID}"))
    assert not check(request(f"menu?linkedid={LINKEDID}&proof=%E4%B8%AD"))
    assert key not in repr(check)
    with pytest.raises(ValueError):
        ProofCheck("")


def test_an_accept_for_an_attempt_not_ringing_changes_nothing(hotline):
    sessions, stats = serve(
        hotline, Request("call_start"), Request("route", ["facial", "1"]),
        Request("accepted", ["2"]),  # never ordered
        Request("attempt_ended", ["1", "NOANSWER", "", "", "20"]),
        Request("accepted", ["1"]),  # rang out already
        Request("attempt_ended", ["1", "NOANSWER", "", "", "20"]))  # not the ringing one
    assert [s.ok for s in sessions] == [True, True, False, True, False, False]
    case = hotline.desk.calls[LINKEDID].case
    assert case.connected_seq is None
    assert [(a.seq, a.outcome) for a in case.attempts] == [(1, AttemptOutcome.NO_ANSWER), (2, None)]


def test_a_call_end_for_an_ended_call_changes_nothing(hotline):
    voicemail = str(hotline.recordings / "C-0001-voicemail.wav")
    sessions, _ = serve(hotline, Request("call_start"), Request("call_end", call_end_args()),
                        Request("call_end", call_end_args(voicemail=voicemail, fallback="1")))
    assert all(s.ok for s in sessions)
    finals = [case for case, final in hotline.sink.submitted if final]
    assert len(finals) == 1 and finals[0].voicemail_path is None and not finals[0].fallback


def test_a_call_end_for_a_call_another_instance_ended_changes_nothing(hotline):
    serve(hotline, Request("call_start"), Request("call_end", call_end_args()))
    ended = copy.deepcopy(hotline.sink.submitted[-1][0])
    second = CallDesk(load_menu(MENU_FILE), FakeRoster(build_roster(), {}), RecordingSink())
    other = Hotline(second, second.sink, hotline.clock, hotline.recordings)
    (end,), _ = serve(other, Request("call_end", call_end_args(fallback="1")),
                      lookup=lambda linkedid: copy.deepcopy(ended))
    assert end.ok and second.sink.submitted == [] and LINKEDID in second.ended
