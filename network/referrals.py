"""Referrals (转诊) and the patient's transfer (转运): the state machine, the patient's
essentials, time since injury and the ischaemia urgency of a replantation. Pure.

No clock and no I/O here: every function that needs "now" takes it, and the
store (`db.referrals`) and the console translate at the edges.

The states, and who may move a referral between them:

    requested ──▶ accepted ──▶ en_route ──▶ arrived ──▶ admitted
        │             │            │
        ├──▶ declined (needs a reason)
        └─────────────┴────────────┴──▶ cancelled (needs a reason)

`declined`, `admitted` and `cancelled` are final. `arrived` cannot be
cancelled: the patient is in the building, what happens next is admission
(or a note on the case). A surgeon who accepts a referral with no receiving
surgeon yet becomes its receiving surgeon (`transition(by_surgeon=...)`).

Texts typed by people (injury, notes) are hostile like any other input: they
are trimmed, bounded, and refused if they hold control, format or line
separator characters (a note may hold plain line breaks).
"""
from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

MAX_INJURY = 500  # characters of the injury description
MAX_NOTE = 1000  # characters of a status change's note
MAX_AGE = 120
# How far a time of injury may lie ahead of our clock: the partner hospital's
# clock, or the person typing, may be a little ahead. More is a typing error.
CLOCK_SKEW = timedelta(minutes=5)
# How far back a time of injury may lie: a year catches a wrong year typed,
# and still allows a late referral for secondary reconstruction.
OLDEST_INJURY = timedelta(days=365)

