"""The hotline over Twilio Programmable Voice: TwiML webhooks (a Flask blueprint).

The same decisions as the Asterisk path (ivr/calls.py's shared functions,
routing.escalation.next_decision, cases.lifecycle); only the carrier differs.
State between webhooks lives in the case record (keyed by the CallSid in the
`linkedid` column) and in the URLs we hand Twilio (`seq`, `ev`, `try`) --
never in this process: Twilio may send the next request to any instance.

Every request must carry a valid X-Twilio-Signature for the PUBLIC URL
(`twilio_public_url`, the reverse proxy's): none, or a wrong one, is a 403
and an audit-log row; without an auth token every request is a 503.

    app = create_voice_app(config)          # its own small app, /twilio/...
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import Engine
from twilio.request_validator import RequestValidator

from carrier import twiml
from cases import lifecycle
from cases.lifecycle import Case, CaseError
from db.blocklist import BlockList
from db.incidents import IncidentStore
from db.repo import CaseConflict, CaseRepository, RosterRepository
from db.users import AuditLog
from ivr.calls import (BLOCKED, CALLBACK_EVENT, INCIDENT, INCIDENT_LABEL, NURSE_TEAM,
                       REFERRAL_TEAM, attempt_result, duty_nurse_step, menu_choice, menu_teams,
                       new_case_id, open_call_case, team_chain, whisper_prompt)
from ivr.menu import Menu
from network.callbacks import REQUESTED_LABEL
from network.incidents import Incident, active, in_incident
from routing.callers import CallerClass, mask_number, safe_text
from routing.escalation import (CHAIN, AttemptOutcome, ChainStep, Dial, EscalationChain, Stop,
                                Voicemail, next_decision)
from routing.queue import QUEUE_SETTINGS, queue_members

logger = logging.getLogger(__name__)

PREFIX = "/twilio"
AUDIT_ACTOR = "twilio"
AUDIT_ACTION = "twilio_signature_rejected"
SAVE_TRIES = 3
VOICEMAIL_MAX_S = 120
MAX_BODY = 64 * 1024  # Twilio's form posts are a few kB

CALL_SID = re.compile(r"CA[0-9a-f]{32}", re.ASCII)
RECORDING_SID = re.compile(r"RE[0-9a-f]{32}", re.ASCII)
RECORDING_URL = re.compile(
    r"https://api\.twilio\.com/2010-04-01/Accounts/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}",
    re.ASCII)
SEQ = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)
SMALL = re.compile(r"[0-9]{1,2}", re.ASCII)
GROUP = re.compile(r"[1-9][0-9]?", re.ASCII)  # legs rung at once by one <Dial>
DIGITS = re.compile(r"[0-9*#]{0,20}", re.ASCII)
SECONDS = re.compile(r"[0-9]{1,6}", re.ASCII)
KIND = re.compile(r"call|voicemail", re.ASCII)
# Twilio's DialCallStatus in Asterisk's DIALSTATUS words, for ivr.calls.attempt_result.
DIAL_STATUS = {"completed": "ANSWER", "answered": "ANSWER", "busy": "BUSY",
               "no-answer": "NOANSWER", "failed": "CHANUNAVAIL", "canceled": "CANCEL"}
CALL_STATUS = frozenset({"queued", "initiated", "ringing", "in-progress", "completed", "busy",
                         "failed", "no-answer", "canceled"})
FINAL_CALL_STATUS = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
RECORDING_STATUS = frozenset({"in-progress", "completed", "absent", "failed"})


class BadRequest(Exception):
    """A field that does not match its pattern; the message names the field only."""


class UnknownCall(LookupError):
    """A request names a CallSid with no case."""


@dataclass(frozen=True)
class VoiceServices:
    """What the webhooks use; built once by `create_voice_app` (or a test)."""

    menu: Menu
    cases: CaseRepository
    rosters: RosterRepository
    blocked: Callable[[], frozenset[str]]
    audit: AuditLog
    token: str | None  # None: every request fails closed (503)
    public_url: str  # "https://host[:port][/prefix]"; "": the request's own URL
    clock: Callable[[], datetime]
    new_id: Callable[[datetime], str] = new_case_id
    incidents: Callable[[], Sequence[Incident]] = tuple  # major incidents not switched off


bp = Blueprint("twilio_voice", __name__, url_prefix=PREFIX)


def _services() -> VoiceServices:
    return current_app.extensions["twilio_voice"]


# -- the gate: every request signed by Twilio ---------------------------------
def signed_url() -> str:
    """The URL Twilio signed: the public base + this path and query."""
    services = _services()
    query = request.query_string.decode("utf-8", "replace")
    if not services.public_url:
        return request.url
    return services.public_url.rstrip("/") + request.path + ("?" + query if query else "")


@bp.before_request
def _check_signature():
    services = _services()
    if not services.token:
        logger.error("twilio webhook refused: no Twilio auth token configured")
        return Response("Twilio 鉴权令牌未配置，拒绝服务 (no Twilio auth token configured: "
                        "set HOTLINE_TWILIO_AUTH_TOKEN or the instance's twilio.token)\n",
                        status=503, mimetype="text/plain")
    signature = request.headers.get("X-Twilio-Signature", "")
    reason = "missing" if not signature else "invalid"
    if signature and RequestValidator(services.token).validate(signed_url(), request.form,
                                                               signature):
        return None
    # The path is ours (routing matched it); the query and form are not and stay out.
    services.audit.record(AUDIT_ACTOR, AUDIT_ACTION, "twilio", request.path[:64],
                          ip=request.remote_addr or "",
                          detail={"reason": reason, "path": safe_text(request.path)})
    logger.warning("twilio webhook refused: %s signature path=%s ip=%s", reason,
                   safe_text(request.path), safe_text(request.remote_addr or ""))
    return Response("签名无效 (invalid Twilio signature)\n", status=403, mimetype="text/plain")


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest):
    logger.warning("twilio webhook: bad field %s path=%s", exc, safe_text(request.path))
    return Response(f"请求无效 (invalid field {exc})\n", status=400, mimetype="text/plain")


@bp.errorhandler(UnknownCall)
def _unknown_call(exc: UnknownCall):
    logger.warning("twilio webhook: no case for this CallSid path=%s", safe_text(request.path))
    return Response("未找到该通话 (no case for this CallSid)\n", status=404, mimetype="text/plain")


@bp.errorhandler(CaseError)
@bp.errorhandler(CaseConflict)
def _case_conflict(exc: Exception):
    logger.warning("twilio webhook: %s path=%s", safe_text(str(exc)), safe_text(request.path))
    return Response("与通话记录冲突 (conflicts with the case record)\n", status=409,
                    mimetype="text/plain")


def _field(name: str, pattern: re.Pattern[str], *, query: bool = False,
           default: str | None = None) -> str:
    values = request.args if query else request.form
    value = values.get(name)
    if value is None and default is not None:
        return default
    if value is None or not pattern.fullmatch(value):
        raise BadRequest(name)
    return value


def _xml(text: str) -> Response:
    return Response(text, mimetype="text/xml")


def _url(endpoint: str, **query: object) -> str:
    """A webhook URL under the public base (what Twilio will call, and sign)."""
    base = _services().public_url.rstrip("/") or request.host_url.rstrip("/")
    path = f"{PREFIX}/{endpoint}"
    return base + path + ("?" + urlencode(query) if query else "")


# -- reading and writing the case ---------------------------------------------
def _update(call_sid: str, change: Callable[[Case, datetime], str]) -> str:
    """Load the case of `call_sid`, apply `change` and save; again if a newer
    snapshot won the race (another instance, a concurrent callback)."""
    services = _services()
    for _ in range(SAVE_TRIES):
        case = services.cases.get_by_linkedid(call_sid)
        if case is None:
            raise UnknownCall(call_sid)
        before = case.revision
        document = change(case, services.clock())
        if case.revision == before or services.cases.save(case, expect_revision=before):
            return document
    raise CaseConflict(f"case of {call_sid} kept changing under this request")


def _chain(case: Case):
    """The case's chain, rebuilt from the roster as it stood when the call was routed.

    The routing time is the last menu event (the choice, the last timeout, or
    the partner fast lane at call start), so every request rebuilds the same chain.
    """
    services = _services()
    at = case.menu[-1].at if case.menu else case.started_at
    if _incident_call(case):
        # Major-incident mode: the team rings all at once (_ring_all), so after
        # that only the duty nurse, then voicemail -- as after app_queue on Asterisk.
        return EscalationChain(team=case.team or NURSE_TEAM, steps=(), repeats=0)
    roster = services.rosters.load(at - timedelta(days=1), at + timedelta(days=1))
    return team_chain(roster, case.team or NURSE_TEAM, at)


def _incident_call(case: Case) -> bool:
    return any(event.choice == INCIDENT for event in case.menu)


def _incident_members(case: Case, team: str, at: datetime) -> list:
    """Who rings at once for a major-incident call: everyone on call for `team`
    when it was routed, but not a surgeon who already declined it."""
    roster = _services().rosters.load(at - timedelta(days=1), at + timedelta(days=1))
    declined = {a.phone for a in case.attempts if a.outcome is AttemptOutcome.DECLINED}
    members = [m for m in queue_members(roster, team, at).values() if m.phone not in declined]
    return members[:twiml.MAX_NUMBERS]


def _ring_all(case: Case, at: datetime, intro: list[str]) -> str:
    """Major-incident mode: ring every on-call surgeon of the team at once, round
    after round until the queue's wait is over; then the duty nurse, then voicemail."""
    routed_at = next(e.at for e in case.menu if e.choice == INCIDENT)
    members = _incident_members(case, case.team or "", routed_at)
    if members and at - routed_at < timedelta(seconds=QUEUE_SETTINGS.max_wait_s):
        first = len(case.attempts) + 1
        for offset, member in enumerate(members):
            lifecycle.start_attempt(case, at, first + offset, CHAIN, ChainStep(
                member.surgeon_id, member.name, member.phone, member.role, 0))
        return _dial_group(case, case.attempts[first - 1:], intro)
    decision = next_decision(_chain(case), lifecycle.routing_attempts(case),
                             duty_nurse_step(_services().menu))
    return _act(case, decision, at, intro)


