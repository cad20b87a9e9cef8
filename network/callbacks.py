"""Callback tasks (回拨任务): which finished calls need one, when it is due, and its states.

Pure: times come in as arguments, nothing here reads a clock, a database or a
socket. The store (`db/callbacks.py`) loads a task, applies a transition here
and writes the result back in one transaction; the placer
(`hotline/callbacks.py`) turns what Asterisk reported into a `PlacementOutcome`.

A task's life:

    open ──request──▶ placing ──start──▶ placed ──result: connected──▶ done
     ▲  ▲                │                  │
     │  └──result: not connected (attempts < MAX_ATTEMPTS)──┘
     │                   │ (a request nobody picked up in time expires back to open)
    failed ◀── result: not connected, MAX_ATTEMPTS reached (still placeable by hand)
    open / failed ──close──▶ done      open / failed ──cancel──▶ cancelled

- `placing`: someone asked (console or API) to place it; the service has not
  taken the request yet. The console never holds the power to originate.
- `placed`: the service took the request and sent its one AMI Originate; the
  surgeon's phone rings, then the caller's.
- A task whose number is unknown (anonymous or invalid caller-ID) is a task
  all the same -- a voicemail may say the number -- but it cannot be placed.
- Only a domestic mobile or landline is placed by the service (`dialable`):
  the number is the caller's claim, and a forged caller-ID pressing 8 must not
  make the hotline dial 110/120, a premium-rate service or a number abroad on
  the surgeons' trunk. Staff call such numbers by hand and close the task.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cases.lifecycle import Case
from oncall.model import Role, Roster
from oncall.rotation import on_call

#: What the service may dial back by itself: a mobile (1[3-9] + 9 digits) or a
#: landline with its area code (0 + 9..11 digits), in routing.callers' form.
_DIALABLE = re.compile(r"1[3-9][0-9]{9}|0[1-9][0-9]{8,10}", re.ASCII)

#: The menu-event label of "call me back" (需要回拨请按8); the key itself is configurable.
REQUESTED_LABEL = "callback"
#: Failed placements before a task is `failed` instead of open again.
MAX_ATTEMPTS = 3
#: A placement request that the service has not taken within this long is
#: stale (the service was down): it goes back to open instead of ringing a
#: surgeon long after anyone clicked.
REQUEST_TTL = timedelta(minutes=2)
NOTE_MAX = 2000


class CallbackReason(str, enum.Enum):
    VOICEMAIL = "voicemail"  # left a message; no surgeon accepted
    ABANDONED = "abandoned"  # hung up after choosing a team, before anyone accepted
    REQUESTED = "requested"  # chose "call me back" in the menu


class CallbackStatus(str, enum.Enum):
    OPEN = "open"
    PLACING = "placing"
    PLACED = "placed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Still needs someone: shown first in the list, counted as overdue once due."""
        return self in (CallbackStatus.OPEN, CallbackStatus.PLACING, CallbackStatus.PLACED,
                        CallbackStatus.FAILED)


#: How long after the call a task falls due. A voicemail or an explicit "call me
#: back" is due at once: the caller already waited through a whole chain, or
#: asked. An abandoned call gets five minutes' grace: many callers simply dial
#: again, and a callback then would cross their second call.
DUE_AFTER = {
    CallbackReason.VOICEMAIL: timedelta(0),
    CallbackReason.REQUESTED: timedelta(0),
    CallbackReason.ABANDONED: timedelta(minutes=5),
}


class CallbackError(ValueError):
    """A change the task's state does not allow (subclasses say which)."""


class NumberUnknown(CallbackError):
    """The caller's number is unknown (anonymous or invalid caller-ID): nothing to dial."""


class NotDialable(CallbackError):
    """A short, special or foreign number: the service does not dial it; staff call by hand."""


def dialable(number: str | None) -> bool:
    """Whether the service may place a callback to `number` (a normalised number).

    >>> [dialable(n) for n in ("13912345678", "043188888888", "110", "0085212345678", None)]
    [True, True, False, False, False]
    """
    return number is not None and _DIALABLE.fullmatch(number) is not None


