"""The call desk: what the hotline decides at each point of a live call.

Owns the live calls (one `Case` and one frozen escalation chain per linkedid),
applies the pure domain (routing, case lifecycle) and hands case snapshots to a
`CaseSink`. No sockets, no database, no clock: AGI handlers and the AMI folder
call it with the time; the sink does the I/O on its own thread. Everything here
runs on the service's event-loop thread, so there are no locks.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping, Protocol, Sequence
from zoneinfo import ZoneInfo

from cases import lifecycle
from cases.lifecycle import Case, CaseError
from ivr.menu import Menu
from network.callbacks import REQUESTED_LABEL
from network.incidents import Incident, teams_in_incident
from oncall.model import HOTLINE_TZ, Roster
from routing.busy import prefer_free
from routing.callers import CallerClass, classify, mask_number, safe_text
from routing.queue import (MEMBER_CONTEXT, member_interface, queue_members, queue_name,
                           queue_priority)
from routing.escalation import (
    AttemptOutcome,
    ChainStep,
    Dial,
    EscalationChain,
    Stop,
    Voicemail,
    build_chain,
    next_decision,
)

logger = logging.getLogger(__name__)

NURSE_TEAM = "nurse"
REFERRAL_TEAM = "referral"
MENU_EVENTS = {"timeout": "timeout", "invalid": "invalid", "english": "9"}
CALLBACK_EVENT = "callback"  # the caller chose "call me back" (menu.callback_key)
PARTNER_LABEL = "partner hospital fast lane"
BLOCKED = "blocked"  # the menu choice recorded for a caller on the block list
BLOCKED_LABEL = "blocked caller: goodbye, nobody rung"
INCIDENT = "incident"  # the menu event of a call routed in major-incident mode
INCIDENT_LABEL = "major incident: every surgeon on call rung at once"
QUEUE_EXITS = frozenset({"TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL",
                         "LEAVEUNAVAIL", "CONTINUE", ""})
ROUTE_KEYS = frozenset("0123456789") | {"partner", "retries"}


class CaseSink(Protocol):
    def submit(self, case: Case, final: bool = False) -> None:
        """Store a snapshot of `case` (copied by the sink); `final` once it has ended."""


class RosterSource(Protocol):
    def roster(self) -> Roster: ...

    def partner_numbers(self) -> Mapping[str, int]: ...


class NetworkSource(Protocol):
    """Major incidents in force and the block list, as last loaded (hotline/incidents.py)."""

    def incidents(self) -> Sequence[Incident]: ...

    def blocked_numbers(self) -> frozenset[str]: ...


class UnknownCall(LookupError):
    """A request names a call the desk does not hold (service restarted, or forged)."""


class Disagreement(CaseError):
    """A request that does not agree with what the desk knows of the call (an
    `accepted` for an attempt it never ordered or that no longer rings, an
    `attempt_ended` for an attempt that is not the one ringing): it changes nothing.

    Honest Asterisk never sends one; a replayed or confused request does.
    """


# The case id of a call adopted without a stored case: "u" + its linkedid, the
# recording's name in the dialplan until call_start names a case (extensions.conf.j2).
UNSEEN_CASE_PREFIX = "u"

# How many ended calls the desk remembers, so that a repeated `call_end`
# changes nothing without asking the database (older ones: the stored case says).
ENDED_MEMORY = 4096


@dataclass(frozen=True)
class Instruction:
    """What the dialplan does next: ring a phone, take a voicemail, or stop."""

    action: str  # "dial" | "queue" | "voicemail" | "stop"
    target: str = ""  # "dial": the phone; "queue": the app_queue queue (hotline-<team>)
    ring_s: int = 0
    attempt: int = 0
    whisper: str = ""
    partner: str = ""
    priority: int = 0  # "queue": the caller's QUEUE_PRIO (routing.queue)


@dataclass(frozen=True)
class CallEnd:
    """What Asterisk's hangup handler knows when a call ends (all already validated)."""

    hangup_source: str = ""
    dial_status: str = ""
    accepted: str = ""
    attempt: int | None = None
    answered_s: int | None = None
    dialed_s: int | None = None
    system_hangup: bool = False
    voicemail_path: str | None = None
    fallback_used: bool = False


