"""The Twilio Voice webhooks, walked call by call with requests signed as Twilio signs them.

No network: the Flask test client plays Twilio; the TwiML answers are parsed
and checked element by element; the case record is read back from the
database (SQLite and PostgreSQL).
"""
from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from carrier.twilio_voice import AUDIT_ACTION, create_voice_app
from db.models import AuditRow
from db.repo import CaseRepository
from db.seed import DEMO_HOSPITALS, DEMO_PARTNER_NUMBER, seed_partners, seed_roster
from ivr.menu import load_menu
from hotline.config import PROJECT_DIR
from oncall.model import Rank, Role, Shift, Surgeon, Team
from routing.escalation import AttemptOutcome

TOKEN = "test-token-" + "0" * 21
PUBLIC = "https://hotline.example.org"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
MENU = load_menu(PROJECT_DIR / "ivr" / "menu.toml")
PRIMARY, BACKUP = "13800000001", "13800000002"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def app(engine):
    # facial: 王建国 primary, 李明 backup; no repeat pass, so the chain is short.
    seed_roster(engine, [Team("facial", "颌面部创伤", "Facial trauma", repeats=0),
                         Team("referral", "转诊转运", "Referral", repeats=0)],
                [Surgeon(1, "王建国", PRIMARY, Rank.ATTENDING),
                 Surgeon(2, "李明", BACKUP, Rank.RESIDENT)],
                [Shift("facial", 1, Role.PRIMARY, T0 - timedelta(hours=8), T0 + timedelta(hours=8)),
                 Shift("facial", 2, Role.BACKUP, T0 - timedelta(hours=8), T0 + timedelta(hours=8)),
                 Shift("referral", 2, Role.PRIMARY, T0 - timedelta(hours=8),
                       T0 + timedelta(hours=8))])
    seed_partners(engine, DEMO_HOSPITALS[:1])
    return create_voice_app(menu=MENU, engine=engine, clock=Clock(), token=TOKEN,
                            public_url=PUBLIC)


def new_sid(prefix: str = "CA") -> str:
    return prefix + secrets.token_hex(16)


def post(client, url: str, params: dict, *, token: str = TOKEN, sign_url: str | None = None,
         signature: str | None = None, headers: dict | None = None):
    """POST as Twilio does: to the full public URL, signed over it and the form."""
    from twilio.request_validator import RequestValidator

    if not url.startswith("http"):
        url = PUBLIC + url
    if signature is None:
        signature = RequestValidator(token).compute_signature(sign_url or url, params)
    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    all_headers = {"X-Twilio-Signature": signature} if signature else {}
    all_headers.update(headers or {})
    return client.post(path, data=params, headers=all_headers)


def twiml(response) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Response"
    return root


