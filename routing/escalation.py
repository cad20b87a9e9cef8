"""Escalation chains (呼叫升级顺序) as data, and the next step given what happened.

The chain is frozen when a call reaches a team: a roster change during the call
does not reshuffle whom the caller is waiting for.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Sequence, Union

from oncall.lookup import on_call
from oncall.model import Roster

AttemptKind = Literal["chain", "nurse"]
CHAIN: AttemptKind = "chain"
NURSE: AttemptKind = "nurse"


@dataclass(frozen=True)
class ChainStep:
    """Whom to ring and for how long; `surgeon_id` is None for a duty nurse line."""

    surgeon_id: int | None
    name: str
    phone: str
    role: str
    ring_s: int


@dataclass(frozen=True)
class EscalationChain:
    team: str
    steps: tuple[ChainStep, ...]
    repeats: int  # extra passes over `steps` before the duty nurse

    @property
    def max_dials(self) -> int:
        """Upper bound on the dials of one call, the duty nurse included."""
        return len(self.steps) * (1 + max(0, self.repeats)) + 1


class AttemptOutcome(str, enum.Enum):
    ACCEPTED = "accepted"  # the surgeon pressed 1
    DECLINED = "declined"  # the surgeon pressed 2
    NO_ANSWER = "no-answer"  # rang out, or answered without pressing 1 in time
    BUSY = "busy"
    FAILED = "failed"  # congestion, unreachable, bad number
    CANCELLED = "cancelled"  # the caller hung up while it rang


@dataclass(frozen=True)
class Attempt:
    """One ringing of one phone; `seq` is 1-based across passes and the nurse."""

    seq: int
    step: ChainStep
    kind: AttemptKind
    outcome: AttemptOutcome | None  # None: still ringing, or its end was lost


@dataclass(frozen=True)
class Dial:
    step: ChainStep
    kind: AttemptKind
    seq: int


@dataclass(frozen=True)
class Voicemail:
    pass


@dataclass(frozen=True)
class Stop:
    reason: str


Decision = Union[Dial, Voicemail, Stop]


def build_chain(roster: Roster, team_code: str, at: datetime) -> EscalationChain:
    """The team's on-call members at `at`, in ring order, as a chain.

    Unknown team -> an empty chain (which goes straight to the duty nurse).
    """
    team = roster.teams.get(team_code)
    if team is None:
        return EscalationChain(team=team_code, steps=(), repeats=0)
    steps = tuple(
        ChainStep(
            surgeon_id=member.surgeon.id,
            name=member.surgeon.name,
            phone=member.surgeon.phone,
            role=member.role.value,
            ring_s=team.ring_s,
        )
        for member in on_call(roster, team_code, at)
    )
    return EscalationChain(team=team_code, steps=steps, repeats=max(0, team.repeats))


def next_decision(
    chain: EscalationChain, attempts: Sequence[Attempt], nurse: ChainStep | None
) -> Decision:
    """What to do after `attempts`: ring the next phone, voicemail, or stop.

    The chain's steps in order, the whole chain `1 + repeats` times, then the
    duty nurse once, then voicemail. Any accepted attempt -> Stop("accepted").
    The position comes from counting attempts by kind, so the total number of
    dials never exceeds `chain.max_dials`. An attempt with no outcome counts as
    not accepted: the caller must not wait on a leg whose end was lost.
    """
    if any(a.outcome is AttemptOutcome.ACCEPTED for a in attempts):
        return Stop("accepted")
    seq = len(attempts) + 1
    chain_dials = sum(1 for a in attempts if a.kind == CHAIN)
    if chain.steps and chain_dials < len(chain.steps) * (1 + max(0, chain.repeats)):
        return Dial(step=chain.steps[chain_dials % len(chain.steps)], kind=CHAIN, seq=seq)
    if nurse is not None and not any(a.kind == NURSE for a in attempts):
        return Dial(step=nurse, kind=NURSE, seq=seq)
    return Voicemail()
