"""The live page (/live/) and its JSON, with a fake live source; the AMI poller
(console.livecalls) against a fake Asterisk replaying CoreShowChannels answers
recorded from Asterisk 22.10 (tests/integration/test_console_live_calls.py
runs the same against the real one)."""
from __future__ import annotations

import doctest
import logging
import re
import socket
import socketserver
import threading
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from console import livecalls
from console.live import LIVE_SOURCE, hub
from console.livecalls import (
    AmiLiveSource,
    CallState,
    LiveCall,
    LiveSnapshot,
    StaticLiveSource,
    Status,
    calls_from_channels,
)
from db.models import AuditRow, CaseRow
from db.roster_store import RosterStore
from ivr.ami import AmiParser
from oncall.model import Role
from oncall.rotation import Rotation
from tests.support.clock import Clock
from tests.support.console import console_app, seed_people, sign_in

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=SH)
SECRET = "console-s3cret"
LINKEDID = "1796101903.0"

# CoreShowChannels events recorded from Asterisk 22.10 during one hotline call
# through the real dialplan (caller 13611119901 presses 1; the primary does not
# answer, the backup 13700000102 picks up, hears the whisper, presses 1).
RECORDED = {
    "menu": """\
Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/caller-00000000
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: 13611119901
CallerIDName: <unknown>
ConnectedLineNum: <unknown>
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-menu
Exten: s
Priority: 3
Uniqueid: 1796101903.0
Linkedid: 1796101903.0
Application: Read
ApplicationData: HOTLINE_CHOICE,/var/hl/prompts/zh/greeting,1,,1,3
Duration: 00:00:00
BridgeId:
""",
    "ringing": """\
Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/surgeons-00000001
ChannelState: 5
ChannelStateDesc: Ringing
CallerIDNum: s
CallerIDName: <unknown>
ConnectedLineNum: 13611119901
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-from-surgeons
Exten: s
Priority: 1
Uniqueid: 1796101906.1
Linkedid: 1796101903.0
Application: AppDial
ApplicationData: (Outgoing Line)
Duration: 00:00:00
BridgeId:

Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/caller-00000000
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: 13611119901
CallerIDName: <unknown>
ConnectedLineNum: s
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-route
Exten: s
Priority: 22
Uniqueid: 1796101903.0
Linkedid: 1796101903.0
Application: Dial
ApplicationData: PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261201-131143-317eb0^1)
Duration: 00:00:02
BridgeId:
""",
    "answering": """\
Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/surgeons-00000002
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: s
CallerIDName: <unknown>
ConnectedLineNum: 13611119901
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-whisper
Exten: s
Priority: 6
Uniqueid: 1796101913.2
Linkedid: 1796101903.0
Application: Read
ApplicationData: HOTLINE_KEY,/var/hl/prompts/zh/whisper_facial&/var/hl/prompts/zh/press1,1,,1,4
Duration: 00:00:00
BridgeId:

Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/caller-00000000
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: 13611119901
CallerIDName: <unknown>
ConnectedLineNum: s
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-route
Exten: s
Priority: 22
Uniqueid: 1796101903.0
Linkedid: 1796101903.0
Application: Dial
ApplicationData: PJSIP/13700000102@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261201-131143-317eb0^2)
Duration: 00:00:11
BridgeId:
""",
    "bridged": """\
Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/surgeons-00000002
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: s
CallerIDName: <unknown>
ConnectedLineNum: 13611119901
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-from-surgeons
Exten:
Priority: 1
Uniqueid: 1796101913.2
Linkedid: 1796101903.0
Application: AppDial
ApplicationData: (Outgoing Line)
Duration: 00:00:01
BridgeId: 280f7d81-1ce1-4923-81d2-0f326aa6d8f2

Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/caller-00000000
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: 13611119901
CallerIDName: <unknown>
ConnectedLineNum: s
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-route
Exten: s
Priority: 22
Uniqueid: 1796101903.0
Linkedid: 1796101903.0
Application: Dial
ApplicationData: PJSIP/13700000102@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261201-131143-317eb0^2)
Duration: 00:00:12
BridgeId: 280f7d81-1ce1-4923-81d2-0f326aa6d8f2
""",
}