class AlreadyPlacing(CallbackError):
    """A placement of this task is already requested or under way."""


class TaskClosed(CallbackError):
    """The task is done or cancelled."""


class NoSurgeon(CallbackError):
    """Nobody to ring first: the task has no owner and the requester is no surgeon."""


class NotPlacing(CallbackError):
    """A placement result or start for a task that is not being placed."""


@dataclass(frozen=True)
class CallbackTask:
    """One task, as the store holds it."""

    id: int
    case_id: str
    reason: CallbackReason
    due_at: datetime
    status: CallbackStatus
    created_at: datetime
    number: str | None = None
    team: str | None = None
    owner_surgeon_id: int | None = None
    attempts: int = 0
    placed_at: datetime | None = None
    placed_by: str | None = None
    callback_case_id: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    note: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.status.active and self.due_at <= now

    @property
    def placeable(self) -> bool:
        return self.number is not None and self.status in (CallbackStatus.OPEN,
                                                           CallbackStatus.FAILED)


@dataclass(frozen=True)
class CallbackPlan:
    """What a new task holds, decided from the finished case."""

    case_id: str
    reason: CallbackReason
    due_at: datetime
    number: str | None
    team: str | None
    owner_surgeon_id: int | None


# --------------------------------------------------------------------------- which cases


def callback_reason(case: Case) -> CallbackReason | None:
    """Why this case needs a callback, or None.

    - a voicemail (as soon as it is recorded, even before the call ends);
    - "call me back" chosen in the menu, once the call has ended;
    - abandoned: ended, a team was chosen (so the caller was ringing or
      waiting), nobody accepted, and the caller -- not the system -- ended it.
    Never for a callback's own case (it names a linked case), and never for a
    call the static fallback handled without a voicemail: whether the duty
    nurse answered it is unknown.
    """
    if case.linked_case_id is not None or case.connected_seq is not None:
        return None
    if case.voicemail_path:
        return CallbackReason.VOICEMAIL
    if case.ended_at is None or case.fallback:
        return None
    if any(event.label == REQUESTED_LABEL for event in case.menu):
        return CallbackReason.REQUESTED
    if case.team is not None and case.hangup_by in ("caller", None):
        return CallbackReason.ABANDONED
    return None


def reason_time(case: Case, reason: CallbackReason) -> datetime:
    """When the need arose: the voicemail's time, else the end of the call."""
    if reason is CallbackReason.VOICEMAIL and case.voicemail_at is not None:
        return case.voicemail_at
    return case.ended_at or case.voicemail_at or case.started_at


def owner_at(roster: Roster, team: str | None, at: datetime) -> int | None:
    """The team's on-call primary at `at`; None without a team or a primary."""
    if team is None:
        return None
    for member in on_call(roster, team, at):
        if member.role is Role.PRIMARY:
            return member.surgeon.id
    return None


def plan_callback(case: Case, roster: Roster | None) -> CallbackPlan | None:
    """The task this case needs (with its due time and owner), or None.

    The number is the caller's normalised number, None when it is unknown.
    `roster` None: no owner (the store passes the roster of that time).
    """
    reason = callback_reason(case)
    if reason is None:
        return None
    at = reason_time(case, reason)
    owner = owner_at(roster, case.team, at) if roster is not None else None
    return CallbackPlan(case_id=case.case_id, reason=reason, due_at=at + DUE_AFTER[reason],
                        number=case.caller.number, team=case.team, owner_surgeon_id=owner)


# --------------------------------------------------------------------------- transitions