def tags(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


class Call:
    """One caller's call, driven through the webhooks."""

    def __init__(self, client, caller: str = "13912345678") -> None:
        self.client, self.sid, self.caller = client, new_sid(), caller

    def post(self, url: str, **params: str):
        return post(self.client, url, {"CallSid": self.sid, "From": self.caller, **params})

    def leg(self, url: str, **params: str):
        """A request on the surgeon's leg (its own CallSid; the caller's as parent)."""
        return post(self.client, url, {"CallSid": new_sid(), "ParentCallSid": self.sid, **params})


def dial_of(root: ET.Element) -> ET.Element:
    dial = root.find("Dial")
    assert dial is not None, ET.tostring(root)
    return dial


def test_menu_no_answer_backup_accepts_completed(app, engine):
    client, cases = app.test_client(), CaseRepository(engine)
    call = Call(client)

    root = twiml(call.post("/twilio/voice"))
    assert tags(root) == ["Gather", "Redirect"]
    gather = root[0]
    assert gather.get("numDigits") == "1" and gather.get("timeout") == str(MENU.timeout_s)
    assert gather.get("action") == f"{PUBLIC}/twilio/menu?ev=0&try=0"
    assert [(s.tag, s.get("language")) for s in gather] == [("Say", "zh-CN")]
    assert gather[0].text == MENU.prompts["zh"]["greeting"]
    assert root[1].text == gather.get("action")

    root = twiml(call.post(gather.get("action"), Digits="1"))
    assert tags(root) == ["Say", "Dial"]
    assert root[0].text == MENU.prompts["zh"]["consent"]
    dial = dial_of(root)
    assert dial.get("action") == f"{PUBLIC}/twilio/step-done?seq=1"
    assert dial.get("timeout") == "25"
    assert dial.get("record") == "record-from-answer-dual"
    assert dial.get("recordingStatusCallback") == f"{PUBLIC}/twilio/recording?kind=call"
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+86" + PRIMARY)
    assert number.get("url") == f"{PUBLIC}/twilio/whisper?seq=1"

    # The primary's phone rings out.
    root = twiml(call.post(dial.get("action"), DialCallStatus="no-answer"))
    assert tags(root) == ["Say", "Dial"]
    assert root[0].text == MENU.prompts["zh"]["hold"]
    dial = dial_of(root)
    assert dial[0].text == "+86" + BACKUP and dial.get("action").endswith("seq=2")

    # The backup answers: the whisper asks for 1, and 1 bridges.
    whisper = twiml(call.leg(dial[0].get("url")))
    assert tags(whisper) == ["Gather"] * MENU.accept_tries + ["Hangup"]
    first = whisper[0]
    assert first.get("action") == f"{PUBLIC}/twilio/accept?seq=2"
    assert first.get("timeout") == str(MENU.accept_timeout_s)
    assert [s.text for s in first] == [MENU.prompts["zh"]["whisper_facial"],
                                       MENU.prompts["zh"]["press1"]]
    assert tags(twiml(call.leg(first.get("action"), Digits="1"))) == []

    # The conversation ends; Dial's action, the recording, then the status callback.
    assert tags(twiml(call.post(dial.get("action"), DialCallStatus="completed",
                                DialCallDuration="95"))) == ["Hangup"]
    rec_sid = new_sid("RE")
    url = f"https://api.twilio.com/2010-04-01/Accounts/AC{'1' * 32}/Recordings/{rec_sid}"
    response = call.post("/twilio/recording?kind=call", RecordingSid=rec_sid, RecordingUrl=url,
                         RecordingStatus="completed", RecordingDuration="95")
    assert response.status_code == 204
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204

    case = cases.get_by_linkedid(call.sid)
    assert case is not None and case.team == "facial"
    assert [m.choice for m in case.menu] == ["1"]
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        (PRIMARY, AttemptOutcome.NO_ANSWER), (BACKUP, AttemptOutcome.ACCEPTED)]
    assert case.connected_seq == 2 and case.connected_surgeon_id == 2
    assert case.outcome == "connected" and case.recording_path == url and case.recording_s == 95


