"""Swaps and give-aways (换班 / 顶班) as pure operations on a roster snapshot.

Each operation takes a roster and returns `Change(roster, audit)`: a new roster
and one `AuditEntry(who, when, action, before, after)`; the old roster is
untouched. Nothing reads a clock: `at` is when the person acted.

A trade's states::

    request_swap / offer_shift -> requested --take--> taken --approve--> approved
                                      |                 `----decline--> declined
                                      `--decline--> declined
    take, in a team without `requires_approval`: requested -> approved at once

- A give-away (`offer_shift`) may be taken by any other surgeon; a swap
  (`request_swap`) only by the surgeon it names.
- Only the team's department head approves or declines a taken trade:
  `Team.department_head` if set, else whoever is on call as department_head
  for that team at the moment of the decision. A requested swap may also be
  declined by the surgeon it names.
- Nobody takes their own trade, nor time that overlaps their own on-call in
  another team, nor time they are on leave.
- Approval writes covers (`Override(replaces=...)`) at the end of
  `Roster.overrides`, so they win over everything made before; they start at
  the approval instant at the earliest (an approval never rewrites the past).
- "Holds" means scheduled: time emptied by the surgeon's own leave can still
  be given away (that is how a leave gets covered).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from oncall.model import Role, Roster
from oncall.rotation import Override, expand_between

UTC = timezone.utc


class TradeKind(str, enum.Enum):
    SWAP = "swap"  # 换班: two surgeons exchange time
    GIVE_AWAY = "give_away"  # 顶班: a surgeon's time, to whoever takes it


class TradeStatus(str, enum.Enum):
    REQUESTED = "requested"
    TAKEN = "taken"
    APPROVED = "approved"
    DECLINED = "declined"


OPEN = (TradeStatus.REQUESTED, TradeStatus.TAKEN)


@dataclass(frozen=True)
class Trade:
    """One swap or give-away and where it stands.

    The requester's time is `role` of `team` over [start, end). A swap also
    names `counterpart` and their time (`counter_role`, [counter_start,
    counter_end)) in the same team. `decided_by` is None on an approved trade
    when it was auto-approved. `overrides` is what approval added to the roster.
    """

    id: int
    kind: TradeKind
    team: str
    requester: int
    role: Role
    start: datetime
    end: datetime
    requested_at: datetime
    status: TradeStatus = TradeStatus.REQUESTED
    counterpart: int | None = None
    counter_role: Role | None = None
    counter_start: datetime | None = None
    counter_end: datetime | None = None
    taker: int | None = None
    decided_by: int | None = None
    decided_at: datetime | None = None
    overrides: tuple[Override, ...] = ()
    note: str = ""


class AuditAction(str, enum.Enum):
    REQUEST_SWAP = "request_swap"
    OFFER_SHIFT = "offer_shift"
    TAKE = "take"
    APPROVE = "approve"
    DECLINE = "decline"


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which trade, when; `before` is None for a new trade."""

    who: int
    when: datetime
    action: AuditAction
    before: Trade | None
    after: Trade

    @property
    def trade_id(self) -> int:
        return self.after.id


class Change(NamedTuple):
    roster: Roster
    audit: AuditEntry


# --------------------------------------------------------------------------- errors


class RosterOpError(ValueError):
    """A swap / cover operation refused; the roster is unchanged."""


class UnknownTeam(RosterOpError):
    pass


class UnknownSurgeon(RosterOpError):
    pass


class UnknownTrade(RosterOpError):
    pass


class InvalidTransition(RosterOpError):
    """The trade's state does not allow the operation (e.g. approving a requested trade)."""


class NotHeld(RosterOpError):
    """The surgeon is not scheduled in that role over the whole time (or no longer is)."""


class Expired(RosterOpError):
    """The traded time is already over."""


class NotAllowed(RosterOpError):
    """The wrong person for this step."""


class OwnTrade(NotAllowed):
    """A surgeon cannot take their own offer or swap."""


class NotCounterpart(NotAllowed):
    """Only the surgeon a swap names may take or decline it."""


class NotDepartmentHead(NotAllowed):
    """Only the team's department head approves or declines a taken trade."""


class Conflict(RosterOpError):
    """The change would clash with other time."""


class OnCallElsewhere(Conflict):
    """The taker is on call in another team for part of that time."""


class OnLeave(Conflict):
    """The taker is on leave for part of that time."""


class AlreadyOffered(Conflict):
    """An open trade of the same surgeon already covers part of that time."""


# --------------------------------------------------------------------------- operations


def offer_shift(roster: Roster, *, by: int, team: str, role: Role, start: datetime,
                end: datetime, at: datetime, note: str = "") -> Change:
    """`by` offers their `role` of `team` over [start, end) to anyone (give-away)."""
    role = Role(role)
    _check_times(at, start, end)
    _known(roster, team=team, surgeons=(by,))
    _not_over(end, at)
    _require_held(roster, by, team, role, start, end)
    _not_offered_twice(roster, by, team, role, start, end)
    trade = Trade(_next_id(roster), TradeKind.GIVE_AWAY, team, by, role, start, end, at, note=note)
    return _commit(roster, by, at, AuditAction.OFFER_SHIFT, None, trade)