def _check_at(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes")


def _check_not_closed(task: CallbackTask) -> None:
    if task.status in (CallbackStatus.DONE, CallbackStatus.CANCELLED):
        raise TaskClosed(f"callback {task.id} is {task.status.value}")


def request_placement(task: CallbackTask, at: datetime, by: str,
                      surgeon_id: int | None = None) -> CallbackTask:
    """Ask for the callback to be placed (console / API): open or failed → placing.

    `surgeon_id`: the requester, if a surgeon -- their phone rings first, and
    they become the owner. Otherwise the owner's phone rings; no owner: NoSurgeon.
    """
    _check_at(at)
    _check_not_closed(task)
    if task.status in (CallbackStatus.PLACING, CallbackStatus.PLACED):
        raise AlreadyPlacing(f"callback {task.id} is already being placed")
    if task.number is None:
        raise NumberUnknown(f"callback {task.id}: the caller's number is unknown")
    if not dialable(task.number):
        raise NotDialable(f"callback {task.id}: not a domestic mobile or landline; call it by hand")
    owner = surgeon_id if surgeon_id is not None else task.owner_surgeon_id
    if owner is None:
        raise NoSurgeon(f"callback {task.id} has no owner to ring first")
    return replace(task, status=CallbackStatus.PLACING, owner_surgeon_id=owner,
                   attempts=task.attempts + 1, placed_at=at, placed_by=by[:128])


def start_placing(task: CallbackTask, at: datetime) -> CallbackTask:
    """The service takes the request and originates: placing → placed."""
    _check_at(at)
    if task.status is not CallbackStatus.PLACING:
        raise NotPlacing(f"callback {task.id} is {task.status.value}, not placing")
    return replace(task, status=CallbackStatus.PLACED, placed_at=at)


def request_expired(task: CallbackTask, now: datetime) -> bool:
    """A placement request that nobody took in time (the service was not running)."""
    return (task.status is CallbackStatus.PLACING and task.placed_at is not None
            and now - task.placed_at > REQUEST_TTL)


class PlacementOutcome(str, enum.Enum):
    CONNECTED = "connected"
    SURGEON_NO_ANSWER = "surgeon_no_answer"  # the surgeon's phone rang out or was rejected
    SURGEON_BUSY = "surgeon_busy"
    SURGEON_NO_KEY = "surgeon_no_key"  # answered but never pressed 1 (a voicemail box)
    CALLER_NO_ANSWER = "caller_no_answer"
    CALLER_BUSY = "caller_busy"
    FAILED = "failed"  # the network refused a leg (congestion, unreachable)
    UNKNOWN = "unknown"  # the service lost track (AMI dropped, restart): not resent
    EXPIRED = "expired"  # requested while the service was not running

    @property
    def note_zh(self) -> str:
        return _NOTES[self][0]

    @property
    def note_en(self) -> str:
        return _NOTES[self][1]


_NOTES = {
    PlacementOutcome.CONNECTED: ("回拨已接通", "callback connected"),
    PlacementOutcome.SURGEON_NO_ANSWER: ("医生未接听或拒接", "the surgeon did not answer or rejected the call"),
    PlacementOutcome.SURGEON_BUSY: ("医生电话占线", "the surgeon's phone was busy"),
    PlacementOutcome.SURGEON_NO_KEY: ("医生接听后未按1", "the surgeon answered but did not press 1"),
    PlacementOutcome.CALLER_NO_ANSWER: ("来电者未接听", "the caller did not answer"),
    PlacementOutcome.CALLER_BUSY: ("来电者占线", "the caller's line was busy"),
    PlacementOutcome.FAILED: ("呼叫失败", "the call could not be placed"),
    PlacementOutcome.UNKNOWN: ("结果未知（未重发，请核实后重试）",
                               "outcome unknown (not resent; check before trying again)"),
    PlacementOutcome.EXPIRED: ("呼叫请求未被处理（服务未运行），请重试",
                               "the request was not taken (the service was not running); try again"),
}


def record_result(task: CallbackTask, at: datetime, outcome: PlacementOutcome,
                  callback_case_id: str | None = None) -> CallbackTask:
    """How a placement ended: connected → done; otherwise back to open (or failed
    after MAX_ATTEMPTS), with the outcome as the note."""
    _check_at(at)
    if task.status not in (CallbackStatus.PLACING, CallbackStatus.PLACED):
        raise NotPlacing(f"callback {task.id} is {task.status.value}, not being placed")
    note = f"{outcome.note_zh} / {outcome.note_en}"
    case_id = callback_case_id or task.callback_case_id
    if outcome is PlacementOutcome.CONNECTED:
        return replace(task, status=CallbackStatus.DONE, closed_at=at, closed_by="service",
                       note=note, callback_case_id=case_id)
    status = CallbackStatus.FAILED if task.attempts >= MAX_ATTEMPTS else CallbackStatus.OPEN
    return replace(task, status=status, note=note, callback_case_id=case_id)


def assign(task: CallbackTask, surgeon_id: int | None) -> CallbackTask:
    """A new owner (None: nobody); allowed until the task is closed, but not while a
    placement is requested or under way: the service rings the owner it read when it
    took the request, so a new owner then would not be the surgeon on the call."""
    _check_not_closed(task)
    if task.status in (CallbackStatus.PLACING, CallbackStatus.PLACED):
        raise AlreadyPlacing(f"callback {task.id} is being placed; assign it afterwards")
    return replace(task, owner_surgeon_id=surgeon_id)


def close(task: CallbackTask, at: datetime, by: str, note: str,
          cancelled: bool = False) -> CallbackTask:
    """Close by hand with a note: done (dealt with) or cancelled (not needed).

    Not while a placement is under way: its result would land on a closed task.
    """
    _check_at(at)
    _check_not_closed(task)
    if task.status in (CallbackStatus.PLACING, CallbackStatus.PLACED):
        raise AlreadyPlacing(f"callback {task.id} is being placed; close it afterwards")
    text = note.strip()
    if not text:
        raise CallbackError("closing a callback needs a note")
    if len(text) > NOTE_MAX:
        raise CallbackError(f"a note has at most {NOTE_MAX} characters")
    return replace(task, status=CallbackStatus.CANCELLED if cancelled else CallbackStatus.DONE,
                   closed_at=at, closed_by=by[:128], note=text)


# --------------------------------------------------------------------------- Asterisk → outcome

# OriginateResponse `Reason` (Asterisk's AST_CONTROL_* of the dialled leg).
_ORIGINATE_REASONS = {
    # No control frame before the hang-up: seen from the real Asterisk 22 when
    # the surgeon's phone rejects the call (tests/integration/test_callbacks_live.py).
    "0": PlacementOutcome.SURGEON_NO_ANSWER,
    "1": PlacementOutcome.SURGEON_NO_ANSWER,  # hung up / rejected
    "3": PlacementOutcome.SURGEON_NO_ANSWER,  # rang out
    "5": PlacementOutcome.SURGEON_BUSY,
    "8": PlacementOutcome.FAILED,  # congestion
}


def originate_failure(reason: str) -> PlacementOutcome:
    """The outcome of an OriginateResponse that says Failure (the surgeon's leg never answered)."""
    return _ORIGINATE_REASONS.get(reason, PlacementOutcome.FAILED)


def callback_end(stage: str, dial_status: str) -> PlacementOutcome:
    """The outcome from the callback dialplan's hang-up: `stage` how far it got
    (answered: the surgeon picked up; no-key: never pressed 1; dialing: the
    caller's phone was dialled), `dial_status` Dial()'s DIALSTATUS then."""
    if stage != "dialing":
        return PlacementOutcome.SURGEON_NO_KEY
    if dial_status == "ANSWER":
        return PlacementOutcome.CONNECTED
    if dial_status == "BUSY":
        return PlacementOutcome.CALLER_BUSY
    if dial_status in ("CONGESTION", "CHANUNAVAIL", "INVALIDARGS", "DONTCALL", "TORTURE"):
        return PlacementOutcome.FAILED
    return PlacementOutcome.CALLER_NO_ANSWER  # NOANSWER, or CANCEL: the surgeon gave up
