"""Roster value types. Pure data: no clock, no I/O.

Times are timezone-aware datetimes; a naive datetime is a programming error
and is rejected where it enters (see `Shift.__post_init__`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # value types of rotations and trades live next to their logic
    from oncall.roster_ops import Trade
    from oncall.rotation import Leave, Override, Rotation

HOTLINE_TZ = "Asia/Shanghai"


class Rank(str, enum.Enum):
    RESIDENT = "resident"
    ATTENDING = "attending"
    CHIEF = "chief"


class Role(str, enum.Enum):
    """A surgeon's role on a shift; the order of the members is the ring order."""

    PRIMARY = "primary"
    BACKUP = "backup"
    ATTENDING = "attending"
    DEPARTMENT_HEAD = "department_head"

    @property
    def ring_order(self) -> int:
        return _ROLE_ORDER[self]


_ROLE_ORDER = {Role.PRIMARY: 0, Role.BACKUP: 1, Role.ATTENDING: 2, Role.DEPARTMENT_HEAD: 3}


@dataclass(frozen=True)
class Team:
    """A specialty the menu routes to (专业组)."""

    code: str  # stable key used in config, dialplan, DB: "facial", "replant", ...
    name_zh: str
    name_en: str
    ring_s: int = 25  # default ring time per escalation step
    repeats: int = 1  # how many extra passes over the chain before the duty nurse
    tz: str = HOTLINE_TZ  # IANA zone; rotations hand off at this zone's wall time
    requires_approval: bool = False  # swaps and give-aways wait for the department head
    department_head: int | None = None  # surgeon id of the 科主任 who approves; None: whoever
    # is on call as department_head for the team when the decision is made


@dataclass(frozen=True)
class Surgeon:
    id: int
    name: str
    phone: str  # digits only, validated on the way in
    rank: Rank = Rank.ATTENDING


@dataclass(frozen=True)
class Shift:
    """One stretch of on-call time [start, end) for one surgeon in one role."""

    team: str
    surgeon_id: int
    role: Role
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("shift times must be timezone-aware")
        if not self.start < self.end:
            raise ValueError("a shift must end after it starts")


@dataclass(frozen=True)
class OnCall:
    surgeon: Surgeon
    role: Role
    shift: Shift


@dataclass(frozen=True)
class Roster:
    """A snapshot of teams, surgeons and shifts; the routing reads only this."""

    teams: Mapping[str, Team] = field(default_factory=dict)
    surgeons: Mapping[int, Surgeon] = field(default_factory=dict)
    shifts: tuple[Shift, ...] = ()
    # Issue 4 (see oncall.rotation / oncall.roster_ops); empty: the plain shift table.
    rotations: tuple[Rotation, ...] = ()
    overrides: tuple[Override, ...] = ()  # in creation order: a later one wins
    leave: tuple[Leave, ...] = ()
    trades: tuple[Trade, ...] = ()  # swap / give-away requests and their state

    def shifts_of(self, team_code: str) -> tuple[Shift, ...]:
        """The shifts of one team, in roster order; `()` for an unknown team."""
        return self._shifts_by_team.get(team_code, ())

    @cached_property
    def _shifts_by_team(self) -> Mapping[str, tuple[Shift, ...]]:
        # Built on first use, per snapshot: a lookup then costs O(that team's shifts).
        # cached_property writes the instance __dict__ directly, so `frozen` is kept.
        by_team: dict[str, list[Shift]] = {}
        for shift in self.shifts:
            by_team.setdefault(shift.team, []).append(shift)
        return {code: tuple(shifts) for code, shifts in by_team.items()}