def _dial_group(case: Case, attempts, intro: list[str]) -> str:
    """The <Dial> ringing these attempts' phones at once (each with its own whisper)."""
    menu = _services().menu
    return twiml.dial_all(
        intro, case.language,
        [(a.phone, _url("whisper", seq=a.seq)) for a in attempts],
        QUEUE_SETTINGS.member_ring_s, action=_url("step-done", seq=attempts[0].seq, n=len(attempts)),
        recording_callback=_url("recording", kind="call") if menu.record_calls else None)


def _prompt(case: Case, name: str) -> str:
    prompts = _services().menu.prompts
    return prompts.get(case.language, {}).get(name) or prompts["zh"].get(name, "")


def _act(case: Case, decision, at: datetime, intro: list[str]) -> str:
    """Carry out a routing decision: ring the next phone, take a voicemail, or hang up."""
    menu = _services().menu
    if isinstance(decision, Dial):
        lifecycle.start_attempt(case, at, decision.seq, decision.kind, decision.step)
        return twiml.dial(
            intro, case.language, decision.step.phone, decision.step.ring_s,
            action=_url("step-done", seq=decision.seq),
            whisper=_url("whisper", seq=decision.seq),
            recording_callback=_url("recording", kind="call") if menu.record_calls else None)
    if isinstance(decision, Voicemail):
        return twiml.voicemail(intro + [_prompt(case, "voicemail")], case.language,
                               action=_url("voicemail-done"),
                               recording_callback=_url("recording", kind="voicemail"),
                               max_s=VOICEMAIL_MAX_S)
    assert isinstance(decision, Stop)
    return twiml.goodbye([], case.language)


