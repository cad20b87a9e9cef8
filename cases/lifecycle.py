"""The case record of one call, from first ring to hang-up, and its transitions.

Pure: every transition takes the time `at` as an argument. A `Case` is owned by
one call; transitions mutate it in place and bump `revision`, which the
repository uses to ignore a stale snapshot saved after a newer one.
Transitions fed by Asterisk events that may repeat (an attempt's end, the
call's end, the recording) are idempotent: the first value wins.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

from routing.callers import Caller, safe_text
from routing.escalation import (
    CHAIN,
    NURSE,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    ChainStep,
)

LANGUAGES = frozenset({"zh", "en"})
# blocked: a caller on the block list; incident: routed in major-incident mode
# (every surgeon on call rung at once); both recorded by ivr.calls' users.
MENU_CHOICES = frozenset({"1", "2", "3", "4", "5", "6", "7", "8", "0", "9", "timeout", "invalid", "partner",
                          "blocked", "incident"})
HANGUP_BY = frozenset({"caller", "surgeon", "system"})
LABEL_MAX = 128

CaseOutcome = Literal["connected", "nurse", "voicemail", "abandoned", "fallback", "in-progress"]
HangupBy = Literal["caller", "surgeon", "system"]

# Ids come from Asterisk (linkedid), Twilio (CallSid) or the service: never from
# the caller; still checked, because they end up in file names and URLs.
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_TEAM = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)


class CaseError(ValueError):
    """A transition that the case's current state does not allow."""


@dataclass(frozen=True)
class MenuEvent:
    at: datetime
    choice: str  # one of MENU_CHOICES; never the raw DTMF the caller sent
    label: str


@dataclass
class DialAttempt:
    """One ringing of one phone for this call (chain step or duty nurse)."""

    seq: int
    kind: AttemptKind
    surgeon_id: int | None
    name: str
    phone: str
    role: str
    started_at: datetime
    ended_at: datetime | None = None
    ring_s: int | None = None  # seconds it rang
    answered: bool = False  # picked up, whether or not the surgeon then accepted
    outcome: AttemptOutcome | None = None


@dataclass
class Case:
    """The record of one call. Build it with `open_case`, change it with the transitions."""

    case_id: str
    linkedid: str
    caller: Caller
    started_at: datetime
    language: str = "zh"
    team: str | None = None
    menu: list[MenuEvent] = field(default_factory=list)
    attempts: list[DialAttempt] = field(default_factory=list)
    connected_at: datetime | None = None
    connected_surgeon_id: int | None = None
    connected_seq: int | None = None
    ended_at: datetime | None = None
    hangup_by: str | None = None
    recording_path: str | None = None
    recording_s: int | None = None
    voicemail_path: str | None = None
    voicemail_at: datetime | None = None
    fallback: bool = False  # handled by the static fallback while the service was down
    # A callback's own case names the case it calls back (network/callbacks.py).
    linked_case_id: str | None = None
    revision: int = 0

    @property
    def outcome(self) -> CaseOutcome:
        """Derived: fallback wins; otherwise in-progress until ended."""
        if self.fallback:
            return "fallback"
        if self.ended_at is None:
            return "in-progress"
        if self.connected_seq is not None:
            accepted = self.attempt(self.connected_seq)
            return "nurse" if accepted is not None and accepted.kind == NURSE else "connected"
        if self.voicemail_path:
            return "voicemail"
        return "abandoned"

    def attempt(self, seq: int) -> DialAttempt | None:
        # seq is 1-based and contiguous (start_attempt enforces it).
        if 1 <= seq <= len(self.attempts):
            return self.attempts[seq - 1]
        return None


class TimelineEntry(NamedTuple):
    at: datetime
    kind: str
    detail: str