def request_swap(roster: Roster, *, by: int, team: str, role: Role, start: datetime,
                 end: datetime, with_surgeon: int, their_start: datetime, their_end: datetime,
                 at: datetime, their_role: Role | None = None, note: str = "") -> Change:
    """`by` asks `with_surgeon` to exchange `by`'s [start, end) for theirs, in one team.

    `their_role` defaults to `role`.
    """
    role = Role(role)
    their_role = role if their_role is None else Role(their_role)
    _check_times(at, start, end)
    _check_times(at, their_start, their_end)
    _known(roster, team=team, surgeons=(by, with_surgeon))
    if with_surgeon == by:
        raise OwnTrade("a surgeon cannot swap with themselves")
    _not_over(end, at)
    _not_over(their_end, at)
    if role == their_role and _overlap(start, end, their_start, their_end):
        raise Conflict("the two shifts of a swap overlap")
    _require_held(roster, by, team, role, start, end)
    _require_held(roster, with_surgeon, team, their_role, their_start, their_end)
    _not_offered_twice(roster, by, team, role, start, end)
    trade = Trade(_next_id(roster), TradeKind.SWAP, team, by, role, start, end, at,
                  counterpart=with_surgeon, counter_role=their_role,
                  counter_start=their_start, counter_end=their_end, note=note)
    return _commit(roster, by, at, AuditAction.REQUEST_SWAP, None, trade)


def take(roster: Roster, trade_id: int, *, by: int, at: datetime) -> Change:
    """`by` takes a requested trade: it becomes taken, or approved if the team needs no approval."""
    _check_at(at)
    trade = _trade(roster, trade_id)
    _known(roster, team=trade.team, surgeons=(by,))
    if trade.status is not TradeStatus.REQUESTED:
        raise InvalidTransition(f"trade {trade.id} is {trade.status.value}, not requested")
    if by == trade.requester:
        raise OwnTrade("a surgeon cannot take their own offer")
    if trade.kind is TradeKind.SWAP and by != trade.counterpart:
        raise NotCounterpart(f"trade {trade.id} is a swap with surgeon {trade.counterpart}")
    taken = replace(trade, status=TradeStatus.TAKEN, taker=by)
    _still_valid(roster, taken, at)
    if roster.teams[trade.team].requires_approval:
        return _commit(roster, by, at, AuditAction.TAKE, trade, taken)
    approved, overrides = _approved(taken, by=None, at=at)
    return _commit(roster, by, at, AuditAction.TAKE, trade, approved, overrides)


def approve(roster: Roster, trade_id: int, *, by: int, at: datetime) -> Change:
    """The team's department head approves a taken trade; the covers go into the roster."""
    _check_at(at)
    trade = _trade(roster, trade_id)
    _known(roster, team=trade.team, surgeons=(by,))
    if trade.status is not TradeStatus.TAKEN:
        raise InvalidTransition(f"trade {trade.id} is {trade.status.value}, not taken")
    _require_head(roster, trade.team, by, at)
    _still_valid(roster, trade, at)
    approved, overrides = _approved(trade, by=by, at=at)
    return _commit(roster, by, at, AuditAction.APPROVE, trade, approved, overrides)


def decline(roster: Roster, trade_id: int, *, by: int, at: datetime, note: str = "") -> Change:
    """The department head declines an open trade; the named surgeon may decline a requested swap."""
    _check_at(at)
    trade = _trade(roster, trade_id)
    _known(roster, team=trade.team, surgeons=(by,))
    if trade.status not in OPEN:
        raise InvalidTransition(f"trade {trade.id} is {trade.status.value}, not open")
    named = (trade.kind is TradeKind.SWAP and trade.status is TradeStatus.REQUESTED
             and by == trade.counterpart)
    if not named:
        _require_head(roster, trade.team, by, at)
    declined = replace(trade, status=TradeStatus.DECLINED, decided_by=by, decided_at=at,
                       note=note or trade.note)
    return _commit(roster, by, at, AuditAction.DECLINE, trade, declined)


def department_heads(roster: Roster, team: str, at: datetime) -> frozenset[int]:
    """Who may approve for `team` at `at`: `Team.department_head`, else the on-call one(s)."""
    _check_at(at)
    config = roster.teams.get(team)
    if config is None:
        return frozenset()
    if config.department_head is not None:
        return frozenset({config.department_head})
    held = expand_between(roster, team, at, at + timedelta(microseconds=1)).held
    return frozenset(p.surgeon_id for p in held if p.role is Role.DEPARTMENT_HEAD)


# --------------------------------------------------------------------------- helpers