def _route(case: Case, team: str, at: datetime, intro: list[str]) -> str:
    """The caller reached a team: ring its chain's first phone (after the consent prompt)."""
    lifecycle.set_team(case, at, team)
    if _services().menu.record_calls:
        intro = intro + [_prompt(case, "consent")]
    if (team != NURSE_TEAM and in_incident(_services().incidents(), team, at)
            and _incident_members(case, team, at)):
        lifecycle.record_menu(case, at, INCIDENT, INCIDENT_LABEL)
        return _ring_all(case, at, intro + [_prompt(case, "incident_queue")])
    decision = next_decision(_chain(case), lifecycle.routing_attempts(case),
                             duty_nurse_step(_services().menu))
    return _act(case, decision, at, intro)


def _current(case: Case, at: datetime) -> str:
    """The document for where the call is now (a repeated request gets the same answer)."""
    if case.ended_at is not None or case.connected_seq is not None:
        return twiml.goodbye([], case.language)
    attempts = lifecycle.routing_attempts(case)
    if _incident_call(case):
        ringing = [a for a in case.attempts if a.ended_at is None]
        if ringing and ringing[0].kind == CHAIN:
            return _dial_group(case, ringing, [])
        if not ringing:
            return _ring_all(case, at, [])
    if attempts and attempts[-1].outcome is None:
        attempts = attempts[:-1]  # re-render the dial still ringing, not the next one
    decision = next_decision(_chain(case), attempts, duty_nurse_step(_services().menu))
    return _act(case, decision, at, [])  # start_attempt repeats harmlessly