@dataclass
class LiveCall:
    case: Case
    channel: str
    chain: EscalationChain | None = None
    incident: bool = False  # major-incident mode was on for some team when the call came
    blocked: bool = False  # the caller's number is on the block list: goodbye, no ringing
    queue: str | None = None  # major-incident mode: the app_queue queue the caller waits in
    queued: bool = False  # in that queue now (until queue_left)
    # Taken over mid-call (another instance opened the case, or this worker never
    # saw its call_start): attempts made before may be missing from the case.
    adopted: bool = False


def new_case_id(at: datetime) -> str:
    """A case id readable by a supervisor: local date-time plus randomness, e.g. 20261125-190512-3fa9c1."""
    local = at.astimezone(ZoneInfo(HOTLINE_TZ))
    return f"{local:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def attempt_result(dial_status: str, accepted: str, answered_s: int | None,
                   dialed_s: int | None) -> tuple[AttemptOutcome, bool, int | None]:
    """Translate Dial()'s result and the whisper's flag into (outcome, answered, ring seconds).

    DIALSTATUS alone lies: a surgeon leg dropped by the whisper (declined, or a
    voicemail box that never pressed a key) still reads ANSWER, so the shared
    HOTLINE_ACCEPTED flag decides (1 accepted, 2 declined, 0 answered, no key).
    """
    answered = dial_status == "ANSWER" or accepted in ("0", "1", "2")
    if accepted == "1":
        outcome = AttemptOutcome.ACCEPTED
    elif accepted == "2":
        outcome = AttemptOutcome.DECLINED
    elif dial_status == "BUSY":
        outcome = AttemptOutcome.BUSY
    elif dial_status == "CANCEL":
        outcome = AttemptOutcome.CANCELLED
    elif dial_status in ("CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE", "INVALIDARGS"):
        outcome = AttemptOutcome.FAILED
    else:  # NOANSWER, or ANSWER without a key
        outcome = AttemptOutcome.NO_ANSWER
    ring_s = None
    if dialed_s is not None:
        ring_s = max(0, dialed_s - (answered_s or 0)) if answered else dialed_s
    return outcome, answered, ring_s


# -- decisions shared by both carriers (Asterisk here, Twilio in carrier/) ----
def duty_nurse_step(menu: Menu) -> ChainStep:
    """The duty nurse as the step after every chain (and the static fallback's number)."""
    return ChainStep(surgeon_id=None, name="值班护士 duty nurse", phone=menu.duty_nurse_number,
                     role="duty_nurse", ring_s=menu.duty_nurse_ring_s)


def menu_teams(menu: Menu) -> dict[str, str]:
    """Menu key -> team, the duty nurse's key included."""
    return {o.key: o.team for o in menu.options} | {menu.duty_nurse_key: NURSE_TEAM}


def menu_choice(menu: Menu, event: str) -> tuple[str, str]:
    """The (choice, label) recorded for a menu event: a key that chose a team
    ("0"-"9"), or "timeout", "invalid", "english", "callback"."""
    teams = menu_teams(menu)
    if event in teams:
        return event, teams[event]
    if event == CALLBACK_EVENT and menu.callback_key:
        # "call me back": the case ends here and a callback task opens
        # when it is saved (network/callbacks.py reads this label).
        return menu.callback_key, REQUESTED_LABEL
    if event in MENU_EVENTS:
        return MENU_EVENTS[event], event
    raise CaseError(f"unknown menu event {safe_text(event)!r}")


def open_call_case(case_id: str, linkedid: str, caller_id: str | None,
                   partner_numbers: Mapping[str, int], blocked_numbers: frozenset[str],
                   at: datetime, language: str) -> tuple[Case, bool]:
    """The case of a call that has just arrived, and whether its caller is blocked.

    A registered partner number gets the fast lane as its "menu choice"; a
    blocked number gets BLOCKED as its only one (so a wrong block can be audited).
    """
    caller = classify(caller_id, partner_numbers)
    case = lifecycle.open_case(case_id, linkedid, caller, at, language=language)
    # Belt and braces: the block list refuses a partner's number, and a
    # partner's number is never blocked here either.
    blocked = (caller.caller_class is not CallerClass.PARTNER and caller.number is not None
               and caller.number in blocked_numbers)
    if blocked:
        lifecycle.record_menu(case, at, BLOCKED, BLOCKED_LABEL)
    elif caller.caller_class is CallerClass.PARTNER:
        lifecycle.record_menu(case, at, "partner", PARTNER_LABEL)
    return case, blocked


