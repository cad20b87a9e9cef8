"""Who of a team is on call at a given moment. Pure: the time is an argument."""
from __future__ import annotations

from datetime import datetime

from oncall import rotation
from oncall.model import OnCall, Roster


def on_call(roster: Roster, team_code: str, at: datetime) -> list[OnCall]:
    """The team's members whose shift covers `at`, in ring order.

    Order: role ring order, then shift start, then surgeon id. A surgeon holding
    several covering shifts appears once, in the highest-priority role. A shift
    whose surgeon is missing from the roster is skipped rather than failing a
    live call. Unknown team -> `[]`. A naive `at` raises ValueError. A roster
    with rotations, overrides or leave is answered by `oncall.rotation.on_call`.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("on_call needs a timezone-aware time")
    if roster.rotations or roster.overrides or roster.leave:
        # Rotations, overrides and leave (issue 4): the same contract, see
        # oncall.rotation. A roster of plain shifts keeps the loop below.
        return rotation.on_call(roster, team_code, at)
    if team_code not in roster.teams:
        return []
    best: dict[int, OnCall] = {}
    for shift in roster.shifts_of(team_code):
        if not shift.start <= at < shift.end:
            continue
        surgeon = roster.surgeons.get(shift.surgeon_id)
        if surgeon is None:
            continue
        candidate = OnCall(surgeon=surgeon, role=shift.role, shift=shift)
        held = best.get(surgeon.id)
        if held is None or _rank(candidate) < _rank(held):
            best[surgeon.id] = candidate
    return sorted(best.values(), key=_rank)


def _rank(member: OnCall) -> tuple[int, datetime, int]:
    return (member.role.ring_order, member.shift.start, member.surgeon.id)