def test_surgeon_declines_then_next_rings(app, engine):
    client = app.test_client()
    call = Call(client)
    twiml(call.post("/twilio/voice"))
    dial = dial_of(twiml(call.post("/twilio/menu?ev=0&try=0", Digits="1")))
    whisper = twiml(call.leg(dial[0].get("url")))
    # 2 declines: that leg hangs up; the caller's Dial then ends "completed".
    assert tags(twiml(call.leg(whisper[0].get("action"), Digits="2"))) == ["Hangup"]
    dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="completed")))
    assert dial[0].text == "+86" + BACKUP
    # No key at all (a voicemail box): the whisper's Hangup ends the leg, not accepted.
    dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="completed")))
    assert dial[0].text == "+86" + MENU.duty_nurse_number
    assert dial[0].get("url").endswith("whisper?seq=3")
    whisper = twiml(call.leg(dial[0].get("url")))
    assert whisper[0][0].text == MENU.prompts["zh"]["whisper_nurse"]
    # The nurse does not answer either: voicemail, then its recording opens a callback task.
    root = twiml(call.post(dial.get("action"), DialCallStatus="no-answer"))
    assert tags(root) == ["Say", "Say", "Record"]
    assert root[1].text == MENU.prompts["zh"]["voicemail"]
    record = root[2]
    assert record.get("recordingStatusCallback") == f"{PUBLIC}/twilio/recording?kind=voicemail"
    assert record.get("action") == f"{PUBLIC}/twilio/voicemail-done"
    rec_sid = new_sid("RE")
    url = f"https://api.twilio.com/2010-04-01/Accounts/AC{'2' * 32}/Recordings/{rec_sid}"
    assert tags(twiml(call.post(record.get("action")))) == ["Say", "Hangup"]
    assert call.post("/twilio/recording?kind=voicemail", RecordingSid=rec_sid, RecordingUrl=url,
                     RecordingStatus="completed").status_code == 204
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204

    cases = CaseRepository(engine)
    case = cases.get_by_linkedid(call.sid)
    assert [(a.outcome, a.answered) for a in case.attempts] == [
        (AttemptOutcome.DECLINED, True), (AttemptOutcome.NO_ANSWER, True),
        (AttemptOutcome.NO_ANSWER, False)]
    assert case.outcome == "voicemail" and case.voicemail_path == url
    assert [t.case_id for t in cases.callbacks()] == [case.case_id]


def test_caller_hangs_up_mid_chain_and_status_twice(app, engine):
    client, cases = app.test_client(), CaseRepository(engine)
    call = Call(client)
    twiml(call.post("/twilio/voice"))
    twiml(call.post("/twilio/menu?ev=0&try=0", Digits="1"))
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204
    once = cases.get_by_linkedid(call.sid)
    assert once.ended_at is not None and once.hangup_by == "caller"
    assert [a.outcome for a in once.attempts] == [AttemptOutcome.CANCELLED]
    assert once.outcome == "abandoned"
    # Twilio retries the same callback: one case, unchanged, one callback task.
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204
    twice = cases.get_by_linkedid(call.sid)
    assert (twice.case_id, twice.revision, twice.ended_at) == (once.case_id, once.revision,
                                                               once.ended_at)
    assert len(cases.callbacks()) == 1
    # A late whisper for that leg never bridges.
    assert tags(twiml(call.leg("/twilio/whisper?seq=1"))) == ["Hangup"]


def test_retried_webhooks_do_not_ring_twice(app, engine):
    client = app.test_client()
    call = Call(client)
    first = ET.tostring(twiml(call.post("/twilio/voice")))
    assert ET.tostring(twiml(call.post("/twilio/voice"))) == first
    dial = dial_of(twiml(call.post("/twilio/menu?ev=0&try=0", Digits="1")))
    again = dial_of(twiml(call.post("/twilio/menu?ev=0&try=0", Digits="3")))
    assert again[0].text == dial[0].text and again.get("action") == dial.get("action")
    next_dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="busy")))
    repeat = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="busy")))
    assert repeat.get("action") == next_dial.get("action")
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert len(case.attempts) == 2 and len(case.menu) == 1


def test_timeouts_and_junk_go_to_the_nurse(app, engine):
    client = app.test_client()
    call = Call(client)
    twiml(call.post("/twilio/voice"))
    root = twiml(call.post("/twilio/menu?ev=0&try=0"))  # no key
    assert root[0][0].text == MENU.prompts["zh"]["timeout"]
    action = root[0].get("action")
    assert action.endswith("ev=1&try=1")
    root = twiml(call.post(action, Digits="1;Dial(PJSIP/x)"))
    assert root[0][0].text == MENU.prompts["zh"]["invalid"]
    root = twiml(call.post(root[0].get("action"), Digits="#"))
    assert [s.text for s in root.findall("Say")] == [
        MENU.prompts["zh"]["invalid"], MENU.prompts["zh"]["to_nurse"], MENU.prompts["zh"]["consent"]]
    assert dial_of(root)[0].text == "+86" + MENU.duty_nurse_number
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert [m.choice for m in case.menu] == ["timeout", "invalid", "invalid"]
    assert case.team == "nurse"