def _menu(case: Case, tries: int, intro: list[str]) -> str:
    menu = _services().menu
    action = _url("menu", ev=len(case.menu), **{"try": tries})
    return twiml.menu(intro + [_prompt(case, "greeting")], case.language, action,
                      menu.timeout_s, no_input=action)


def _fallback_document() -> str:
    menu = _services().menu
    return twiml.fallback([menu.prompts["zh"].get("to_nurse", "")], menu.duty_nurse_number,
                          menu.fallback_ring_s)


def _caller_facing(handler: Callable[[], str]) -> Response:
    """Run a handler the caller waits on: whatever fails, the caller reaches the duty nurse."""
    try:
        return _xml(handler())
    except BadRequest:
        raise
    except Exception:  # a caller must never hear "an application error has occurred"
        logger.exception("twilio webhook failed path=%s: caller sent to the duty nurse",
                         safe_text(request.path))
        return _xml(_fallback_document())


# -- the webhooks ---------------------------------------------------------------
@bp.post("/voice")
def voice():
    """A call arrives: open its case, then the menu (or the partner fast lane, or goodbye)."""
    call_sid = _field("CallSid", CALL_SID)
    caller_id = request.form.get("From")  # hostile; routing.callers.classify copes

    def handle() -> str:
        services = _services()
        if services.cases.get_by_linkedid(call_sid) is None:
            at = services.clock()
            case, _ = open_call_case(services.new_id(at), call_sid, caller_id,
                                     services.rosters.partner_numbers(), services.blocked(),
                                     at, services.menu.default_language)
            try:
                services.cases.save(case)
            except CaseConflict:
                pass  # a retried request opened it first: go on with that one
            logger.info("twilio call started case=%s class=%s caller=%s", case.case_id,
                        case.caller.caller_class.value, mask_number(case.caller.raw_safe))

        def start(case: Case, at: datetime) -> str:
            if case.menu and case.menu[0].choice == BLOCKED:
                return twiml.goodbye([_prompt(case, "goodbye")], case.language)
            if case.team is not None or case.ended_at is not None:
                return _current(case, at)
            # In major-incident mode every caller hears the announcement first.
            intro = [_prompt(case, "incident")] if active(services.incidents(), at) else []
            if case.caller.caller_class is CallerClass.PARTNER:
                return _route(case, REFERRAL_TEAM, at,
                              intro + [_prompt(case, "partner_greeting")])
            return _menu(case, 0, intro)
        return _update(call_sid, start)
    return _caller_facing(handle)