def _check_at(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the time of an operation must be timezone-aware")


def _check_times(at: datetime, start: datetime, end: datetime) -> None:
    _check_at(at)
    for t in (start, end):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("shift times must be timezone-aware")
    if not _utc(start) < _utc(end):
        raise ValueError("a shift must end after it starts")


def _known(roster: Roster, *, team: str, surgeons: tuple[int, ...]) -> None:
    if team not in roster.teams:
        raise UnknownTeam(f"no team {team!r}")
    for sid in surgeons:
        if sid not in roster.surgeons:
            raise UnknownSurgeon(f"no surgeon {sid}")


def _trade(roster: Roster, trade_id: int):
    for trade in roster.trades:
        if trade.id == trade_id:
            return trade
    raise UnknownTrade(f"no trade {trade_id}")


def _next_id(roster: Roster) -> int:
    return max((t.id for t in roster.trades), default=0) + 1


def _utc(dt: datetime) -> datetime:
    # Same-zone datetimes compare by wall time (wrong across a fall-back hour).
    return dt.astimezone(UTC)


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> bool:
    return _utc(a0) < _utc(b1) and _utc(b0) < _utc(a1)


def _not_before(start: datetime, at: datetime) -> datetime:
    return start if _utc(start) >= _utc(at) else at


def _not_over(end: datetime, at: datetime) -> None:
    if _utc(end) <= _utc(at):
        raise Expired("that time is already over")


def _covered(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> bool:
    reach = _utc(start)
    for lo, hi in sorted((_utc(lo), _utc(hi)) for lo, hi in intervals):
        if lo > reach:
            return False
        reach = max(reach, hi)
    return reach >= _utc(end)


def _require_held(roster: Roster, surgeon: int, team: str, role: Role,
                  start: datetime, end: datetime) -> None:
    held, vacated = expand_between(roster, team, start, end)
    mine = [(p.start, p.end) for p in held + vacated if p.surgeon_id == surgeon and p.role is role]
    if not _covered(mine, start, end):
        raise NotHeld(f"surgeon {surgeon} is not {role.value} of {team} over all of "
                      f"{start.isoformat()}..{end.isoformat()}")


def _require_free(roster: Roster, surgeon: int, team: str, start: datetime, end: datetime) -> None:
    """`surgeon` may take `team`'s time [start, end): not on call elsewhere, not on leave."""
    for leave in roster.leave:
        if leave.surgeon_id == surgeon and _overlap(leave.start, leave.end, start, end):
            raise OnLeave(f"surgeon {surgeon} is on leave {leave.start.isoformat()}.."
                          f"{leave.end.isoformat()}")
    for other in roster.teams:
        if other == team:
            continue
        for piece in expand_between(roster, other, start, end).held:
            if piece.surgeon_id == surgeon:
                raise OnCallElsewhere(
                    f"surgeon {surgeon} is {piece.role.value} of {other} "
                    f"{piece.start.isoformat()}..{piece.end.isoformat()}")


def _not_offered_twice(roster: Roster, surgeon: int, team: str, role: Role,
                       start: datetime, end: datetime) -> None:
    for t in roster.trades:
        if (t.status in OPEN and t.requester == surgeon and t.team == team and t.role is role
                and _overlap(t.start, t.end, start, end)):
            raise AlreadyOffered(f"trade {t.id} already offers part of that time")


def _still_valid(roster: Roster, trade: Trade, at: datetime) -> None:
    """What must hold when a trade is taken and again when it is approved."""
    taker = trade.taker
    assert taker is not None
    _not_over(trade.end, at)
    _require_held(roster, trade.requester, trade.team, trade.role, trade.start, trade.end)
    _require_free(roster, taker, trade.team, trade.start, trade.end)
    if trade.kind is TradeKind.SWAP:
        assert trade.counter_start and trade.counter_end and trade.counter_role
        _not_over(trade.counter_end, at)
        _require_held(roster, taker, trade.team, trade.counter_role,
                      trade.counter_start, trade.counter_end)
        _require_free(roster, trade.requester, trade.team, trade.counter_start, trade.counter_end)


def _require_head(roster: Roster, team: str, by: int, at: datetime) -> None:
    if by not in department_heads(roster, team, at):
        raise NotDepartmentHead(f"surgeon {by} is not the department head of {team}")


def _approved(trade: Trade, *, by: int | None, at: datetime) -> tuple[Trade, tuple[Override, ...]]:
    taker = trade.taker
    assert taker is not None
    covers = [Override(trade.team, trade.role, taker, _not_before(trade.start, at), trade.end,
                       replaces=trade.requester, note=f"trade {trade.id}")]
    if trade.kind is TradeKind.SWAP:
        assert trade.counter_start and trade.counter_end and trade.counter_role
        covers.append(Override(trade.team, trade.counter_role, trade.requester,
                               _not_before(trade.counter_start, at), trade.counter_end,
                               replaces=taker, note=f"trade {trade.id}"))
    overrides = tuple(covers)
    return replace(trade, status=TradeStatus.APPROVED, decided_by=by, decided_at=at,
                   overrides=overrides), overrides


def _commit(roster: Roster, who: int, at: datetime, action: AuditAction, before: Trade | None,
            after: Trade, overrides: tuple[Override, ...] = ()) -> Change:
    if before is None:
        trades = roster.trades + (after,)
    else:
        trades = tuple(after if t.id == after.id else t for t in roster.trades)
    new = replace(roster, trades=trades, overrides=roster.overrides + overrides)
    return Change(new, AuditEntry(who, at, action, before, after))