def test_partner_goes_straight_to_referral(app):
    call = Call(app.test_client(), caller="+86" + DEMO_PARTNER_NUMBER[1:])
    root = twiml(call.post("/twilio/voice"))
    assert [s.text for s in root.findall("Say")][0] == MENU.prompts["zh"]["partner_greeting"]
    assert dial_of(root)[0].text == "+86" + BACKUP
    whisper = twiml(call.leg(dial_of(root)[0].get("url")))
    assert [s.text for s in whisper[0]] == [MENU.prompts["zh"]["whisper_referral"],
                                            MENU.prompts["zh"]["whisper_partner"],
                                            MENU.prompts["zh"]["press1"]]


def _audit_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(AuditRow).where(AuditRow.action == AUDIT_ACTION)).all()


@pytest.mark.parametrize("how", ["tampered", "wrong-host", "wrong-scheme", "missing",
                                 "wrong-token"])
def test_bad_signatures_are_refused_and_audited(app, engine, how):
    client = app.test_client()
    sid = new_sid()
    params = {"CallSid": sid, "From": "13912345678"}
    url = PUBLIC + "/twilio/voice"
    if how == "tampered":
        from twilio.request_validator import RequestValidator

        signature = RequestValidator(TOKEN).compute_signature(url, params)
        response = post(client, url, {**params, "From": DEMO_PARTNER_NUMBER}, signature=signature)
    elif how == "wrong-host":
        response = post(client, url, params, sign_url="https://evil.example.org/twilio/voice")
    elif how == "wrong-scheme":
        response = post(client, url, params, sign_url="http://hotline.example.org/twilio/voice")
    elif how == "wrong-token":
        response = post(client, url, params, token="another-token")
    else:
        response = post(client, url, params, signature="")
    assert response.status_code == 403
    [row] = _audit_rows(engine)
    assert (row.actor, row.subject, row.subject_id) == ("twilio", "twilio", "/twilio/voice")
    assert ("missing" if how == "missing" else "invalid") in row.detail
    assert CaseRepository(engine).get_by_linkedid(sid) is None


def test_missing_token_fails_closed(engine, caplog):
    app = create_voice_app(menu=MENU, engine=engine, clock=Clock(), token="", public_url=PUBLIC)
    assert "Twilio auth token missing" in caplog.text
    response = post(app.test_client(), "/twilio/voice", {"CallSid": new_sid()})
    assert response.status_code == 503
    assert "HOTLINE_TWILIO_AUTH_TOKEN" in response.get_data(as_text=True)


def test_hostile_fields_are_rejected(app):
    client = app.test_client()
    assert post(client, "/twilio/voice", {"CallSid": "CA' OR 1=1"}).status_code == 400
    call = Call(client)
    twiml(call.post("/twilio/voice"))
    assert call.post("/twilio/menu?ev=x&try=0", Digits="1").status_code == 400
    assert call.post("/twilio/step-done?seq=1", DialCallStatus="ANSWER\r\n").status_code == 400
    assert call.post("/twilio/recording?kind=call", RecordingSid=new_sid("RE"),
                     RecordingUrl="https://evil.example.org/x.wav",
                     RecordingStatus="completed").status_code == 400


def test_fallback_rings_the_duty_nurse(app, engine):
    call = Call(app.test_client())
    twiml(call.post("/twilio/voice"))
    root = twiml(call.post("/twilio/fallback"))
    assert tags(root) == ["Say", "Dial"]
    dial = dial_of(root)
    assert dial.get("timeout") == str(MENU.fallback_ring_s)
    assert [(n.tag, n.text, n.get("url")) for n in dial] == [
        ("Number", "+86" + MENU.duty_nurse_number, None)]
    assert CaseRepository(engine).get_by_linkedid(call.sid).fallback