def _menu_event(menu: Menu, digits: str) -> str:
    """Raw DTMF from Twilio as the event words ivr.calls.menu_choice knows."""
    if digits == "":
        return "timeout"
    if digits in menu_teams(menu):
        return digits
    if digits == menu.english_key:
        return "english"
    if menu.callback_key and digits == menu.callback_key:
        return CALLBACK_EVENT
    return "invalid"


@bp.post("/menu")
def menu_choice_made():
    """The caller pressed a key at the menu (or none: `Digits` absent)."""
    call_sid = _field("CallSid", CALL_SID)
    ev = int(_field("ev", SMALL, query=True))
    tries = int(_field("try", SMALL, query=True))
    digits = request.form.get("Digits", "")
    if not DIGITS.fullmatch(digits):
        digits = "*"  # junk is an invalid key, never an error the caller hears

    def change(case: Case, at: datetime) -> str:
        menu = _services().menu
        if case.team is not None or case.ended_at is not None:
            return _current(case, at)
        if ev > len(case.menu):
            raise BadRequest("ev")
        if ev == len(case.menu):
            choice, label = menu_choice(menu, _menu_event(menu, digits))
            lifecycle.record_menu(case, at, choice, label)
            if label == "english":
                lifecycle.set_language(case, at, "en")
        event = case.menu[ev]  # a retried request acts on what was recorded the first time
        if event.label == REQUESTED_LABEL:
            return twiml.goodbye([_prompt(case, "callback_confirm")], case.language)
        if event.label == "english":
            return _menu(case, tries, [])
        if event.choice in menu_teams(menu):
            return _route(case, menu_teams(menu)[event.choice], at, [])
        hint = _prompt(case, "timeout" if event.choice == "timeout" else "invalid")
        if tries + 1 > menu.max_retries:
            return _route(case, NURSE_TEAM, at, [hint, _prompt(case, "to_nurse")])
        return _menu(case, tries + 1, [hint])
    return _caller_facing(lambda: _update(call_sid, change))


@bp.post("/step")
def step():
    """Where the call is now, as TwiML (a redirect target; repeats are harmless)."""
    call_sid = _field("CallSid", CALL_SID)
    return _caller_facing(lambda: _update(call_sid, _current))


@bp.post("/whisper")
def whisper():
    """On the surgeon's leg, before the bridge: who calls, and press 1 to accept."""
    parent = _field("ParentCallSid", CALL_SID)
    seq = int(_field("seq", SEQ, query=True))
    services = _services()
    case = services.cases.get_by_linkedid(parent)
    attempt = case.attempt(seq) if case is not None else None
    if (case is None or attempt is None or attempt.ended_at is not None
            or case.ended_at is not None):
        return _xml(twiml.goodbye([], "zh"))  # stale leg: never bridge it
    texts = [services.menu.prompts["zh"].get(whisper_prompt(case, attempt.kind), "")]
    if case.caller.caller_class is CallerClass.PARTNER:
        texts.append(services.menu.prompts["zh"].get("whisper_partner", ""))
    texts.append(services.menu.prompts["zh"].get("press1", ""))
    return _xml(twiml.whisper(texts, _url("accept", seq=seq), services.menu.accept_timeout_s,
                              services.menu.accept_tries))