def open_case(
    case_id: str, linkedid: str, caller: Caller, at: datetime, language: str = "zh",
    linked_case_id: str | None = None,
) -> Case:
    """A new case for a call that has just arrived (or, with `linked_case_id`, a
    callback placed for that case)."""
    _check_at(at)
    if not isinstance(case_id, str) or not _ID.fullmatch(case_id):
        raise CaseError("case_id must be 1..64 of [A-Za-z0-9._:-]")
    if not isinstance(linkedid, str) or not _ID.fullmatch(linkedid):
        raise CaseError("linkedid must be 1..64 of [A-Za-z0-9._:-]")
    if linked_case_id is not None and (not isinstance(linked_case_id, str)
                                       or not _ID.fullmatch(linked_case_id)):
        raise CaseError("linked_case_id must be 1..64 of [A-Za-z0-9._:-]")
    _check_language(language)
    return Case(case_id=case_id, linkedid=linkedid, caller=caller, started_at=at,
                language=language, linked_case_id=linked_case_id, revision=1)


def record_menu(case: Case, at: datetime, choice: str, label: str) -> MenuEvent:
    """Append what the caller chose at a menu (or that they timed out)."""
    _check_at(at)
    _check_open(case, "record a menu choice")
    if choice not in MENU_CHOICES:
        raise CaseError(f"unknown menu choice {safe_text(str(choice))!r}")
    if not isinstance(label, str) or len(label) > LABEL_MAX:
        raise CaseError(f"a menu label is text of at most {LABEL_MAX} characters")
    event = MenuEvent(at=at, choice=choice, label=label)
    case.menu.append(event)
    _touch(case)
    return event


def set_language(case: Case, at: datetime, language: str) -> None:
    _check_at(at)
    _check_open(case, "change the language")
    _check_language(language)
    if case.language != language:
        case.language = language
        _touch(case)


def set_team(case: Case, at: datetime, team: str) -> None:
    """Route the call to a team; allowed until it is connected or ended."""
    _check_at(at)
    _check_open(case, "set the team")
    if case.connected_seq is not None:
        raise CaseError("the call is already connected")
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        raise CaseError("a team code is 1..32 of [A-Za-z0-9._-]")
    if case.team != team:
        case.team = team
        _touch(case)


def start_attempt(
    case: Case, at: datetime, seq: int, kind: AttemptKind, step: ChainStep
) -> DialAttempt:
    """Record that a phone starts ringing; `seq` must be the next one.

    Repeating the same start (same seq, same phone) returns the recorded
    attempt, so a retried request does no harm.
    """
    _check_at(at)
    existing = case.attempt(seq) if isinstance(seq, int) else None
    if existing is not None:
        if (existing.kind, existing.phone, existing.surgeon_id) == (kind, step.phone, step.surgeon_id):
            return existing
        raise CaseError(f"attempt {seq} was already started for another phone")
    _check_open(case, "start an attempt")
    if case.connected_seq is not None:
        raise CaseError("the call is already connected")
    if kind not in (CHAIN, NURSE):
        raise CaseError("an attempt's kind is 'chain' or 'nurse'")
    if seq != len(case.attempts) + 1:
        raise CaseError(f"the next attempt is {len(case.attempts) + 1}, not {seq!r}")
    attempt = DialAttempt(
        seq=seq, kind=kind, surgeon_id=step.surgeon_id, name=step.name, phone=step.phone,
        role=step.role, started_at=at,
    )
    case.attempts.append(attempt)
    _touch(case)
    return attempt


def end_attempt(
    case: Case,
    at: datetime,
    seq: int,
    outcome: AttemptOutcome | str,
    *,
    answered: bool | None = None,
    ring_s: int | None = None,
) -> DialAttempt:
    """Record how an attempt ended. Idempotent: the first end is kept.

    Allowed after the case ended (the surgeon's leg may end after the caller's).
    `answered` defaults to accepted-or-declined; `ring_s` to the whole attempt,
    so pass Asterisk's own ring time when it is known.
    """
    _check_at(at)
    attempt = case.attempt(seq)
    if attempt is None:
        raise CaseError(f"no attempt {seq!r}")
    if attempt.ended_at is not None:
        return attempt
    try:
        result = AttemptOutcome(outcome)
    except ValueError:
        raise CaseError(f"unknown attempt outcome {safe_text(str(outcome))!r}") from None
    if ring_s is None:
        ring_s = max(0, round((at - attempt.started_at).total_seconds()))
    elif ring_s < 0:
        raise CaseError("ring_s cannot be negative")
    attempt.ended_at = at
    attempt.outcome = result
    attempt.ring_s = ring_s
    attempt.answered = (
        answered if answered is not None
        else result in (AttemptOutcome.ACCEPTED, AttemptOutcome.DECLINED)
    )
    _touch(case)
    return attempt


