"""Reconciliation: rebuild or complete one call's case from Asterisk's CDR and CEL.

Pure: rows in (as Asterisk's SQLite backends write them), a `Case` and a list of
human-readable changes out; the time `now` is an argument and nothing here
reads a file or a clock. `hotline/reconcile.py` reads the rows and saves.

Why it exists: the dialplan serves a caller without the service (static
fallback, chain mirror), and a service that is down, killed or cut off from
AMI misses some or all of a call. Asterisk's own records still hold it:

- the caller's channel is the linkedid's owner (uniqueid == linkedid), started
  in the inbound context (`hotline-callers`);
- each surgeon leg is a `PJSIP/surgeons-…` channel of the same linkedid,
  created right after the caller's `Dial` APP_START, whose data names the
  number (`PJSIP/<digits>@surgeons,…`);
- a leg *accepted* the call when it entered the caller's bridge (the whisper
  bridges only after the surgeon pressed 1); an answered leg that pressed 2
  in the whisper declined; any other answered leg is a voicemail box that never
  pressed a key (no-answer, answered);
- LINKEDID_END says the whole call is over;
- the keys the caller pressed at the menu are DTMF events of the caller's
  channel in `hotline-menu`.

Rules: a new case gets the id ``r-<linkedid>`` (so a second run finds it) and
`fallback` (no AGI request ever reached the service, or it would have opened
the case). A stored case that has ended is filled where the lifecycle allows
after the end (open attempts, who hung up, the recording); one that lacks
legs, or whose ringing attempt the service closed as cancelled at the hang-up
without seeing it (a restart mid-call), is replayed through the transitions
with what the records add. Other attempts the stored case holds are never
rewritten. A stored case the service opened late (its call_start reached no
worker: opened at a later request or at the hang-up) gets its start time, its
team and the menu keys pressed before it from the records. A call still going on, or
ended less than `settle_s` ago (the live service may still be writing it), is
left alone. Reconciling twice changes nothing the second time.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from cases import lifecycle
from cases.lifecycle import Case, CaseError, DialAttempt
from oncall.lookup import on_call
from oncall.model import Roster
from routing.callers import classify, safe_text
from routing.escalation import CHAIN, NURSE, AttemptOutcome, ChainStep

# Dialplan contexts and channel names this module reads (extensions.conf.j2, pjsip.conf.j2).
INBOUND_CONTEXTS = frozenset({"hotline-callers"})
FALLBACK_CONTEXTS = frozenset({"hotline-fallback", "hotline-mirror"})
WHISPER_CONTEXT = "hotline-whisper"
MENU_CONTEXT = "hotline-menu"
VOICEMAIL_CONTEXT = "hotline-voicemail"
SURGEON_LEG_PREFIX = "PJSIP/surgeons-"
CASE_ID_PREFIX = "r-"

# A stored case that began this much later than the caller's channel was
# opened late: the service answers call_start right after Answer(), well within it.
LATE_START_S = 2.0

# Seconds a finished call is left to the live service before reconciliation
# touches it, and after which a call with no LINKEDID_END counts as over
# (Asterisk stopped mid-call; the dialplan caps a call at 7200 s).
SETTLE_S = 60
STALE_S = 3 * 3600

# Strict: only a plain number dialled on the surgeons' trunk is an attempt.
_DIAL = re.compile(r"PJSIP/([0-9]{3,20})@surgeons(?:,|$)", re.ASCII)
_WHISPER_TEAM = re.compile(r"U\(hotline-whisper\^[^^,()]*\^whisper_([a-z_]{1,32})\^", re.ASCII)
_WAV = re.compile(r"(/[A-Za-z0-9._/-]{1,400}\.wav)(?:,[A-Za-z0-9()]*)*", re.ASCII)
_ID = re.compile(r"[A-Za-z0-9._:-]{1,62}", re.ASCII)  # 62: room for the "r-" prefix
_EPOCH = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,9}))?", re.ASCII)

# Q.850 causes on an unanswered leg (CEL HANGUP extra), used when no CDR says more.
_BUSY_CAUSES = frozenset({17})
_FAILED_CAUSES = frozenset({1, 2, 3, 21, 22, 27, 28, 29, 31, 34, 38, 41, 42, 44, 47, 58, 88, 102, 111, 127})
_DISPOSITIONS = {
    "NO ANSWER": AttemptOutcome.NO_ANSWER,
    "BUSY": AttemptOutcome.BUSY,
    "FAILED": AttemptOutcome.FAILED,
    "CONGESTION": AttemptOutcome.FAILED,
    "CANCEL": AttemptOutcome.CANCELLED,
}
NURSE_NAME = "值班护士 duty nurse"  # the same words as ivr/calls.py's nurse step
NURSE_ROLE = "duty_nurse"

Status = Literal["created", "updated", "unchanged", "in-progress", "ignored", "error"]


# -- Asterisk's rows ----------------------------------------------------------
@dataclass(frozen=True)
class CelEvent:
    """One CEL row (cel_sqlite3_custom.conf.j2's columns), times in UTC."""

    seq: int  # AcctId: the order Asterisk wrote them in
    eventtype: str
    at: datetime
    cidnum: str
    exten: str
    context: str
    channel: str
    appname: str
    appdata: str
    uniqueid: str
    linkedid: str
    peer: str
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class CdrRow:
    """One CDR row (cdr_sqlite3_custom.conf.j2's columns), times in UTC."""

    seq: int
    start: datetime | None
    end: datetime | None
    src: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    disposition: str
    uniqueid: str
    linkedid: str


def parse_epoch(value: object) -> datetime | None:
    """Asterisk's `eventtime(float)` / `start(double)` text as an aware UTC datetime.

    Exact to the microsecond (no float rounding); 0, empty or junk -> None.

    >>> parse_epoch("1795636539.569342").isoformat()
    '2026-11-25T19:55:39.569342+00:00'
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{value:.6f}"
    if not isinstance(value, str):
        return None
    match = _EPOCH.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        return None
    micros = int((match.group(2) or "").ljust(6, "0")[:6])
    return datetime.fromtimestamp(int(match.group(1)), timezone.utc) + timedelta(microseconds=micros)


def parse_cel(row: Mapping[str, Any]) -> CelEvent | None:
    """A CEL row as read from the database; None if it lacks a time or ids."""
    at = parse_epoch(row.get("eventtime"))
    linkedid, uniqueid = _text(row.get("linkedid")), _text(row.get("uniqueid"))
    if at is None or not _ID.fullmatch(linkedid) or not _ID.fullmatch(uniqueid):
        return None
    try:
        extra = json.loads(row.get("extra") or "{}")
    except (TypeError, ValueError):
        extra = {}
    return CelEvent(
        seq=int(row.get("AcctId") or row.get("acctid") or 0),
        eventtype=_text(row.get("eventtype")), at=at, cidnum=_text(row.get("cidnum")),
        exten=_text(row.get("exten")), context=_text(row.get("context")),
        channel=_text(row.get("channame")), appname=_text(row.get("appname")),
        appdata=_text(row.get("appdata")), uniqueid=uniqueid, linkedid=linkedid,
        peer=_text(row.get("peer")), extra=extra if isinstance(extra, dict) else {},
    )


def parse_cdr(row: Mapping[str, Any]) -> CdrRow | None:
    """A CDR row as read from the database; None if it lacks ids."""
    linkedid, uniqueid = _text(row.get("linkedid")), _text(row.get("uniqueid"))
    if not _ID.fullmatch(linkedid) or not _ID.fullmatch(uniqueid):
        return None
    return CdrRow(
        seq=int(row.get("AcctId") or row.get("acctid") or 0),
        start=parse_epoch(row.get("start_ts")), end=parse_epoch(row.get("end_ts")),
        src=_text(row.get("src")), channel=_text(row.get("channel")),
        dstchannel=_text(row.get("dstchannel")), lastapp=_text(row.get("lastapp")),
        lastdata=_text(row.get("lastdata")), disposition=_text(row.get("disposition")).upper(),
        uniqueid=uniqueid, linkedid=linkedid,
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


# -- what reconciliation knows besides the records ------------------------------
@dataclass(frozen=True)
class Directory:
    """Who the numbers are: partner hospitals, surgeons' phones, the duty nurse."""

    nurse_phone: str
    partner_numbers: Mapping[str, int] = field(default_factory=dict)
    roster: Roster | None = None  # surgeons by phone, and their on-call role at the time
    language: str = "zh"
    # A menu key -> the (choice, label) the service records for it (ivr/calls.py
    # menu_choice), or None for a key not to be read back; keys not here are
    # recorded as "invalid". Empty: menu keys are not read from the records.
    menu_keys: Mapping[str, tuple[str, str] | None] = field(default_factory=dict)

    def step(self, phone: str, team: str | None, at: datetime) -> tuple[str, ChainStep]:
        """(kind, step) for a dialled number: the nurse line, a known surgeon, or a bare number."""
        if phone == self.nurse_phone:
            return NURSE, ChainStep(None, NURSE_NAME, phone, NURSE_ROLE, 0)
        if self.roster is not None:
            for surgeon in self.roster.surgeons.values():
                if surgeon.phone == phone:
                    role = "unknown"
                    if team:
                        for member in on_call(self.roster, team, at):
                            if member.surgeon.id == surgeon.id:
                                role = member.role.value
                    return CHAIN, ChainStep(surgeon.id, surgeon.name, phone, role, 0)
        return CHAIN, ChainStep(None, "unknown", phone, "unknown", 0)


@dataclass(frozen=True)
class Reconciled:
    """The result for one linkedid: the case to save (if any) and what changed."""

    linkedid: str
    status: Status
    case: Case | None
    changes: tuple[str, ...] = ()
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.status in ("created", "updated")


# -- the call as Asterisk saw it ---------------------------------------------------
@dataclass
class Leg:
    """One surgeon leg: a channel of the call dialled by the caller's Dial()."""

    channel: str
    number: str | None
    started_at: datetime
    dial_context: str = ""
    team: str | None = None  # from the whisper argument of the Dial
    answered_at: datetime | None = None
    hangup_at: datetime | None = None
    hangup_cause: int | None = None
    whisper_digits: str = ""
    bridges: dict[str, datetime] = field(default_factory=dict)
    disposition: str = ""


@dataclass
class CallRecord:
    linkedid: str
    channel: str
    inbound: bool
    started_at: datetime
    caller_raw: str | None
    legs: list[Leg]
    bridges: dict[str, datetime]  # the caller's bridge ids -> when it entered
    hangup_at: datetime | None  # the caller's channel hung up
    linkedid_end: datetime | None  # the call's last channel went
    hangup_by: str | None
    fallback_context: str | None
    recording: str | None
    voicemail: tuple[str, datetime] | None
    last_at: datetime
    notes: list[str]
    ended_at: datetime | None = None  # decided by reconcile_call
    menu_keys: list[tuple[str, datetime]] = field(default_factory=list)  # (digit, when) in hotline-menu


def recording_paths(events: Iterable[CelEvent], linkedid: str) -> list[str]:
    """Recording files the caller's MixMonitor wrote (for the adapter to look up)."""
    paths = []
    for e in events:
        if e.uniqueid == linkedid and e.eventtype == "APP_START" and e.appname.lower() == "mixmonitor":
            match = _WAV.fullmatch(e.appdata)
            if match:
                paths.append(match.group(1))
    return paths


def read_call(linkedid: str, cdrs: Sequence[CdrRow], events: Sequence[CelEvent]) -> CallRecord | None:
    """Fold one linkedid's rows into a `CallRecord`; None without the caller's CHAN_START."""
    ordered = sorted((e for e in events if e.linkedid == linkedid), key=lambda e: (e.at, e.seq))
    mine = [e for e in ordered if e.uniqueid == linkedid]
    start = next((e for e in mine if e.eventtype == "CHAN_START"), None)
    if start is None:
        return None
    channel = start.channel
    notes: list[str] = []
    cdr_src = next((r.src for r in sorted(cdrs, key=lambda r: r.seq)
                    if r.uniqueid == linkedid and r.src), None)
    caller_raw = cdr_src if cdr_src is not None else next(
        (e.cidnum for e in reversed(mine) if e.cidnum), None)

    legs: list[Leg] = []
    by_channel: dict[str, Leg] = {}
    pending_dials: list[CelEvent] = []
    bridges: dict[str, datetime] = {}
    ended_at: datetime | None = None
    hangup_at: datetime | None = None
    hangup_by: str | None = None
    fallback_context: str | None = None
    recording: str | None = None
    voicemail: tuple[str, datetime] | None = None
    menu_keys: list[tuple[str, datetime]] = []
    for e in ordered:
        own = e.uniqueid == linkedid
        kind = e.eventtype
        if kind == "LINKEDID_END":  # on whichever channel of the call went last
            ended_at = ended_at or e.at
        elif own:
            app = e.appname.lower()
            if kind == "APP_START" and app == "dial":
                pending_dials.append(e)
                if e.context in FALLBACK_CONTEXTS and fallback_context is None:
                    fallback_context = e.context
            elif kind == "APP_START" and app == "mixmonitor" and recording is None:
                match = _WAV.fullmatch(e.appdata)
                recording = match.group(1) if match else None
            elif kind == "APP_START" and app == "record" and e.context == VOICEMAIL_CONTEXT:
                match = _WAV.fullmatch(e.appdata)
                if match and voicemail is None:
                    voicemail = (match.group(1), e.at)
            elif kind == "BRIDGE_ENTER":
                bridge = str(e.extra.get("bridge_id", ""))
                if bridge:
                    bridges.setdefault(bridge, e.at)
            elif kind == "HANGUP" and hangup_at is None:
                hangup_at = e.at
                hangup_by = _hangup_by(str(e.extra.get("hangupsource", "")), channel)
            elif kind == "DTMF" and e.context == MENU_CONTEXT:
                digit = str(e.extra.get("digit", ""))
                if len(digit) == 1 and digit in "0123456789*#":
                    menu_keys.append((digit, e.at))
        elif e.channel.startswith(SURGEON_LEG_PREFIX):
            leg = by_channel.get(e.channel)
            if kind == "CHAN_START" and leg is None:
                dial = pending_dials.pop() if pending_dials else None
                pending_dials.clear()  # one Dial() rings one phone here
                leg = Leg(channel=e.channel, number=None, started_at=e.at)
                if dial is not None:
                    match = _DIAL.match(dial.appdata)
                    leg.number = match.group(1) if match else None
                    leg.dial_context = dial.context
                    team = _WHISPER_TEAM.search(dial.appdata)
                    leg.team = team.group(1) if team else None
                by_channel[e.channel] = leg
                legs.append(leg)
            elif leg is None:
                continue
            elif kind == "ANSWER" and leg.answered_at is None:
                leg.answered_at = e.at
            elif kind == "DTMF" and e.context == WHISPER_CONTEXT and leg.answered_at is not None:
                digit = str(e.extra.get("digit", ""))
                if len(digit) == 1 and digit in "0123456789*#":
                    leg.whisper_digits += digit
            elif kind == "BRIDGE_ENTER":
                bridge = str(e.extra.get("bridge_id", ""))
                if bridge:
                    leg.bridges.setdefault(bridge, e.at)
            elif kind == "HANGUP" and leg.hangup_at is None:
                leg.hangup_at = e.at
                cause = e.extra.get("hangupcause")
                leg.hangup_cause = cause if isinstance(cause, int) else None

    for leg in legs:
        row = next((r for r in cdrs if r.dstchannel == leg.channel and r.uniqueid == linkedid), None)
        if row is not None:
            leg.disposition = row.disposition
            if leg.number is None:  # the CEL APP_START was lost: CDR lastdata says the same
                match = _DIAL.match(row.lastdata) if row.lastapp.lower() == "dial" else None
                leg.number = match.group(1) if match else None
        if leg.number is None:
            notes.append(f"leg {safe_text(leg.channel)} has no dialled number; left out")
    return CallRecord(
        linkedid=linkedid, channel=channel, inbound=start.context in INBOUND_CONTEXTS,
        started_at=start.at, caller_raw=caller_raw, legs=[leg for leg in legs if leg.number],
        bridges=bridges, hangup_at=hangup_at, linkedid_end=ended_at, hangup_by=hangup_by,
        fallback_context=fallback_context, recording=recording, voicemail=voicemail,
        last_at=ordered[-1].at, notes=notes, menu_keys=menu_keys,
    )


def _hangup_by(source: str, caller_channel: str) -> str | None:
    if source == caller_channel:
        return "caller"
    if source.startswith(SURGEON_LEG_PREFIX):
        return "surgeon"
    if source.startswith("dialplan/"):
        return "system"  # the dialplan's own Hangup()
    return None


def leg_result(leg: Leg, call: CallRecord) -> tuple[AttemptOutcome, bool, int | None, datetime | None]:
    """(outcome, answered, ring seconds, connected at) of one leg.

    Accepted means bridged with the caller: the whisper bridges only after 1.
    """
    shared = [b for b in leg.bridges if b in call.bridges]
    if shared:
        connected = max(leg.bridges[shared[0]], call.bridges[shared[0]])
        return AttemptOutcome.ACCEPTED, True, _seconds(leg.started_at, leg.answered_at), connected
    if leg.answered_at is not None:
        outcome = AttemptOutcome.DECLINED if "2" in leg.whisper_digits else AttemptOutcome.NO_ANSWER
        return outcome, True, _seconds(leg.started_at, leg.answered_at), None
    ring_s = _seconds(leg.started_at, leg.hangup_at)
    if leg.disposition in _DISPOSITIONS:
        return _DISPOSITIONS[leg.disposition], False, ring_s, None
    if leg.hangup_cause in _BUSY_CAUSES:
        return AttemptOutcome.BUSY, False, ring_s, None
    if leg.hangup_cause in _FAILED_CAUSES:
        return AttemptOutcome.FAILED, False, ring_s, None
    # The caller hung up while it rang: both channels go together (Asterisk writes
    # the leg's HANGUP a few milliseconds before or after the caller's).
    if (call.hangup_by == "caller" and call.hangup_at is not None and leg.hangup_at is not None
            and abs(leg.hangup_at - call.hangup_at) < timedelta(seconds=1)):
        return AttemptOutcome.CANCELLED, False, ring_s, None
    return AttemptOutcome.NO_ANSWER, False, ring_s, None


def _seconds(start: datetime, end: datetime | None) -> int | None:
    return None if end is None else max(0, round((end - start).total_seconds()))


# -- the decision -----------------------------------------------------------------
def reconcile_call(
    linkedid: str,
    cdrs: Sequence[CdrRow],
    events: Sequence[CelEvent],
    stored: Case | None,
    directory: Directory,
    now: datetime,
    *,
    recordings: Mapping[str, int | None] | None = None,
    settle_s: float = SETTLE_S,
    stale_s: float = STALE_S,
) -> Reconciled:
    """Complete `stored` (or build a new case) from one call's CDR rows and CEL events.

    `recordings` maps recording files that exist to their length in seconds
    (None: unknown); a path not in it is not attached. `stored` is not
    modified: the result holds a copy.
    """
    if stored is not None and stored.linked_case_id is not None:
        # A callback the service placed (hotline/callbacks.py): its legs are the
        # surgeon and the caller called back, which the inbound rules above
        # would misread as a chain. The service writes it whole; leave it.
        return Reconciled(linkedid, "unchanged", None, note="a callback's own case")
    call = read_call(linkedid, cdrs, events)
    if call is None:
        note = "no CHAN_START of the caller's channel in CEL"
        return Reconciled(linkedid, "ignored" if stored is None else "unchanged", None, note=note)
    if stored is None and not call.inbound:
        return Reconciled(linkedid, "ignored", None, note="not a call to the hotline")
    if call.linkedid_end is not None:
        call.ended_at = call.hangup_at or call.linkedid_end
    elif (now - call.last_at).total_seconds() < stale_s:
        return Reconciled(linkedid, "in-progress", None, note="the call is still going on")
    else:
        call.ended_at = call.hangup_at or call.last_at
        call.notes.append("no LINKEDID_END: ended at the caller's hang-up or the last event "
                          "(Asterisk stopped?)")
    if (now - call.ended_at).total_seconds() < settle_s:
        return Reconciled(linkedid, "in-progress", None, note="ended moments ago; left to the service")
    changes: list[str] = []
    try:
        if stored is None:
            case = _new_case(call, directory, changes)
        elif stored.ended_at is not None and (_missing_legs(stored, call) or _guessed(stored, call)):
            case = _replay(stored, call, directory, changes)
        else:
            case = copy.deepcopy(stored)
            _complete(case, call, directory, changes)
        if stored is not None:
            _correct_late_start(case, stored, call, directory, changes)
        _attach_recording(case, call, recordings or {}, changes)
    except CaseError as exc:
        return Reconciled(linkedid, "error", None, note=f"not reconciled: {exc}")
    note = "; ".join(call.notes)
    if stored is None:
        return Reconciled(linkedid, "created", case, tuple(changes), note)
    if not changes:
        return Reconciled(linkedid, "unchanged", None, (), note)
    return Reconciled(linkedid, "updated", case, tuple(changes), note)


def _new_case(call: CallRecord, directory: Directory, changes: list[str]) -> Case:
    caller = classify(call.caller_raw, directory.partner_numbers)
    case = lifecycle.open_case(CASE_ID_PREFIX + call.linkedid, call.linkedid, caller,
                               call.started_at, language=directory.language)
    lifecycle.mark_fallback(case, call.started_at)
    where = f" ({call.fallback_context})" if call.fallback_context else ""
    changes.append(f"new case {case.case_id}: caller {caller.raw_safe or '-'} "
                   f"[{caller.caller_class.value}], started {_iso(call.started_at)}; "
                   f"no request reached the service: fallback{where}")
    for choice, label, at in _menu_path(call, directory):
        lifecycle.record_menu(case, at, choice, label)
        changes.append(f"menu {choice} ({label}) at {_iso(at)}")
    team = next((leg.team for leg in call.legs if leg.team), None)
    if team:
        lifecycle.set_team(case, call.started_at, team)
        changes.append(f"team {team}")
    _complete(case, call, directory, changes)
    return case


def _menu_path(call: CallRecord, directory: Directory) -> list[tuple[str, str, datetime]]:
    """(choice, label, when) of each key the caller pressed at the menu, as the
    service would have recorded it; none without the menu's keys."""
    if not directory.menu_keys:
        return []
    path = []
    for digit, at in call.menu_keys:
        choice = directory.menu_keys.get(digit, ("invalid", "invalid"))
        if choice is not None:
            path.append((*choice, at))
    return path


def _correct_late_start(case: Case, stored: Case, call: CallRecord, directory: Directory,
                        changes: list[str]) -> None:
    """A case the service opened after the call began (its call_start reached no
    worker), or that holds no menu event though the caller pressed keys: the
    start time, the team and the menu keys the service never heard, from the records.

    A correction of the record rather than a transition (the lifecycle adds
    nothing to an ended case), so it is done here and counted as one revision.
    """
    late = (stored.started_at - call.started_at).total_seconds() > LATE_START_S
    # Every menu key reaches the service as a menu event: none stored, yet keys
    # in the records, means the menu went to no worker either.
    unheard_menu = not stored.menu and bool(_menu_path(call, directory))
    if not late and not unheard_menu:
        return
    before = len(changes)
    if late:
        changes.append(f"started {_iso(call.started_at)}, not {_iso(stored.started_at)}: "
                       f"the service heard of the call late")
        case.started_at = call.started_at
    if case.team is None:
        team = next((leg.team for leg in call.legs if leg.team), None)
        if team:
            case.team = team
            changes.append(f"team {team}")
    # Keys pressed before the first the service recorded itself (it records
    # a key a moment after Asterisk saw it).
    first = min((event.at for event in case.menu), default=None)
    missed = [lifecycle.MenuEvent(at=at, choice=choice, label=label)
              for choice, label, at in _menu_path(call, directory)
              if first is None or at < first - timedelta(seconds=1)]
    if missed:
        case.menu[:0] = missed
        changes.extend(f"menu {e.choice} ({e.label}) at {_iso(e.at)}" for e in missed)
    if len(changes) > before:
        case.revision += 1


def _missing_legs(stored: Case, call: CallRecord) -> bool:
    """The ended case lacks legs the records show (and agrees on the ones it has)."""
    if len(call.legs) <= len(stored.attempts) or stored.connected_seq is not None:
        return False
    return all(a.phone == leg.number for a, leg in zip(stored.attempts, call.legs))


def _guessed(stored: Case, call: CallRecord) -> set[int]:
    """Attempts the service closed as cancelled at the hang-up, not having seen
    them end (`call_end`, `absorb_end` after a restart), that the records say
    ended otherwise, e.g. accepted and bridged."""
    seqs = set()
    for attempt, leg in zip(stored.attempts, call.legs):
        if attempt.phone != leg.number:
            break
        if (attempt.outcome is AttemptOutcome.CANCELLED and attempt.ended_at == stored.ended_at
                and leg_result(leg, call)[0] is not AttemptOutcome.CANCELLED):
            seqs.add(attempt.seq)
    return seqs


def _replay(stored: Case, call: CallRecord, directory: Directory, changes: list[str]) -> Case:
    """Rebuild an ended case that lacks attempts or holds guessed ones, keeping the rest.

    The lifecycle adds no attempt to an ended case and keeps an attempt's
    first end (rightly, for a live call), but a service restarted mid-call
    closes the case at the hang-up without the legs it never saw, and cancels
    the one that was ringing when it went down. So the stored case is replayed
    through the transitions up to its end, leaving the guessed attempts open;
    the records end those and add the missing legs; the stored end is applied
    again (first values win).
    """
    guessed = _guessed(stored, call)
    case = lifecycle.open_case(stored.case_id, stored.linkedid, stored.caller, stored.started_at,
                               stored.language)
    for event in stored.menu:
        lifecycle.record_menu(case, event.at, event.choice, event.label)
    if stored.team is not None:
        lifecycle.set_team(case, stored.started_at, stored.team)
    for a in stored.attempts:
        lifecycle.start_attempt(case, a.started_at, a.seq, a.kind,  # type: ignore[arg-type]
                                ChainStep(a.surgeon_id, a.name, a.phone, a.role, 0))
        if a.ended_at is not None and a.outcome is not None and a.seq not in guessed:
            lifecycle.end_attempt(case, a.ended_at, a.seq, a.outcome, answered=a.answered,
                                  ring_s=a.ring_s)
    if stored.fallback:
        lifecycle.mark_fallback(case, stored.started_at)
    if stored.voicemail_path is not None and stored.voicemail_at is not None:
        call.voicemail = (stored.voicemail_path, stored.voicemail_at)
    assert stored.ended_at is not None
    call.ended_at = stored.ended_at
    if stored.hangup_by is not None:
        call.hangup_by = stored.hangup_by
    replayed: list[str] = []
    _complete(case, call, directory, replayed)
    # What the stored case already said (its end, its voicemail) is no change.
    restated = ("ended ",) + (("voicemail ",) if stored.voicemail_path is not None else ())
    changes.extend(c + (" (the service had closed it as cancelled)"
                        if any(c.startswith(f"attempt #{seq} ") for seq in guessed) else "")
                   for c in replayed if not c.startswith(restated))
    if stored.hangup_by is None and case.hangup_by is not None:
        changes.append(f"hang-up by {case.hangup_by}")
    if stored.recording_path is not None:
        lifecycle.set_recording(case, stored.ended_at, stored.recording_path, stored.recording_s)
    # The replay counted its revisions from 1; the stored row must lose to it.
    case.revision = stored.revision + case.revision
    return case


def _complete(case: Case, call: CallRecord, directory: Directory, changes: list[str]) -> None:
    """Bring `case` up to what the records show, through the lifecycle's transitions."""
    assert call.ended_at is not None
    if call.fallback_context and not case.fallback:
        lifecycle.mark_fallback(case, call.ended_at)
        changes.append(f"fallback: the call was dialled from {call.fallback_context}")
    open_case = case.ended_at is None  # after the end, no attempt can be added
    for index, leg in enumerate(call.legs):
        seq = index + 1
        assert leg.number is not None
        attempt = case.attempt(seq)
        if attempt is not None and attempt.phone != leg.number:
            call.notes.append(f"leg {seq} rang {leg.number} but attempt #{seq} is "
                              f"{safe_text(attempt.phone)}: legs from here left out")
            break
        if attempt is None:
            if not open_case or case.connected_seq is not None:
                call.notes.append(f"leg {seq} ({leg.number}) not added: the case was already "
                                  f"{'connected' if open_case else 'ended'}")
                break
            kind, step = directory.step(leg.number, leg.team or case.team, leg.started_at)
            attempt = lifecycle.start_attempt(case, leg.started_at, seq, kind, step)  # type: ignore[arg-type]
            changes.append(f"attempt #{seq} {kind} {leg.number} started {_iso(leg.started_at)}")
        _end_attempt(case, attempt, leg, call, changes)
    if case.ended_at is None:
        for attempt in case.attempts:  # nothing stays ringing once the caller is gone
            if attempt.ended_at is None:
                lifecycle.end_attempt(case, call.ended_at, attempt.seq, AttemptOutcome.CANCELLED)
                changes.append(f"attempt #{attempt.seq} {safe_text(attempt.phone)}: cancelled "
                               f"(no leg in Asterisk's records)")
        if call.voicemail is not None and case.connected_seq is None and case.voicemail_path is None:
            lifecycle.set_voicemail(case, call.voicemail[1], call.voicemail[0])
            changes.append(f"voicemail {safe_text(call.voicemail[0], limit=200)}")
        lifecycle.mark_ended(case, call.ended_at, call.hangup_by)  # type: ignore[arg-type]
        changes.append(f"ended {_iso(call.ended_at)}, hang-up by {call.hangup_by or 'unknown'}")
    elif case.hangup_by is None and call.hangup_by is not None:
        lifecycle.mark_ended(case, call.ended_at, call.hangup_by)  # type: ignore[arg-type]
        changes.append(f"hang-up by {call.hangup_by}")


def _end_attempt(case: Case, attempt: DialAttempt, leg: Leg, call: CallRecord,
                 changes: list[str]) -> None:
    outcome, answered, ring_s, connected_at = leg_result(leg, call)
    if attempt.ended_at is None:
        at = connected_at or leg.hangup_at or call.ended_at
        assert at is not None
        lifecycle.end_attempt(case, at, attempt.seq, outcome, answered=answered, ring_s=ring_s)
        detail = " (answered)" if answered and outcome is not AttemptOutcome.ACCEPTED else ""
        rang = f", rang {ring_s}s" if ring_s is not None else ""
        changes.append(f"attempt #{attempt.seq} {safe_text(attempt.phone)}: {outcome.value}{detail}{rang}")
    if (connected_at is not None and case.connected_seq is None and case.ended_at is None
            and attempt.outcome is AttemptOutcome.ACCEPTED and case.voicemail_path is None):
        lifecycle.mark_connected(case, connected_at, attempt.seq)
        changes.append(f"connected to #{attempt.seq} at {_iso(connected_at)}")


def _attach_recording(case: Case, call: CallRecord, recordings: Mapping[str, int | None],
                      changes: list[str]) -> None:
    path = call.recording
    if (path is None or case.recording_path is not None or case.connected_seq is None
            or path not in recordings):
        return
    length = recordings[path]
    lifecycle.set_recording(case, case.ended_at or call.last_at, path, length)
    changes.append(f"recording {safe_text(path, limit=200)}"
                   + (f" ({length}s)" if length is not None else ""))


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