@bp.post("/accept")
def accept():
    """The surgeon pressed a key in the whisper: 1 bridges, 2 declines, anything else hangs up."""
    parent = _field("ParentCallSid", CALL_SID)
    seq = int(_field("seq", SEQ, query=True))
    digits = request.form.get("Digits", "")

    def change(case: Case, at: datetime) -> str:
        attempt = case.attempt(seq)
        if attempt is None:
            raise BadRequest("seq")
        if digits == "1" and case.connected_seq == seq:
            return twiml.bridge()  # a retried accept
        if (digits == "1" and attempt.ended_at is None and case.ended_at is None
                and case.connected_seq is None):
            lifecycle.mark_connected(case, at, seq)
            for other in case.attempts:  # a ring-all group: Twilio hung up the others
                if other.ended_at is None:
                    lifecycle.end_attempt(case, at, other.seq, AttemptOutcome.CANCELLED)
            logger.info("twilio accepted case=%s attempt=%d", case.case_id, seq)
            return twiml.bridge()
        if digits == "2" and attempt.ended_at is None:
            lifecycle.end_attempt(case, at, seq, AttemptOutcome.DECLINED, answered=True)
        return twiml.goodbye([], "zh")  # ends only the surgeon's leg
    try:
        return _xml(_update(parent, change))
    except (UnknownCall, CaseError):
        return _xml(twiml.goodbye([], "zh"))


@bp.post("/step-done")
def step_done():
    """The <Dial> of attempt `seq` is over: record how, and ring the next phone."""
    call_sid = _field("CallSid", CALL_SID)
    seq = int(_field("seq", SEQ, query=True))
    legs = int(_field("n", GROUP, query=True, default="1"))
    status = _field("DialCallStatus", re.compile("|".join(map(re.escape, DIAL_STATUS))))

    def change(case: Case, at: datetime) -> str:
        group = [case.attempt(s) for s in range(seq, seq + legs)]
        if any(attempt is None for attempt in group):
            raise BadRequest("seq")
        for attempt in group:
            if attempt.ended_at is not None:
                continue
            # Acceptance is what /accept recorded, never DialCallStatus: a leg
            # the whisper hung up still reads "completed". Of legs rung at once
            # Twilio does not say which one picked up: none is marked answered.
            outcome, answered, _ = attempt_result(
                DIAL_STATUS[status] if legs == 1 else "NOANSWER", "", None, None)
            if case.ended_at is not None and outcome is AttemptOutcome.NO_ANSWER:
                outcome = AttemptOutcome.CANCELLED
            lifecycle.end_attempt(case, at, attempt.seq, outcome, answered=answered)
        if seq + legs - 1 < len(case.attempts):
            return _current(case, at)  # a retried request: the next step has begun
        if case.ended_at is not None or case.connected_seq is not None:
            return twiml.goodbye([], case.language)  # the bridged call is over
        if _incident_call(case):
            return _ring_all(case, at, [_prompt(case, "hold")])
        decision = next_decision(_chain(case), lifecycle.routing_attempts(case),
                                 duty_nurse_step(_services().menu))
        return _act(case, decision, at, [_prompt(case, "hold")])
    return _caller_facing(lambda: _update(call_sid, change))


@bp.post("/voicemail-done")
def voicemail_done():
    """After <Record>: thank the caller. The recording arrives at /recording."""
    call_sid = _field("CallSid", CALL_SID)
    services = _services()
    case = services.cases.get_by_linkedid(call_sid)
    language = case.language if case is not None else services.menu.default_language
    texts = [services.menu.prompts.get(language, {}).get("goodbye", "")]
    return _xml(twiml.goodbye(texts, language))