def team_chain(roster: Roster, team: str, at: datetime) -> EscalationChain:
    """The chain a call routed to `team` at `at` rings (the nurse team: none, straight to the nurse)."""
    if team == NURSE_TEAM:
        return EscalationChain(team=NURSE_TEAM, steps=(), repeats=0)
    return build_chain(roster, team, at)


def whisper_prompt(case: Case, kind: str) -> str:
    """The prompt the rung person hears before pressing 1 (`kind`: the attempt's)."""
    if kind == "nurse" or case.team == NURSE_TEAM:
        return "whisper_nurse"
    return f"whisper_{case.team}"


class CallDesk:
    def __init__(self, menu: Menu, roster_source: RosterSource, sink: CaseSink,
                 new_id: Callable[[datetime], str] = new_case_id,
                 network: NetworkSource | None = None):
        self.menu = menu
        self.roster_source = roster_source
        self.sink = sink
        self.new_id = new_id
        self.network = network  # None: no major incidents, nobody blocked
        self.calls: dict[str, LiveCall] = {}
        # linkedid -> None, oldest first: calls that ended here (see ENDED_MEMORY).
        self.ended: dict[str, None] = {}
        self.nurse = duty_nurse_step(menu)
        self.teams = frozenset(menu.teams) | {NURSE_TEAM, REFERRAL_TEAM}
        self.menu_keys = menu_teams(menu)

    # -- requests from the caller's dialplan ------------------------------
    def call_start(self, linkedid: str, channel: str, caller_id: str | None, at: datetime) -> LiveCall:
        """Open the case of a new call (or return it, if Asterisk asked twice)."""
        live = self.calls.get(linkedid)
        if live is not None:
            return live
        case, blocked = open_call_case(
            self.new_id(at), linkedid, caller_id, self.roster_source.partner_numbers(),
            self.network.blocked_numbers() if self.network is not None else frozenset(),
            at, self.menu.default_language)
        caller = case.caller
        live = LiveCall(case=case, channel=channel, blocked=blocked,
                        incident=bool(self.incident_teams(at)))
        self.calls[linkedid] = live
        self.sink.submit(case)
        logger.info("call started case=%s class=%s caller=%s", case.case_id,
                    caller.caller_class.value, mask_number(caller.raw_safe))
        return live

    def adopt(self, case: Case, channel: str, at: datetime) -> LiveCall | None:
        """Take over a live call whose case another service instance opened.

        In a cluster a node asks the next instance when the first is gone; the
        case (as the database has it) carries on here, its chain rebuilt from
        the roster at `at` and the attempts already made. None for an ended case.
        """
        if case.ended_at is not None:
            return None
        live = self.calls.get(case.linkedid)
        if live is not None:
            return live
        live = LiveCall(case=case, channel=channel, adopted=True)
        if case.team is not None and case.team in self.teams:
            live.chain = prefer_free(team_chain(self.roster_source.roster(), case.team, at),
                                     self._busy_phones(live))
        self.calls[case.linkedid] = live
        logger.warning("call adopted case=%s (started by another service instance)", case.case_id)
        return live

    def adopt_unseen(self, linkedid: str, channel: str, caller_id: str | None,
                     started_at: datetime, at: datetime) -> LiveCall | None:
        """Open the case of a live call whose call_start no instance answered (this
        worker replaced one that hung), from what the request itself says: the
        caller's channel and caller ID, and the start time Asterisk put in the
        linkedid. None for a call that has ended here already.

        Menu events and the team follow from the requests still to come;
        reconciliation fills in what went to the lost worker (CDR/CEL).
        """
        if linkedid in self.ended:
            return None
        live = self.calls.get(linkedid)
        if live is not None:
            return live
        # Named as the dialplan already named its recording (HOTLINE_FILE_ID,
        # "u" + the caller's uniqueid, i.e. the linkedid) when call_start gave
        # it no case id: the case writer finds the recording by case id, and a
        # second adoption of the same call names the same case.
        case, blocked = open_call_case(
            f"{UNSEEN_CASE_PREFIX}{linkedid}", linkedid, caller_id,
            self.roster_source.partner_numbers(),
            self.network.blocked_numbers() if self.network is not None else frozenset(),
            started_at, self.menu.default_language)
        live = LiveCall(case=case, channel=channel, blocked=blocked, adopted=True,
                        incident=bool(self.incident_teams(at)))
        # Not submitted yet: the request that adopts it changes it and submits it.
        self.calls[linkedid] = live
        logger.warning("call adopted case=%s (its start reached no service worker) class=%s caller=%s",
                       case.case_id, case.caller.caller_class.value, mask_number(case.caller.raw_safe))
        return live

    def note_ended(self, linkedid: str) -> None:
        """Remember that the call `linkedid` is over (its stored case says so)."""
        self.ended[linkedid] = None
        while len(self.ended) > ENDED_MEMORY:
            del self.ended[next(iter(self.ended))]

    def menu_event(self, linkedid: str, event: str, at: datetime) -> None:
        """Record what happened at the menu when it happened: a key that chose a
        team ("0"-"9"), or "timeout", "invalid", "english"."""
        live = self._live(linkedid)
        choice, label = menu_choice(self.menu, event)
        lifecycle.record_menu(live.case, at, choice, label)
        if event == "english":
            lifecycle.set_language(live.case, at, "en")
        self.sink.submit(live.case)

    def route(self, linkedid: str, team: str, key: str, at: datetime) -> Instruction:
        """The caller chose a team (or was sent to one): freeze its chain and ring the first phone."""
        live = self._live(linkedid)
        if team not in self.teams:
            raise CaseError(f"unknown team {safe_text(team)!r}")
        if key not in ROUTE_KEYS:
            raise CaseError(f"unknown menu key {safe_text(key)!r}")
        if live.queued:  # Asterisk repeated the request: the same queue, not a second one
            return self._queue_instruction(live)
        if live.chain is not None:  # Asterisk repeated the request: do not ring twice
            attempts = lifecycle.routing_attempts(live.case)
            if attempts and attempts[-1].outcome is None:
                # next_decision counts an open attempt as failed and would ring the
                # next phone; repeat the dial of the phone still ringing instead.
                attempts = attempts[:-1]
            return self._instruction(live, next_decision(live.chain, attempts, self.nurse), at)
        # The key itself was recorded by menu_event when pressed (or at call
        # start for a partner): the consent prompt plays between the two.
        lifecycle.set_team(live.case, at, team)
        roster = self.roster_source.roster()
        if team in self.incident_teams(at) and queue_members(roster, team, at):
            # Major-incident mode: every on-call surgeon rings at once through
            # app_queue; after the queue only the duty nurse, then voicemail.
            live.chain = EscalationChain(team=team, steps=(), repeats=0)
            live.queue, live.queued = queue_name(team), True
            lifecycle.record_menu(live.case, at, INCIDENT, INCIDENT_LABEL)
            self.sink.submit(live.case)
            return self._queue_instruction(live)
        live.chain = prefer_free(team_chain(roster, team, at), self._busy_phones(live))
        decision = next_decision(live.chain, [], self.nurse)
        return self._instruction(live, decision, at)

    def attempt_ended(self, linkedid: str, seq: int, dial_status: str, accepted: str,
                      answered_s: int | None, dialed_s: int | None, at: datetime) -> Instruction:
        """A phone stopped ringing without a bridge: record why, and say what is next."""
        live = self._live(linkedid)
        if live.chain is None:
            raise CaseError("no team was routed for this call")
        attempt = live.case.attempt(seq)
        if attempt is None:
            if not live.adopted:  # an adopted call may lack the attempts made before
                raise Disagreement(f"attempt {seq} was never ordered")
        elif attempt is not live.case.attempts[-1]:
            raise Disagreement(f"attempt {seq} is not the one ringing")
        elif attempt.ended_at is not None and attempt.outcome is not AttemptOutcome.ACCEPTED:
            # Ended already: the next phone was ordered then; ordering it again would ring twice.
            raise Disagreement(f"attempt {seq} has ended already")
        if attempt is not None:
            outcome, answered, ring_s = attempt_result(dial_status, accepted, answered_s, dialed_s)
            lifecycle.end_attempt(live.case, at, seq, outcome, answered=answered, ring_s=ring_s)
        decision = next_decision(live.chain, lifecycle.routing_attempts(live.case), self.nurse)
        return self._instruction(live, decision, at)

    def accepted(self, linkedid: str, seq: int, at: datetime) -> None:
        """The surgeon on attempt `seq` pressed 1 (request from the surgeon's leg)."""
        live = self._live(linkedid)
        attempt = live.case.attempt(seq)
        if attempt is None:
            raise Disagreement(f"attempt {seq} was never ordered")
        if live.case.connected_seq == seq:
            return  # AMI's bridge saw it first, or Asterisk asked twice
        if live.case.connected_seq is not None or attempt.ended_at is not None:
            raise Disagreement(f"attempt {seq} is not ringing")
        lifecycle.mark_connected(live.case, at, seq)
        self.sink.submit(live.case)
        logger.info("accepted case=%s attempt=%d", live.case.case_id, seq)

    def call_end(self, linkedid: str, channel: str, caller_id: str | None, end: CallEnd,
                 at: datetime) -> Case | None:
        """The caller's channel hung up. Completes the case, opening one if the
        service never saw the start (it was down then): every call gets a record.
        None, and nothing changes, for a call that has ended already."""
        if linkedid in self.ended:
            logger.info("call_end for call %s, which has ended already: nothing to change", linkedid)
            return None
        live = self.calls.pop(linkedid, None)
        if live is None:
            live = LiveCall(case=lifecycle.open_case(
                self.new_id(at), linkedid,
                classify(caller_id, self.roster_source.partner_numbers()), at,
                language=self.menu.default_language), channel=channel)
        case = live.case
        if end.fallback_used:
            lifecycle.mark_fallback(case, at)
        if end.attempt is not None and case.attempt(end.attempt) is not None:
            outcome, answered, ring_s = attempt_result(end.dial_status, end.accepted,
                                                       end.answered_s, end.dialed_s)
            if outcome is AttemptOutcome.ACCEPTED and case.connected_seq is None:
                lifecycle.mark_connected(case, at, end.attempt)
            else:
                lifecycle.end_attempt(case, at, end.attempt, outcome, answered=answered,
                                      ring_s=ring_s)
        for attempt in case.attempts:  # nothing stays "ringing" after the caller is gone
            if attempt.ended_at is None:
                lifecycle.end_attempt(case, at, attempt.seq, AttemptOutcome.CANCELLED)
        if end.voicemail_path and case.connected_seq is None:
            lifecycle.set_voicemail(case, at, end.voicemail_path)
        lifecycle.mark_ended(case, at, self._hangup_by(live, end))
        self.note_ended(linkedid)
        self.sink.submit(case, final=True)
        logger.info("call ended case=%s outcome=%s", case.case_id, case.outcome)
        return case

    def bridged(self, linkedid: str, at: datetime) -> None:
        """AMI saw the caller enter a bridge: if the accept request was lost, connect now."""
        live = self.calls.get(linkedid)
        if live is None or live.case.connected_seq is not None:
            return
        ringing = [a for a in live.case.attempts if a.ended_at is None]
        if ringing:
            lifecycle.mark_connected(live.case, at, ringing[-1].seq)
            self.sink.submit(live.case)

    def hung_up(self, linkedid: str, at: datetime) -> None:
        """AMI saw the caller's channel go; if the hangup handler's request never came, end the case."""
        live = self.calls.get(linkedid)
        if live is not None:
            self.call_end(linkedid, live.channel, None, CallEnd(), at)

    # -- major-incident mode (app_queue; see docs/major-incidents.md) ----------
    def incident_teams(self, at: datetime) -> frozenset[str]:
        """The teams in major-incident mode at `at` (none without a network source)."""
        if self.network is None:
            return frozenset()
        return teams_in_incident(self.network.incidents(), self.teams, at)

    def queue_ring(self, linkedid: str, phone: str, at: datetime) -> Instruction:
        """A queue member's Local channel is about to ring `phone` for this caller:
        record the attempt and say how to ring it ("dial"), or "stop" if the call
        is connected already (another surgeon accepted first) or not queued."""
        live = self._live(linkedid)
        case = live.case
        if not live.queued or case.connected_seq is not None or case.ended_at is not None:
            return Instruction("stop")  # a late ring after the caller left the queue, too
        team = case.team or ""
        member = queue_members(self.roster_source.roster(), team, at).get(member_interface(phone))
        # A member of ours the roster no longer lists (a handoff just happened)
        # still rings: it was put in the queue by the service; recorded honestly.
        step = ChainStep(
            surgeon_id=member.surgeon_id if member else None,
            name=member.name if member else "queue member",
            phone=phone, role=member.role if member else "queue", ring_s=0)
        seq = len(case.attempts) + 1
        lifecycle.start_attempt(case, at, seq, "chain", step)
        self.sink.submit(case)
        partner = case.caller.hospital_id if case.caller.caller_class is CallerClass.PARTNER else None
        return Instruction("dial", target=phone, ring_s=0, attempt=seq, whisper=f"whisper_{team}",
                           partner="" if partner is None else str(partner))

    def queue_ring_ended(self, linkedid: str, seq: int, dial_status: str, accepted: str,
                         answered_s: int | None, dialed_s: int | None, at: datetime) -> None:
        """A queue member's ring ended (rang out, declined, cancelled because
        another surgeon accepted, or the bridged call is over)."""
        live = self._live(linkedid)
        attempt = live.case.attempt(seq)
        if attempt is None:
            raise CaseError(f"no attempt {seq}")
        if attempt.ended_at is None:
            outcome, answered, ring_s = attempt_result(dial_status, accepted, answered_s, dialed_s)
            if outcome is AttemptOutcome.ACCEPTED and live.case.connected_seq is None:
                lifecycle.mark_connected(live.case, at, seq)
            else:
                if outcome is AttemptOutcome.ACCEPTED:
                    outcome = AttemptOutcome.CANCELLED  # pressed 1 just after another surgeon
                lifecycle.end_attempt(live.case, at, seq, outcome, answered=answered,
                                      ring_s=ring_s)
            self.sink.submit(live.case)

    def queue_left(self, linkedid: str, status: str, at: datetime) -> Instruction:
        """The caller left the queue without a surgeon (app_queue's QUEUESTATUS):
        on to the duty nurse, then voicemail, as after a chain."""
        live = self._live(linkedid)
        if status not in QUEUE_EXITS:
            raise CaseError(f"unknown queue status {safe_text(status)!r}")
        if not live.queued or live.chain is None:
            raise CaseError("this call is not queued")
        live.queued = False
        logger.info("left the queue case=%s status=%s", live.case.case_id, status or "-")
        for attempt in live.case.attempts:  # the queue hung up its members' legs
            if attempt.ended_at is None:
                lifecycle.end_attempt(live.case, at, attempt.seq, AttemptOutcome.NO_ANSWER)
        decision = next_decision(live.chain, lifecycle.routing_attempts(live.case), self.nurse)
        return self._instruction(live, decision, at)

    def _queue_instruction(self, live: LiveCall) -> Instruction:
        assert live.queue is not None
        return Instruction("queue", target=live.queue,
                           priority=queue_priority(live.case.caller.caller_class))

    def live_cases(self) -> list[Case]:
        return [live.case for live in self.calls.values()]

    # -- helpers ---------------------------------------------------------
    def _busy_phones(self, exclude: LiveCall) -> frozenset[str]:
        """Phones ringing or talking on the other live calls right now."""
        busy = set()
        for live in self.calls.values():
            if live is exclude:
                continue
            for attempt in live.case.attempts:
                if attempt.ended_at is None or attempt.seq == live.case.connected_seq:
                    busy.add(attempt.phone)
        return frozenset(busy)

    def _live(self, linkedid: str) -> LiveCall:
        try:
            return self.calls[linkedid]
        except KeyError:
            raise UnknownCall(linkedid) from None

    def _instruction(self, live: LiveCall, decision, at: datetime) -> Instruction:
        case = live.case
        if isinstance(decision, Dial):
            lifecycle.start_attempt(case, at, decision.seq, decision.kind, decision.step)
            self.sink.submit(case)
            whisper = whisper_prompt(case, decision.kind)
            partner = case.caller.hospital_id if case.caller.caller_class is CallerClass.PARTNER else None
            return Instruction("dial", target=decision.step.phone, ring_s=decision.step.ring_s,
                               attempt=decision.seq, whisper=whisper,
                               partner="" if partner is None else str(partner))
        self.sink.submit(case)
        if isinstance(decision, Voicemail):
            return Instruction("voicemail")
        assert isinstance(decision, Stop)
        return Instruction("stop")

    @staticmethod
    def _hangup_by(live: LiveCall, end: CallEnd) -> str | None:
        if end.system_hangup:
            return "system"
        if end.hangup_source and end.hangup_source == live.channel:
            return "caller"
        if end.hangup_source.startswith("PJSIP/surgeons-"):
            return "surgeon"
        if end.hangup_source.startswith("Local/") and f"@{MEMBER_CONTEXT}-" in end.hangup_source:
            return "surgeon"  # a major-incident queue member: the surgeon's Local channel
        return None