def events(text: str):
    """The events of a transcript section, parsed as the AMI client parses them."""
    data = "".join(e.strip("\n").replace("\n", "\r\n") + "\r\n\r\n"
                   for e in text.split("\n\n") if e.strip())
    return AmiParser().feed(data.replace("{ActionID}", "a-1").encode())


# --------------------------------------------------------------------------- parsing


def test_docstring_examples():
    assert doctest.testmod(livecalls).failed == 0


def test_a_recorded_call_in_the_menu():
    (call,) = calls_from_channels(events(RECORDED["menu"]))
    assert call == LiveCall(LINKEDID, "13611119901", "", CallState.IVR, 0, None, 1)


def test_a_recorded_call_ringing_a_surgeon():
    (call,) = calls_from_channels(events(RECORDED["ringing"]))
    assert call.state is CallState.RINGING and call.target == "13700000101"
    assert call.caller == "13611119901" and call.channels == 2 and call.duration_s == 2
    assert call.linkedid == LINKEDID  # grouped by Linkedid, the caller's channel leads


def test_a_recorded_call_whose_surgeon_hears_the_whisper():
    (call,) = calls_from_channels(events(RECORDED["answering"]))
    assert call.state is CallState.ANSWERING and call.target == "13700000102"


def test_a_recorded_bridged_call():
    (call,) = calls_from_channels(events(RECORDED["bridged"]))
    assert call.state is CallState.BRIDGED and call.target == "13700000102"
    assert call.duration_s == 12 and not call.forged


def test_several_calls_longest_first_and_other_events_ignored():
    other = RECORDED["menu"].replace(LINKEDID, "1796101999.7").replace(
        "13611119901", "13900001111").replace("Duration: 00:00:00", "Duration: 01:00:05")
    found = calls_from_channels(events(RECORDED["bridged"] + "\n" + other + "\n"
                                       "Event: CoreShowChannelsComplete\nActionID: a-1\n"
                                       "EventList: Complete\nListItems: 3\n"))
    assert [(c.caller, c.duration_s) for c in found] == [("13900001111", 3605),
                                                        ("13611119901", 12)]
    assert calls_from_channels([]) == []


HOSTILE = """\
Event: CoreShowChannel
ActionID: {ActionID}
Channel: PJSIP/caller-00000009
ChannelState: 6
ChannelStateDesc: Up
CallerIDNum: <script>alert(1)</script>
CallerIDName: Dr. \u202eevil\x07
Linkedid: 1.1
Uniqueid: 1.1
Application: Dial
ApplicationData: PJSIP/99999@surgeons,1
ConnectedLineNum: <unknown>
ConnectedLineName: <unknown>
Language: en
AccountCode:
Context: hotline-route
Exten: s
Priority: 22
Uniqueid: 1796200000.5
Linkedid: 1796200000.5
Application: Read
ApplicationData: HOTLINE_CHOICE,/var/hl/prompts/zh/greeting,1,,1,3
Duration: 00:00:07
BridgeId:
"""


def test_a_caller_id_with_forged_header_lines_is_flagged_and_cannot_move_the_call():
    # A caller ID carrying CR/LF shows up as extra header lines before the real
    # Uniqueid/Linkedid/Application: the last ones are Asterisk's own.
    (call,) = calls_from_channels(events(HOSTILE))
    assert call.forged
    assert call.linkedid == "1796200000.5" and call.state is CallState.IVR and call.target is None
    assert call.caller == "<script>alert(1)</script>"  # text; the page escapes it
    assert call.caller_name == "Dr. \\u202eevil\\x07"  # bidi and control characters escaped