_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class ReferralStatus(str, enum.Enum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EN_ROUTE = "en_route"
    ARRIVED = "arrived"
    ADMITTED = "admitted"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def label_zh(self) -> str:
        return STATUS_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return STATUS_LABELS[self][1]


S = ReferralStatus
# The state machine: what may follow each status. Nothing else is legal.
TRANSITIONS: dict[ReferralStatus, tuple[ReferralStatus, ...]] = {
    S.REQUESTED: (S.ACCEPTED, S.DECLINED, S.CANCELLED),
    S.ACCEPTED: (S.EN_ROUTE, S.CANCELLED),
    S.EN_ROUTE: (S.ARRIVED, S.CANCELLED),
    S.ARRIVED: (S.ADMITTED,),
    S.DECLINED: (),
    S.ADMITTED: (),
    S.CANCELLED: (),
}
REASON_NEEDED: frozenset[ReferralStatus] = frozenset({S.DECLINED, S.CANCELLED})
OPEN: tuple[ReferralStatus, ...] = tuple(s for s in S if TRANSITIONS[s])
# Status labels, in one place: (中文, English). The console, the API's
# documentation and the notices all read them from here.
STATUS_LABELS: dict[ReferralStatus, tuple[str, str]] = {
    S.REQUESTED: ("已申请", "requested"),
    S.ACCEPTED: ("已接收", "accepted"),
    S.DECLINED: ("已拒绝", "declined"),
    S.EN_ROUTE: ("转运途中", "patient en route"),
    S.ARRIVED: ("已到院", "arrived"),
    S.ADMITTED: ("已入院", "admitted"),
    S.CANCELLED: ("已取消", "cancelled"),
}


class Sex(str, enum.Enum):
    MALE = "male"
    FEMALE = "female"
    UNKNOWN = "unknown"


SEX_LABELS: dict[Sex, tuple[str, str]] = {
    Sex.MALE: ("男", "male"), Sex.FEMALE: ("女", "female"), Sex.UNKNOWN: ("不详", "unknown")}


# --------------------------------------------------------------------------- errors


class ReferralError(ValueError):
    """A referral cannot be made or changed as asked; `message` English, `message_zh` Chinese."""

    code = "referral_error"

    def __init__(self, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh


class UnknownStatus(ReferralError):
    code = "unknown_status"


class IllegalTransition(ReferralError):
    """The state machine does not allow this change (from `current` to `wanted`)."""

    code = "illegal_transition"

    def __init__(self, current: ReferralStatus, wanted: ReferralStatus) -> None:
        allowed = TRANSITIONS[current]
        if allowed:
            en_next = ", ".join(s.value for s in allowed)
            zh_next = "、".join(s.label_zh for s in allowed)
            tail_en, tail_zh = f"; from there only: {en_next}", f"；只能改为：{zh_next}"
        else:
            tail_en, tail_zh = f"; {current.value} is final", f"；“{current.label_zh}”为最终状态"
        super().__init__(
            f"a referral that is {current.value} cannot become {wanted.value}{tail_en}",
            f"转诊状态不能从“{current.label_zh}”改为“{wanted.label_zh}”{tail_zh}")
        self.current = current
        self.wanted = wanted


class ReasonRequired(ReferralError):
    code = "reason_required"

    def __init__(self, wanted: ReferralStatus) -> None:
        super().__init__(f"a referral is {wanted.value} only with a reason (the note)",
                         f"“{wanted.label_zh}”必须填写原因（备注）")
        self.wanted = wanted


class InvalidPatient(ReferralError):
    """The patient's essentials (or a note) are not acceptable; `field` names which."""

    code = "invalid_patient"

    def __init__(self, field_name: str, message: str, message_zh: str) -> None:
        super().__init__(f"{field_name}: {message}", f"{message_zh}")
        self.field = field_name


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Patient:
    """The patient's essentials (患者基本信息); build one with `patient()` to have it checked."""

    age: int | None = None  # years; None: unknown
    sex: Sex = Sex.UNKNOWN
    injury: str = ""  # what happened, one line
    injured_at: datetime | None = None  # aware; None: unknown


@dataclass(frozen=True)
class ReferralEvent:
    """One status change: when, to what, by whom, and the note."""

    at: datetime
    status: ReferralStatus
    actor: str
    note: str = ""


@dataclass(frozen=True)
class Referral:
    """A case that became a referral. `version` counts changes (1 when made)."""

    id: int | None
    case_id: str
    hospital_id: int | None
    status: ReferralStatus
    team: str | None
    surgeon_id: int | None  # the receiving surgeon, once known
    patient: Patient
    created_at: datetime
    updated_at: datetime
    version: int = 1
    events: tuple[ReferralEvent, ...] = field(default=())

    @property
    def open(self) -> bool:
        return not self.status.final

    def next_statuses(self) -> tuple[ReferralStatus, ...]:
        return TRANSITIONS[self.status]


@dataclass(frozen=True)
class Change:
    """What a transition decided: the referral after it, and the event to record."""

    referral: Referral
    event: ReferralEvent


# --------------------------------------------------------------------------- checks


def parse_status(value: object) -> ReferralStatus:
    """A status from its code (`en_route`); anything else raises UnknownStatus."""
    if isinstance(value, ReferralStatus):
        return value
    if isinstance(value, str):
        try:
            return ReferralStatus(value)
        except ValueError:
            pass
    shown = repr(value)[:40]
    codes = ", ".join(s.value for s in S)
    raise UnknownStatus(f"unknown referral status {shown}; one of {codes}",
                        f"未知的转诊状态 {shown}")


def parse_sex(value: object) -> Sex:
    if isinstance(value, Sex):
        return value
    if value is None or value == "":
        return Sex.UNKNOWN
    if isinstance(value, str):
        try:
            return Sex(value)
        except ValueError:
            pass
    raise InvalidPatient("sex", "male, female or unknown", "性别：男、女或不详")


def _aware(at: datetime, what: str) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} needs a timezone-aware datetime")
    return at


def clean_text(value: object, field_name: str, limit: int, *, lines: bool = False) -> str:
    """`value` trimmed; refused if longer than `limit` or if it holds control characters.

    `lines`: plain line breaks are allowed (CR LF and CR become LF). Control,
    format (bidi), surrogate, private-use, unassigned and line/paragraph
    separator characters are refused, not removed: what was typed is either
    kept as it is or not at all.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidPatient(field_name, "must be text", "必须是文本")
    text = value.replace("\r\n", "\n").replace("\r", "\n") if lines else value
    text = text.strip()
    if len(text) > limit:
        raise InvalidPatient(field_name, f"at most {limit} characters",
                             f"最多 {limit} 个字符")
    for ch in text:
        if lines and ch == "\n":
            continue
        if unicodedata.category(ch) in _UNSAFE:
            raise InvalidPatient(field_name, "control characters are not allowed",
                                 "不能包含控制字符")
    return text


def patient(*, age: object = None, sex: object = None, injury: object = "",
            injured_at: datetime | None = None, now: datetime) -> Patient:
    """The essentials, checked; raises InvalidPatient naming the first bad field.

    age: 0..120 whole years, or None (unknown). sex: male/female/unknown (None
    or "" is unknown). injury: trimmed, at most 500 characters, no control
    characters. injured_at: aware, not after `now` + CLOCK_SKEW and not more
    than OLDEST_INJURY before `now`; None is unknown.
    """
    _aware(now, "patient(now)")
    if age is not None:
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_AGE:
            raise InvalidPatient("age", f"whole years from 0 to {MAX_AGE}, or unknown",
                                 f"年龄：0–{MAX_AGE} 岁的整数，或不详")
    checked_sex = parse_sex(sex)
    text = clean_text(injury, "injury", MAX_INJURY)
    if injured_at is not None:
        if not isinstance(injured_at, datetime) or injured_at.tzinfo is None \
                or injured_at.utcoffset() is None:
            raise InvalidPatient("injured_at", "needs a time zone", "受伤时间必须带时区")
        if injured_at > now + CLOCK_SKEW:
            raise InvalidPatient("injured_at", "lies in the future", "受伤时间不能晚于当前时间")
        if injured_at < now - OLDEST_INJURY:
            raise InvalidPatient("injured_at", "lies more than a year back; check the year",
                                 "受伤时间早于一年前，请检查年份")
    return Patient(age, checked_sex, text, injured_at)


def note_text(note: object) -> str:
    """A status change's note, checked (at most MAX_NOTE characters, line breaks allowed)."""
    return clean_text(note, "note", MAX_NOTE, lines=True)


# --------------------------------------------------------------------------- transitions


def new_referral(*, case_id: str, hospital_id: int | None, team: str | None,
                 surgeon_id: int | None, patient: Patient, at: datetime, actor: str,
                 note: str = "") -> Change:
    """A referral made from a case: `requested`, version 1, with its first event."""
    _aware(at, "new_referral(at)")
    event = ReferralEvent(at, S.REQUESTED, actor, note_text(note))
    referral = Referral(None, case_id, hospital_id, S.REQUESTED, team, surgeon_id, patient,
                        at, at, 1, (event,))
    return Change(referral, event)


def transition(referral: Referral, to: ReferralStatus | str, *, at: datetime, actor: str,
               note: str = "", by_surgeon: int | None = None) -> Change:
    """`referral` moved to `to`: the new referral (version + 1) and the event to record.

    Raises IllegalTransition for a change the state machine does not allow
    (including to the same status), ReasonRequired for a decline or a
    cancellation without a note, InvalidPatient for a bad note.
    `by_surgeon`: the surgeon acting, if one; accepting a referral that has
    no receiving surgeon makes them its receiving surgeon.
    """
    _aware(at, "transition(at)")
    wanted = parse_status(to)
    if wanted not in TRANSITIONS[referral.status]:
        raise IllegalTransition(referral.status, wanted)
    text = note_text(note)
    if wanted in REASON_NEEDED and not text:
        raise ReasonRequired(wanted)
    surgeon = referral.surgeon_id
    if wanted is S.ACCEPTED and surgeon is None and by_surgeon is not None:
        surgeon = by_surgeon
    event = ReferralEvent(at, wanted, actor, text)
    after = replace(referral, status=wanted, surgeon_id=surgeon, updated_at=at,
                    version=referral.version + 1, events=(*referral.events, event))
    return Change(after, event)


# --------------------------------------------------------------------------- time since injury


def since_injury(referral: Referral, now: datetime) -> timedelta | None:
    """How long since the injury, or None if its time is unknown.

    A time of injury slightly ahead of `now` (clock skew) counts as zero.
    """
    _aware(now, "since_injury(now)")
    at = referral.patient.injured_at
    if at is None:
        return None
    return max(timedelta(0), now - at)


class Part(str, enum.Enum):
    """What was amputated, as far as the injury text says (it decides the ischaemia limit)."""

    DIGIT = "digit"  # fingers, thumb, toes: no muscle
    LIMB = "limb"  # hand, forearm, arm, foot, leg: muscle, which dies first
    UNKNOWN = "unknown"  # the text does not say: treated as a limb (the stricter limit)


class Urgency(str, enum.Enum):
    NONE = "none"  # not a replantation, time unknown, or the referral is closed
    OK = "ok"  # well within the warm ischaemia limit
    URGENT = "urgent"  # past half of it
    CRITICAL = "critical"  # the last hour or two
    BEYOND = "beyond"  # past the warm limit: only a cooled part may still be replanted


# Warm ischaemia rules of thumb for replantation (Green's Operative Hand Surgery;
# e.g. Sharma et al., "Replantation", and the usual teaching): a part with muscle
# (a major limb: proximal to the wrist or ankle, or a hand through the palm) is
# replanted within about 6 h of warm ischaemia (about 12 h if cooled); a digit
# has no muscle and tolerates about 12 h warm (about 24 h cooled). We do not
# know whether the part was cooled, so the warm limits apply: the console would
# rather warn early than late. (urgent from, critical from, beyond from):
ISCHAEMIA_HOURS: dict[Part, tuple[float, float, float]] = {
    Part.DIGIT: (6.0, 10.0, 12.0),
    Part.LIMB: (3.0, 5.0, 6.0),
}
ISCHAEMIA_HOURS[Part.UNKNOWN] = ISCHAEMIA_HOURS[Part.LIMB]
REPLANT_TEAMS = frozenset({"replant"})
# Words that make a referral a replantation whatever its team, and that say
# which part. Chinese words are matched anywhere, English ones as whole words
# ("farm" is not an arm). A limb word wins over a digit word ("手掌及手指离断"
# is a hand), because a limb's limit is the stricter one.
AMPUTATION_RE = re.compile(r"离断|断指|断肢|断掌|断腕|断臂|再植|\b(?:amputat\w*|replant\w*|severed)\b",
                           re.IGNORECASE)
LIMB_RE = re.compile(r"断肢|肢体|上肢|下肢|手掌|断掌|腕|前臂|上臂|断臂|肘|小腿|大腿|踝|足部|全手"
                     r"|\b(?:limbs?|hands?|palms?|wrists?|forearms?|arms?|elbows?|legs?|ankles?"
                     r"|foot|feet)\b", re.IGNORECASE)
DIGIT_RE = re.compile(r"指|拇|趾|\b(?:fingers?|thumbs?|digits?|toes?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Ischaemia:
    """Time since injury and how urgent that is for a replantation."""

    elapsed: timedelta | None
    part: Part
    urgency: Urgency
    limit: timedelta | None  # the warm ischaemia limit applied (None: not a replantation)


def replant_part(injury: str) -> Part:
    """Which part the injury text names: a limb word first, then a digit word, else unknown."""
    if LIMB_RE.search(injury):
        return Part.LIMB
    if DIGIT_RE.search(injury):
        return Part.DIGIT
    return Part.UNKNOWN


def is_replantation(referral: Referral, replant_teams: frozenset[str] = REPLANT_TEAMS) -> bool:
    """A referral to the replantation team, or one whose injury says amputation."""
    if referral.team in replant_teams:
        return True
    return AMPUTATION_RE.search(referral.patient.injury) is not None


def ischaemia(referral: Referral, now: datetime, *,
              replant_teams: frozenset[str] = REPLANT_TEAMS) -> Ischaemia:
    """The elapsed time since injury and its urgency (ISCHAEMIA_HOURS) at `now`.

    Urgency is NONE for a referral that is not a replantation, whose time of
    injury is unknown, or that is closed (declined, admitted, cancelled: the
    race is then the operating team's, not the network's).
    """
    elapsed = since_injury(referral, now)
    if not is_replantation(referral, replant_teams):
        return Ischaemia(elapsed, Part.UNKNOWN, Urgency.NONE, None)
    part = replant_part(referral.patient.injury)
    urgent, critical, beyond = (timedelta(hours=h) for h in ISCHAEMIA_HOURS[part])
    if elapsed is None or not referral.open:
        return Ischaemia(elapsed, part, Urgency.NONE, beyond)
    if elapsed >= beyond:
        level = Urgency.BEYOND
    elif elapsed >= critical:
        level = Urgency.CRITICAL
    elif elapsed >= urgent:
        level = Urgency.URGENT
    else:
        level = Urgency.OK
    return Ischaemia(elapsed, part, level, beyond)


def elapsed_words(elapsed: timedelta | None) -> tuple[str, str]:
    """('2小时05分', '2 h 05 min') for an elapsed time, ('', '') for None; minutes cut, not rounded."""
    if elapsed is None:
        return "", ""
    minutes = int(elapsed.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    if hours >= 48:
        days, hours = divmod(hours, 24)
        return f"{days}天{hours}小时", f"{days} d {hours} h"
    return f"{hours}小时{rest:02d}分", f"{hours} h {rest:02d} min"
