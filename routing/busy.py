"""Spreading simultaneous calls over a chain: surgeons already on a call go last."""
from __future__ import annotations

from routing.escalation import EscalationChain


def prefer_free(chain: EscalationChain, busy_phones: frozenset[str]) -> EscalationChain:
    """The same chain with the steps whose phone is busy (ringing or talking on
    another call) moved to the end, order otherwise kept.

    Two callers at once then reach two different surgeons when the chain has
    two; a busy surgeon is still rung after the free ones, never skipped.
    """
    if not busy_phones:
        return chain
    free = tuple(step for step in chain.steps if step.phone not in busy_phones)
    taken = tuple(step for step in chain.steps if step.phone in busy_phones)
    return EscalationChain(team=chain.team, steps=free + taken, repeats=chain.repeats)