def test_a_caller_id_with_a_forged_blank_line_still_shows_the_call_flagged():
    # CR LF CR LF in a caller ID ends the event early; its rest (with the ids)
    # comes as a message of its own without our ActionID, so never in the list.
    cut = ("Event: CoreShowChannel\r\nActionID: a-1\r\nChannel: PJSIP/caller-0000000a\r\n"
           "ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 13611112222\r\n"
           "CallerIDName: x\r\n\r\n")
    (call,) = calls_from_channels(AmiParser().feed(cut.encode()))
    assert call.forged and call.caller == "13611112222" and call.linkedid == "PJSIP/caller-0000000a"


def test_a_caller_leaving_a_voicemail():
    (call,) = calls_from_channels(events(RECORDED["menu"].replace("Application: Read",
                                                                  "Application: Record")))
    assert call.state is CallState.VOICEMAIL


def test_a_long_caller_id_is_cut():
    long = RECORDED["menu"].replace("CallerIDNum: 13611119901", "CallerIDNum: " + "9" * 500)
    (call,) = calls_from_channels(events(long))
    assert len(call.caller) <= 64 and call.caller.endswith("…")


# --------------------------------------------------------------------------- a fake Asterisk


class FakeAsterisk:
    """Asterisk's AMI, as far as the live board uses it, over a real loopback socket.

    Answers Login (refused for a wrong secret, then closes, as Asterisk does),
    Ping, and CoreShowChannels with `channels` (transcript text; "" = no
    calls). `refuse_list`: answer CoreShowChannels "Permission denied";
    `silent`: never answer it (a hung Asterisk).
    """

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.channels = ""
        self.refuse_list = False
        self.silent = False
        self.actions: list[dict[str, list[str]]] = []
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> "FakeAsterisk":
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._serve(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler,
                                                 bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in list(self._socks):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)

    def __enter__(self) -> "FakeAsterisk":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, action: str) -> int:
        return sum(1 for a in list(self.actions) if a["Action"][0] == action)

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)
        buffer = b""
        try:
            sock.sendall(b"Asterisk Call Manager/11.0.0\r\n")
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                raw, buffer = buffer.split(b"\r\n\r\n", 1)
                action: dict[str, list[str]] = {}
                for line in raw.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    action.setdefault(key, []).append(value)
                self.actions.append(action)
                name, aid = action["Action"][0], action["ActionID"][0]
                if name == "Login":
                    if action.get("Secret") != [self.secret]:
                        sock.sendall(_wire(f"Response: Error\nActionID: {aid}\n"
                                           "Message: Authentication failed"))
                        return
                    sock.sendall(_wire(f"Response: Success\nActionID: {aid}\n"
                                       "Message: Authentication accepted"))
                elif name == "CoreShowChannels":
                    sock.sendall(self._channels(aid))
                elif name == "Ping":
                    sock.sendall(_wire(f"Response: Success\nActionID: {aid}\nPing: Pong"))
                else:
                    sock.sendall(_wire(f"Response: Error\nActionID: {aid}\n"
                                       "Message: Invalid/unknown command"))
        except OSError:
            return
        finally:
            with self._lock:
                self._socks.discard(sock)
            sock.close()

    def _channels(self, aid: str) -> bytes:
        if self.silent:
            return b""
        if self.refuse_list:
            return _wire(f"Response: Error\nActionID: {aid}\nMessage: Permission denied")
        listed = [e.strip("\n") for e in self.channels.split("\n\n") if e.strip()]
        out = _wire(f"Response: Success\nActionID: {aid}\nEventList: start\n"
                    "Message: Channels will follow")
        for event in listed:
            out += _wire(event.replace("{ActionID}", aid))
        return out + _wire(f"Event: CoreShowChannelsComplete\nActionID: {aid}\n"
                           f"EventList: Complete\nListItems: {len(listed)}")


