"""The major-incident queue: who waits ahead of whom, and whose phones ring.

Pure. Asterisk's app_queue is the engine (dialplans/templates/queues.conf.j2);
this module decides the values the dialplan hands it and states app_queue's
ordering rule as a function, so the rule can be tested and explained.

Priority (app_queue's QUEUE_PRIO, higher waits ahead):
- a partner hospital's registered number: PARTNER_PRIO -- a doctor with a
  patient on the table, the network's reason to exist;
- everyone else -- the public, anonymous callers and callers whose ID is not a
  number -- PUBLIC_PRIO. An anonymous caller is not put behind the public: a
  withheld number is often a hospital switchboard or a phone at the roadside,
  and nothing about an ID that cannot be verified makes the caller less urgent.
Within one priority, first come first served.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Hashable, Iterable, Sequence

from oncall.lookup import on_call
from oncall.model import Roster
from routing.callers import CallerClass

PARTNER_PRIO = 10
PUBLIC_PRIO = 0
PRIORITY = {
    CallerClass.PARTNER: PARTNER_PRIO,
    CallerClass.PUBLIC: PUBLIC_PRIO,
    CallerClass.ANONYMOUS: PUBLIC_PRIO,
    CallerClass.INVALID: PUBLIC_PRIO,
}
QUEUE_PREFIX = "hotline-"
MEMBER_CONTEXT = "hotline-queue-member"
_TEAM = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
_PHONE = re.compile(r"[0-9]{3,20}", re.ASCII)
_INTERFACE = re.compile(rf"Local/([0-9]{{3,20}})@{MEMBER_CONTEXT}/n", re.ASCII)


def queue_priority(caller_class: CallerClass) -> int:
    """The QUEUE_PRIO of a caller of this class."""
    return PRIORITY[CallerClass(caller_class)]


def queue_name(team: str) -> str:
    """The app_queue queue of a team: `hotline-<team>` (one per team in queues.conf)."""
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        raise ValueError(f"not a team code: {team!r}"[:60])
    return QUEUE_PREFIX + team


def member_interface(phone: str) -> str:
    """The queue member interface of a surgeon's phone: a Local channel into the
    member context, which rings the phone with the press-1 whisper (`/n`: the
    Local channel is never optimised away, so its dialplan sees the whole call)."""
    if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
        raise ValueError(f"not a phone number: {phone!r}"[:60])
    return f"Local/{phone}@{MEMBER_CONTEXT}/n"


def member_phone(interface: str) -> str | None:
    """The phone of a member interface of ours; None for anything else."""
    m = _INTERFACE.fullmatch(interface or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class Member:
    interface: str
    surgeon_id: int
    name: str
    phone: str
    role: str


def queue_members(roster: Roster, team: str, at: datetime) -> dict[str, Member]:
    """Every surgeon on call for `team` at `at`, all roles, by member interface.

    In major-incident mode they all ring at once (strategy ringall). A phone
    held by two on-call surgeons (a shared handset) is one member, the first in
    ring order.
    """
    members: dict[str, Member] = {}
    for oc in on_call(roster, team, at):
        phone = oc.surgeon.phone
        if not _PHONE.fullmatch(phone or ""):
            continue  # a bad phone in the roster cannot be rung; roster checks report it
        interface = member_interface(phone)
        members.setdefault(interface, Member(interface, oc.surgeon.id, oc.surgeon.name, phone,
                                             oc.role.value))
    return members


@dataclass(frozen=True)
class Waiting:
    """A caller in a queue: `priority` (QUEUE_PRIO) and when they joined."""

    key: Hashable
    priority: int
    joined: datetime


def join_position(waiting: Sequence[Waiting], priority: int) -> int:
    """Where (1-based) app_queue puts a caller of `priority` joining `waiting`.

    app_queue's rule (join_queue): the newcomer goes behind every caller of the
    same or a higher priority, ahead of every caller of a lower one. `waiting`
    is in queue order.
    """
    position = len(waiting) + 1
    for index, caller in enumerate(waiting):
        if caller.priority < priority:
            position = index + 1
            break
    return position


def queue_order(callers: Iterable[Waiting]) -> list[Waiting]:
    """The order a queue serves `callers` in: higher priority first, then the
    earlier arrival (ties on the same instant keep the given order)."""
    return sorted(callers, key=lambda c: (-c.priority, c.joined))


@dataclass(frozen=True)
class QueueSettings:
    """The app_queue timings rendered into queues.conf and the dialplan's Queue()."""

    max_wait_s: int = 180  # then the duty nurse, then voicemail
    # Per ring of the members: long enough for a phone to ring AND the surgeon
    # to hear the whisper and press 1 (the member is answered only then).
    member_ring_s: int = 45
    retry_s: int = 2  # pause before ringing every member again
    announce_every_s: int = 30  # the caller hears their place this often (and on joining)


QUEUE_SETTINGS = QueueSettings()