def test_a_stale_snapshot_never_overwrites_a_concurrent_callback(app, engine):
    """The recording and status callbacks arrive together: both change the same
    revision; the one that saves second must reload, not overwrite."""
    from cases import lifecycle

    cases = CaseRepository(engine)
    call = Call(app.test_client())
    twiml(call.post("/twilio/voice"))
    stale = cases.get_by_linkedid(call.sid)
    before = stale.revision
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204
    lifecycle.set_recording(stale, T0 + timedelta(minutes=1), "https://api.twilio.com/x")
    assert stale.revision == cases.get_by_linkedid(call.sid).revision  # the same number...
    assert not cases.save(stale, expect_revision=before)  # ...but not written over it
    stored = cases.get_by_linkedid(call.sid)
    assert stored.ended_at is not None and stored.recording_path is None


def test_a_callback_for_an_unknown_call_is_404(app):
    response = post(app.test_client(), "/twilio/recording?kind=call",
                    {"CallSid": new_sid(), "RecordingSid": new_sid("RE"),
                     "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/AC{'3' * 32}"
                                     f"/Recordings/RE{'4' * 32}",
                     "RecordingStatus": "completed"})
    assert response.status_code == 404


def test_blocked_caller_hears_goodbye_and_nobody_rings(app, engine):
    from db.blocklist import BlockList

    BlockList(engine).add("13912345678", "骚扰电话", "sup")
    call = Call(app.test_client())
    root = twiml(call.post("/twilio/voice"))
    assert tags(root) == ["Say", "Hangup"]
    assert root[0].text == MENU.prompts["zh"]["goodbye"]
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert [m.choice for m in case.menu] == ["blocked"] and case.attempts == []


def test_english_then_callback_request(app, engine):
    call = Call(app.test_client())
    twiml(call.post("/twilio/voice"))
    root = twiml(call.post("/twilio/menu?ev=0&try=0", Digits=MENU.english_key))
    gather = root[0]
    assert gather.get("action").endswith("ev=1&try=0")
    assert [(s.text, s.get("language")) for s in gather] == [
        (MENU.prompts["en"]["greeting"], "en-US")]
    root = twiml(call.post(gather.get("action"), Digits=MENU.callback_key))
    assert tags(root) == ["Say", "Hangup"]
    assert root[0].text == MENU.prompts["en"]["callback_confirm"]
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204
    cases = CaseRepository(engine)
    case = cases.get_by_linkedid(call.sid)
    assert case.language == "en" and [m.choice for m in case.menu] == ["9", MENU.callback_key]
    assert [t.case_id for t in cases.callbacks()] == [case.case_id]