def mark_connected(case: Case, at: datetime, seq: int) -> None:
    """The caller is bridged to the person of attempt `seq`, who accepted.

    An attempt still open is ended as accepted; one that ended otherwise is
    an error. Repeating the same connection is a no-op.
    """
    _check_at(at)
    if case.connected_seq is not None:
        if case.connected_seq == seq:
            return
        raise CaseError(f"already connected to attempt {case.connected_seq}")
    _check_open(case, "connect")
    attempt = case.attempt(seq)
    if attempt is None:
        raise CaseError(f"no attempt {seq!r}")
    if case.voicemail_path is not None:
        raise CaseError("the caller already left a voicemail")
    if attempt.ended_at is None:
        end_attempt(case, at, seq, AttemptOutcome.ACCEPTED)
    elif attempt.outcome is not AttemptOutcome.ACCEPTED:
        raise CaseError(f"attempt {seq} ended {attempt.outcome}, not accepted")
    case.connected_at = at
    case.connected_surgeon_id = attempt.surgeon_id
    case.connected_seq = seq
    _touch(case)


def mark_ended(case: Case, at: datetime, hangup_by: HangupBy | None = None) -> None:
    """The call is over. Idempotent: the first end time wins; a later call may
    only fill a missing `hangup_by`."""
    _check_at(at)
    if hangup_by is not None and hangup_by not in HANGUP_BY:
        raise CaseError("hangup_by is 'caller', 'surgeon', 'system' or None")
    if case.ended_at is None:
        case.ended_at = at
        case.hangup_by = hangup_by
        _touch(case)
    elif case.hangup_by is None and hangup_by is not None:
        case.hangup_by = hangup_by
        _touch(case)


def set_recording(case: Case, at: datetime, path: str, seconds: int | None = None) -> None:
    """Attach the bridged conversation's recording; its length may come later.

    The path is set once; a missing length is filled, a known one is kept.
    """
    _check_at(at)
    if not isinstance(path, str) or not path:
        raise CaseError("a recording path is a non-empty string")
    if case.recording_path is not None and case.recording_path != path:
        raise CaseError("the case already has another recording")
    if seconds is not None and seconds < 0:
        raise CaseError("recording length cannot be negative")
    changed = case.recording_path is None or (case.recording_s is None and seconds is not None)
    case.recording_path = path
    if case.recording_s is None:
        case.recording_s = seconds
    if changed:
        _touch(case)


def set_voicemail(case: Case, at: datetime, path: str) -> None:
    """The caller left a voicemail (no one accepted). Set once; allowed after the end."""
    _check_at(at)
    if not isinstance(path, str) or not path:
        raise CaseError("a voicemail path is a non-empty string")
    if case.connected_seq is not None:
        raise CaseError("a connected call has no voicemail")
    if case.voicemail_path is not None:
        if case.voicemail_path != path:
            raise CaseError("the case already has another voicemail")
        return
    case.voicemail_path = path
    case.voicemail_at = at
    _touch(case)


def relocate_recording(case: Case, at: datetime, kind: str, old: str, new: str) -> None:
    """A recording kept elsewhere (the carrier's URL) now has its local copy at `new`.

    `kind` is "call" or "voicemail". Only the path the case holds may be moved,
    so a second fetch of the same recording changes nothing.
    """
    _check_at(at)
    if kind not in ("call", "voicemail"):
        raise CaseError("a recording is of the call or a voicemail")
    if not isinstance(new, str) or not new:
        raise CaseError("a recording path is a non-empty string")
    current = case.recording_path if kind == "call" else case.voicemail_path
    if current == new:
        return
    if current != old:
        raise CaseError("the case holds another recording than the one moved")
    if kind == "call":
        case.recording_path = new
    else:
        case.voicemail_path = new
    _touch(case)