def _wire(message: str) -> bytes:
    return message.replace("\n", "\r\n").encode() + b"\r\n\r\n"


def wait_for(predicate, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def quiet_secret(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def poller(port: int, secret: str = SECRET, **kw) -> AmiLiveSource:
    kw.setdefault("interval_s", 0.05)
    kw.setdefault("refused_retry_s", 0.1)
    return AmiLiveSource("127.0.0.1", port, "console", secret, **kw)


def test_the_poller_lists_calls_while_they_last(quiet_secret):
    with FakeAsterisk() as fake:
        fake.channels = RECORDED["ringing"]
        source = poller(fake.port)
        assert source.snapshot().status is Status.STARTING
        source.start()
        try:
            snap = wait_for(lambda: source.snapshot().calls and source.snapshot(), what="a call")
            assert snap.ok and snap.polled_at is not None
            assert snap.calls[0].state is CallState.RINGING
            fake.channels = RECORDED["bridged"]
            wait_for(lambda: source.snapshot().calls[0].state is CallState.BRIDGED, what="bridged")
            fake.channels = ""
            wait_for(lambda: source.snapshot().ok and not source.snapshot().calls, what="hang-up")
        finally:
            source.stop()
        assert fake.count("Login") == 1 and fake.count("CoreShowChannels") >= 3
        (login,) = [a for a in fake.actions if a["Action"] == ["Login"]]
        assert login["Username"] == ["console"] and login["Events"] == ["off"]
        polls = fake.count("CoreShowChannels")
        time.sleep(0.2)
        assert fake.count("CoreShowChannels") == polls  # stopped means stopped
    assert not [t for t in threading.enumerate() if t.name == "console-live-ami"]


def test_hostile_caller_ids_through_the_poller(quiet_secret):
    with FakeAsterisk() as fake:
        fake.channels = HOSTILE
        source = poller(fake.port)
        source.start()
        try:
            snap = wait_for(lambda: source.snapshot().calls and source.snapshot(), what="a call")
        finally:
            source.stop()
    (call,) = snap.calls
    assert call.forged and call.linkedid == "1796200000.5"
    assert call.caller == "<script>alert(1)</script>" and "\u202e" not in call.caller_name


def test_unreachable_then_reachable_then_gone_then_back(quiet_secret):
    port = free_port()
    source = poller(port)
    source.start()
    try:
        wait_for(lambda: source.snapshot().status is Status.UNREACHABLE, what="unreachable")
        fake = FakeAsterisk().start(port)
        fake.channels = RECORDED["menu"]
        wait_for(lambda: source.snapshot().calls, what="first login")
        fake.stop()
        wait_for(lambda: source.snapshot().status is Status.UNREACHABLE, what="drop noticed")
        assert source.snapshot().calls == ()  # never the last calls as if they were current
        fake = FakeAsterisk().start(port)
        fake.channels = RECORDED["menu"]
        wait_for(lambda: source.snapshot().calls, what="reconnect")
        fake.stop()
    finally:
        source.stop()


def test_a_refused_login_or_action_reads_as_refused(quiet_secret):
    with FakeAsterisk(secret="another") as fake:
        source = poller(fake.port)
        source.start()
        try:
            wait_for(lambda: source.snapshot().status is Status.REFUSED, what="refused login")
        finally:
            source.stop()
    with FakeAsterisk() as fake:
        fake.refuse_list = True
        source = poller(fake.port)
        source.start()
        try:
            wait_for(lambda: source.snapshot().status is Status.REFUSED, what="refused list")
            fake.refuse_list = False
            wait_for(lambda: source.snapshot().ok, what="allowed again")
        finally:
            source.stop()


def test_a_hung_asterisk_reads_as_unreachable(quiet_secret):
    with FakeAsterisk() as fake:
        fake.silent = True
        source = poller(fake.port, action_timeout_s=0.3)
        source.start()
        try:
            wait_for(lambda: fake.count("CoreShowChannels"), what="a poll")
            wait_for(lambda: source.snapshot().status is Status.UNREACHABLE, what="timeout")
        finally:
            source.stop()


def test_a_stale_snapshot_reads_as_unreachable():
    source = poller(free_port(), stale_after_s=0.05)  # never started: nothing refreshes it
    source._set(LiveSnapshot(Status.OK, tuple(calls_from_channels(events(RECORDED["menu"])))))
    assert source.snapshot().ok
    time.sleep(0.1)
    assert source.snapshot().status is Status.UNREACHABLE and source.snapshot().calls == ()
    source.stop()  # not started: a no-op


# --------------------------------------------------------------------------- the page


CALL = LiveCall(LINKEDID, "<script>alert(1)</script>", "Dr. <b>", CallState.BRIDGED, 75,
                "13800000001", 2)


@pytest.fixture
def source() -> StaticLiveSource:
    return StaticLiveSource(LiveSnapshot(Status.OK, (CALL,), NOW))


@pytest.fixture
def app(engine, source):
    seed_people(engine)
    store = RosterStore(engine, clock=lambda: NOW)
    store.add_rotation(Rotation.daily("facial", Role.PRIMARY, [1, 2], date(2026, 2, 27)),
                       actor="cli:test")
    store.add_rotation(Rotation.daily("facial", Role.BACKUP, [3], date(2026, 2, 27)),
                       actor="cli:test")
    app = console_app(engine, clock=Clock(NOW), **{LIVE_SOURCE: source})
    yield app
    hub(app).stop()


def client_as(app, who: str | None):
    client = app.test_client()
    if who:
        sign_in(client, who)
    return client


def audit_actions(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(a, s) for a, s in conn.execute(
            select(AuditRow.action, AuditRow.subject_id).order_by(AuditRow.id))]


def add_case(engine, linkedid: str, team: str = "facial", case_id: str = "20260302-090000-abc123"):
    with engine.begin() as conn:
        conn.execute(insert(CaseRow).values(
            case_id=case_id, linkedid=linkedid, revision=1, caller_number="13611119901",
            caller_class="public", caller_raw="x", caller_raw_safe="x", language="zh", team=team,
            started_at=NOW - timedelta(minutes=1), outcome="in-progress", updated_at=NOW))


@pytest.mark.parametrize("who", ["admin", "sup", "head"])
def test_staff_see_live_calls_and_who_is_on_call(app, engine, who):
    add_case(engine, LINKEDID)
    client = client_as(app, who)
    page = client.get("/live/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "Dr. &lt;b&gt;" in html
    assert "通话中" in html and "01:15" in html and "王建国" in html  # bridged to surgeon 1's phone
    assert "颌面部创伤" in html and "20260302-090000-abc123" in html
    # On call now (Mar 2 09:00): surgeon 2 primary (the daily 1, 2 rotation), 3 backup.
    chain = re.search(r'data-team="facial">(.*?)</div>', html, re.S).group(1)
    assert chain.index("李明") < chain.index("张伟")
    assert "无人值班" in html  # replant: nobody
    # The refresh is a script file of our own: no inline script, CSP intact.
    assert '<script src="/static/live.js">' in html
    assert re.search(r"<script>(?!alert)", html) is None
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]

    data = client.get("/live/calls.json")
    assert data.status_code == 200 and data.mimetype == "application/json"
    body = data.get_json()
    assert body["ami"] == {"ok": True, "status": "ok", "message": "已连接呼叫系统（AMI）",
                           "polled_at": "2026-03-02T09:00:00+08:00"}
    (call,) = body["calls"]
    assert call["caller"] == "<script>alert(1)</script>"  # JSON carries text; the script sets textContent
    assert call["state"] == "bridged" and call["duration"] == "01:15"
    assert call["team"] == "facial" and call["case_id"] == "20260302-090000-abc123"
    assert call["target"] == "13800000001" and call["target_name"] == "王建国"
    facial = next(c for c in body["chains"] if c["team"] == "facial")
    assert [(m["role"], m["surgeon_id"]) for m in facial["members"]] == [("primary", 2), ("backup", 3)]
    assert data.headers["Cache-Control"] == "no-store"


def test_the_live_page_speaks_english(app):
    client = client_as(app, "sup")
    client.get("/lang/en")
    html = client.get("/live/").get_data(as_text=True)
    assert "Calls in progress" in html and "Talking" in html and "Facial trauma" in html
    assert client.get("/live/calls.json").get_json()["calls"][0]["state_label"] == "Talking"


@pytest.mark.parametrize("path", ["/live/", "/live/calls.json"])
def test_a_surgeon_is_denied_the_live_board_and_it_is_audited(app, engine, path):
    client = client_as(app, "doc1")
    response = client.get(path)
    assert response.status_code == 403
    assert "alert" not in response.get_data(as_text=True)
    assert audit_actions(engine)[-1] == ("denied", path)


@pytest.mark.parametrize("path", ["/live/", "/live/calls.json"])
def test_signed_out_goes_to_sign_in(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("status, zh, en", [
    (Status.UNREACHABLE, "无法连接呼叫系统（AMI）", "The call system (AMI) is unreachable"),
    (Status.REFUSED, "拒绝了控制台账户", "refused the console"),
    (Status.NOT_CONFIGURED, "未配置呼叫系统（AMI）", "No call system (AMI) is configured"),
    (Status.STARTING, "正在连接呼叫系统", "Connecting to the call system"),
])
def test_without_ami_the_page_says_so_and_still_shows_the_chains(app, source, status, zh, en):
    source.current = LiveSnapshot(status)
    client = client_as(app, "head")
    html = client.get("/live/").get_data(as_text=True)
    assert zh in html and 'class="ami bad"' in html
    assert "李明" in html and "张伟" in html  # who is on call still shows
    body = client.get("/live/calls.json").get_json()
    assert body["ami"]["ok"] is False and body["ami"]["status"] == status.value
    assert body["calls"] == [] and body["chains"]
    client.get("/lang/en")
    assert en in client.get("/live/").get_data(as_text=True)


def test_the_live_source_starts_once_lazily_and_stops(engine):
    seed_people(engine)
    made: list[StaticLiveSource] = []

    def factory(app):
        made.append(StaticLiveSource(LiveSnapshot(Status.OK)))
        return made[-1]

    app = console_app(engine, **{LIVE_SOURCE: factory})
    assert made == []  # nothing runs until the first request needs it
    client = client_as(app, "sup")
    assert made == []
    for _ in range(3):
        assert client.get("/live/calls.json").status_code == 200
    assert len(made) == 1 and made[0].started == 1
    hub(app).stop()
    assert made[0].stopped == 1
    client.get("/live/calls.json")  # a later request starts a fresh one
    assert len(made) == 2
    hub(app).stop()


def test_an_app_without_an_instance_config_says_ami_is_not_configured(engine):
    seed_people(engine)
    app = console_app(engine)
    body = client_as(app, "admin").get("/live/calls.json").get_json()
    assert body["ami"]["status"] == "not_configured" and body["calls"] == []
    hub(app).stop()


def test_the_nav_shows_live_to_staff_only(app):
    assert 'href="/live/"' in client_as(app, "head").get("/rosters/").get_data(as_text=True)
    assert 'href="/live/"' not in client_as(app, "doc1").get("/rosters/").get_data(as_text=True)


def test_the_live_script_draws_text_only(app):
    script = client_as(app, None).get("/static/live.js")
    assert script.status_code == 200
    js = script.get_data(as_text=True)
    script.close()
    assert "innerHTML" not in js and "textContent" in js and "data-src" in js