# -- major-incident mode: the team's on-call surgeons ring at once -----------------
class SteppingClock(Clock):
    """Clock that the test can also move on by whole minutes."""

    def jump(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def incident_app(app, engine):
    from db.incidents import IncidentStore

    IncidentStore(engine, clock=lambda: T0 - timedelta(minutes=5)).switch_on(
        "facial", "admin", "高速连环车祸")
    clock = SteppingClock()
    voice = create_voice_app(menu=MENU, engine=engine, clock=clock, token=TOKEN,
                             public_url=PUBLIC)
    return voice, clock


def test_incident_rings_every_on_call_surgeon_at_once_and_one_accepts(incident_app, engine):
    app, _ = incident_app
    call = Call(app.test_client())
    root = twiml(call.post("/twilio/voice"))
    gather = root[0]
    assert [s.text for s in gather] == [MENU.prompts["zh"]["incident"],
                                        MENU.prompts["zh"]["greeting"]]

    root = twiml(call.post(gather.get("action"), Digits="1"))
    assert tags(root) == ["Say", "Say", "Dial"]
    assert [root[0].text, root[1].text] == [MENU.prompts["zh"]["consent"],
                                            MENU.prompts["zh"]["incident_queue"]]
    dial = dial_of(root)
    assert dial.get("action") == f"{PUBLIC}/twilio/step-done?seq=1&n=2"
    assert dial.get("timeout") == "45"
    assert [(n.text, n.get("url")) for n in dial] == [
        ("+86" + PRIMARY, f"{PUBLIC}/twilio/whisper?seq=1"),
        ("+86" + BACKUP, f"{PUBLIC}/twilio/whisper?seq=2")]
    # A retried request renders the same group: nobody is rung twice.
    again = dial_of(twiml(call.post("/twilio/step")))
    assert again.get("action") == dial.get("action") and len(again) == 2

    # The backup picks up first (Twilio hangs up the primary's leg) and presses 1.
    whisper = twiml(call.leg(dial[1].get("url")))
    assert tags(twiml(call.leg(whisper[0].get("action"), Digits="1"))) == []
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        (PRIMARY, AttemptOutcome.CANCELLED), (BACKUP, AttemptOutcome.ACCEPTED)]
    assert tags(twiml(call.post(dial.get("action"), DialCallStatus="completed"))) == ["Hangup"]
    assert call.post("/twilio/status", CallStatus="completed").status_code == 204
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert [m.choice for m in case.menu] == ["1", "incident"]
    assert case.outcome == "connected" and case.connected_surgeon_id == 2


def test_incident_rounds_until_the_wait_is_over_then_nurse_then_voicemail(incident_app, engine):
    app, clock = incident_app
    call = Call(app.test_client())
    twiml(call.post("/twilio/voice"))
    dial = dial_of(twiml(call.post("/twilio/menu?ev=0&try=0", Digits="1")))
    # The primary declines: the next round rings only the backup.
    whisper = twiml(call.leg(dial[0].get("url")))
    assert tags(twiml(call.leg(whisper[0].get("action"), Digits="2"))) == ["Hangup"]
    dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="completed")))
    assert [n.text for n in dial] == ["+86" + BACKUP]
    assert dial.get("action") == f"{PUBLIC}/twilio/step-done?seq=3&n=1"
    # Nobody answers; while the queue's wait lasts, round after round.
    clock.jump(60)
    dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="no-answer")))
    assert [n.text for n in dial] == ["+86" + BACKUP] and "seq=4" in dial.get("action")
    clock.jump(180)  # past the queue's max wait: the duty nurse, once
    dial = dial_of(twiml(call.post(dial.get("action"), DialCallStatus="no-answer")))
    assert [n.text for n in dial] == ["+86" + MENU.duty_nurse_number]
    assert dial.get("timeout") != "45" and "n=" not in dial.get("action")
    root = twiml(call.post(dial.get("action"), DialCallStatus="no-answer"))
    assert tags(root)[-1] == "Record"
    case = CaseRepository(engine).get_by_linkedid(call.sid)
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        (PRIMARY, AttemptOutcome.DECLINED), (BACKUP, AttemptOutcome.NO_ANSWER),
        (BACKUP, AttemptOutcome.NO_ANSWER), (BACKUP, AttemptOutcome.NO_ANSWER),
        (MENU.duty_nurse_number, AttemptOutcome.NO_ANSWER)]


def test_incident_for_another_team_leaves_this_one_ringing_one_by_one(app, engine):
    from db.incidents import IncidentStore

    IncidentStore(engine, clock=lambda: T0 - timedelta(minutes=5)).switch_on("referral", "admin")
    call = Call(app.test_client())
    gather = twiml(call.post("/twilio/voice"))[0]
    assert gather[0].text == MENU.prompts["zh"]["incident"]  # every caller hears it
    dial = dial_of(twiml(call.post(gather.get("action"), Digits="1")))
    assert [n.text for n in dial] == ["+86" + PRIMARY] and dial.get("timeout") == "25"