@bp.post("/status")
def status():
    """The call's status callback: a final status completes the case (once)."""
    call_sid = _field("CallSid", CALL_SID)
    call_status = _field("CallStatus", re.compile("|".join(map(re.escape, CALL_STATUS))))
    if call_status not in FINAL_CALL_STATUS:
        return Response(status=204)
    services = _services()
    if services.cases.get_by_linkedid(call_sid) is None:
        # The voice webhook never reached us (the fallback took the call): every
        # call still gets a record.
        at = services.clock()
        case, _ = open_call_case(services.new_id(at), call_sid, request.form.get("From"),
                                 services.rosters.partner_numbers(), frozenset(), at,
                                 services.menu.default_language)
        lifecycle.mark_fallback(case, at)
        try:
            services.cases.save(case)
        except CaseConflict:
            pass

    def change(case: Case, at: datetime) -> str:
        ringing = [a for a in case.attempts if a.ended_at is None]
        for attempt in ringing:  # nothing stays "ringing" after the caller is gone
            lifecycle.end_attempt(case, at, attempt.seq, AttemptOutcome.CANCELLED)
        lifecycle.mark_ended(case, at, "caller" if ringing else None)
        return ""
    _update(call_sid, change)
    return Response(status=204)


@bp.post("/recording")
def recording():
    """A recording is ready: the bridged conversation, or the caller's voicemail."""
    call_sid = _field("CallSid", CALL_SID)
    kind = _field("kind", KIND, query=True)
    _field("RecordingSid", RECORDING_SID)
    rec_status = _field("RecordingStatus",
                        re.compile("|".join(map(re.escape, RECORDING_STATUS))))
    if rec_status != "completed":
        return Response(status=204)
    url = _field("RecordingUrl", RECORDING_URL)
    seconds = int(_field("RecordingDuration", SECONDS, default="0")) or None

    def change(case: Case, at: datetime) -> str:
        if kind == "voicemail":
            if case.connected_seq is None:
                lifecycle.set_voicemail(case, at, url)
        else:
            lifecycle.set_recording(case, at, url, seconds)
        return ""
    _update(call_sid, change)
    return Response(status=204)


@bp.post("/fallback")
def fallback():
    """The number's fallback URL (Twilio calls it when /voice failed): ring the duty nurse."""
    call_sid = request.form.get("CallSid", "")
    if CALL_SID.fullmatch(call_sid):
        try:
            def change(case: Case, at: datetime) -> str:
                lifecycle.mark_fallback(case, at)
                return ""
            _update(call_sid, change)
        except Exception:  # the caller comes first; the record is best effort here
            logger.exception("twilio fallback: could not mark the case")
    return _xml(_fallback_document())


# -- the app ----------------------------------------------------------------------
def create_voice_app(config=None, *, menu: Menu | None = None, engine: Engine | None = None,
                     clock: Callable[[], datetime] | None = None, token: str | None = None,
                     public_url: str | None = None,
                     new_id: Callable[[datetime], str] = new_case_id) -> Flask:
    """A small app of its own serving only /twilio/...: the part exposed to the internet.

    Arguments win over `config` (a HotlineConfig); a missing token is logged
    loudly here and makes every request a 503.
    """
    if config is not None:
        from ivr.menu import load_menu

        menu = menu or load_menu(config.menu_file)
        token = token if token is not None else config.twilio_token()
        public_url = public_url if public_url is not None else config.twilio_public_url
        if engine is None:
            from db.session import make_engine

            engine = make_engine(config.db_url)
    if menu is None or engine is None:
        raise ValueError("create_voice_app needs a menu and an engine (or a config)")
    clock = clock or (lambda: datetime.now(timezone.utc))
    if not token:
        logger.error("Twilio auth token missing (HOTLINE_TWILIO_AUTH_TOKEN or twilio.token): "
                     "every Twilio webhook will answer 503")
    if not public_url:
        logger.warning("twilio_public_url is not set: signatures are checked against the "
                       "request's own URL, which is wrong behind a reverse proxy")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["twilio_voice"] = VoiceServices(
        menu=menu, cases=CaseRepository(engine, clock=clock), rosters=RosterRepository(engine),
        blocked=BlockList(engine, clock).active, audit=AuditLog(engine, clock=clock),
        token=token or None, public_url=(public_url or "").rstrip("/"), clock=clock,
        new_id=new_id, incidents=IncidentStore(engine, clock=clock).active)
    app.register_blueprint(bp)
    return app