def mark_fallback(case: Case, at: datetime) -> None:
    """The static fallback handled this call while the service was unavailable."""
    _check_at(at)
    if not case.fallback:
        case.fallback = True
        _touch(case)


def routing_attempts(case: Case) -> list[Attempt]:
    """The case's attempts as `routing.escalation.Attempt`s, for `next_decision`.

    The step's `ring_s` is the time it actually rang (0 while unknown).
    """
    return [
        Attempt(
            seq=a.seq,
            step=ChainStep(a.surgeon_id, a.name, a.phone, a.role, a.ring_s or 0),
            kind=a.kind,
            outcome=a.outcome,
        )
        for a in case.attempts
    ]


def timeline(case: Case) -> list[TimelineEntry]:
    """What happened, in time order (ties keep the order of the call), for printing.

    Details are escaped: safe to print to a terminal or a log line.
    """
    caller = case.caller
    origin = f"{caller.caller_class.value} {caller.raw_safe}"
    if caller.hospital_id is not None:
        origin += f" hospital {caller.hospital_id}"
    entries = [TimelineEntry(case.started_at, "started", f"{origin} lang {case.language}")]
    for event in case.menu:
        entries.append(TimelineEntry(event.at, "menu", f"{event.choice} {_clean(event.label)}"))
    for a in case.attempts:
        who = f"#{a.seq} {a.kind} {_clean(a.role)} {_clean(a.name)} {_clean(a.phone)}"
        entries.append(TimelineEntry(a.started_at, "dial", who))
        if a.ended_at is not None:
            result = a.outcome.value if a.outcome is not None else "ended"
            answered = " answered" if a.answered else ""
            entries.append(
                TimelineEntry(a.ended_at, "dial-end", f"#{a.seq} {result} rang {a.ring_s}s{answered}")
            )
    if case.connected_at is not None and case.connected_seq is not None:
        accepted = case.attempt(case.connected_seq)
        name = _clean(accepted.name) if accepted is not None else "?"
        entries.append(TimelineEntry(case.connected_at, "connected", f"#{case.connected_seq} {name}"))
    if case.voicemail_at is not None and case.voicemail_path is not None:
        entries.append(TimelineEntry(case.voicemail_at, "voicemail", _clean(case.voicemail_path)))
    if case.ended_at is not None:
        detail = f"{case.outcome} hangup by {case.hangup_by or 'unknown'}"
        if case.recording_path is not None:
            length = f" {case.recording_s}s" if case.recording_s is not None else ""
            detail += f" recording {_clean(case.recording_path)}{length}"
        entries.append(TimelineEntry(case.ended_at, "ended", detail))
    return sorted(entries, key=lambda entry: entry.at)


def _clean(text: str) -> str:
    return safe_text(text, limit=LABEL_MAX)


def _touch(case: Case) -> None:
    case.revision += 1


def _check_at(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise CaseError("times must be timezone-aware datetimes")


def _check_open(case: Case, what: str) -> None:
    if case.ended_at is not None:
        raise CaseError(f"cannot {what}: the case has ended")


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise CaseError("language is 'zh' or 'en'")


def absorb_end(stored: Case, late: Case) -> bool:
    """Complete `stored` with the end that `late` recorded for the same call.

    When the service restarts during a call, the new process does not know the
    call and opens a second, minimal case when it hangs up; the call's real
    case (from before the restart) is `stored`. Returns whether anything changed.
    """
    if stored.linkedid != late.linkedid:
        raise CaseError("absorb_end needs two cases of the same call")
    if late.ended_at is None:
        return False
    before = stored.revision
    if late.fallback:
        mark_fallback(stored, late.ended_at)
    for attempt in stored.attempts:  # whatever rang then, nobody saw it end
        if attempt.ended_at is None:
            end_attempt(stored, late.ended_at, attempt.seq, AttemptOutcome.CANCELLED)
    if late.voicemail_path and stored.connected_seq is None and stored.voicemail_path is None:
        set_voicemail(stored, late.ended_at, late.voicemail_path)
    mark_ended(stored, late.ended_at, late.hangup_by)  # type: ignore[arg-type]
    return stored.revision != before
