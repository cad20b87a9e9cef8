"""Rotations, overrides and leave, and who they put on call. Pure: time is an argument.

A team's on-call at an instant t is resolved in five steps, the same in the fast
`on_call` and in the expansion `shifts_between` (docs/interfaces.md, "rosters"):

1. Rotations: per role, of the team's rotations with a slot covering t only the
   highest `layer` counts (every rotation of that layer, if several). A slot
   whose surgeon is on leave still holds its layer: a lower layer does not show
   through, the slot is empty and reported.
2. One-off shifts (`Roster.shifts`) covering t are added next to the rotation
   holders; they neither hide a layer nor are hidden by one.
3. Overrides covering t, in creation order (their order in `Roster.overrides`):
   a role-wide override (`replaces=None`) makes its surgeon the only holder of
   that role; a cover (`replaces=A`) puts its surgeon where A holds that role
   and changes nothing where A does not. So a later-created override wins over
   an earlier one, and covers chain (B covers A, later C covers B -> C).
4. Leave: a surgeon on leave at t holds nothing, not even by an override; the
   emptied slot is listed by `vacancies_between` and reported by `oncall.checks`.
5. Surgeons missing from `Roster.surgeons` are dropped last (an override naming
   one still removes whom it replaces); `oncall.checks` reports them.

`on_call` then lists each surgeon once, in their highest-priority role, ordered
by role ring order, then the start of the slot / shift / override that put them
there, then surgeon id (the order of `oncall.lookup.on_call`).

Handoffs happen at the team's local wall time (`Team.tz`, Asia/Shanghai by
default) with zoneinfo, so in a zone with daylight saving the slot across the
change is 23 or 25 hours long (Europe/Berlin, handoff 08:00: Sat 08:00 CET ->
Sun 08:00 CEST is 23 h). A handoff time the clock skips (02:30 on the spring-
forward night) happens when the clock jumps (03:00 CEST); one the clock shows
twice (02:30 on the fall-back night) happens at its first showing (CEST).

Instants this module makes (slots, pieces) are UTC: Python compares two
datetimes of the *same* zone by wall time, which is wrong across a fall-back
hour, so everything here is compared in UTC; convert for display.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from oncall.model import HOTLINE_TZ, OnCall, Role, Roster, Shift, Team

UTC = timezone.utc
_DAY_S = 86400
_MAX_BUCKETS = 400  # an item longer than this many days is checked at every lookup instead


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class Rotation:
    """Ordered members taking turns in one role of one team (轮班).

    Slot k starts at handoff k and ends at handoff k + 1; its surgeon is
    `members[k % len(members)]`. Handoffs are at each of `handoff_times` (local
    wall time in the team's zone, whole minutes, increasing) on the first day
    of every `every_days`-day cycle counted from `start`:
    daily = (1 day, one time), weekly = (7 days, one time; the weekday of
    `start`), custom = anything else, e.g. every 3 days at 08:00, or day/night
    shifts with `handoff_times=(08:00, 20:00)`. The rotation begins at the first
    handoff on `start` and, if `until` is set, ends at `handoff_times[0]` on
    `until` (the last slot is cut there). A higher `layer` wins over a lower
    one for the same role while both have a slot.
    """

    team: str
    role: Role
    members: tuple[int, ...]
    start: date
    handoff_times: tuple[time, ...] = (time(8, 0),)
    every_days: int = 1
    layer: int = 0
    until: date | None = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "handoff_times", tuple(self.handoff_times))
        if not self.members:
            raise ValueError("a rotation needs at least one member")
        if isinstance(self.start, datetime) or (
                self.until is not None and isinstance(self.until, datetime)):
            raise ValueError("rotation start/until are local dates; the times are handoff_times")
        if not isinstance(self.every_days, int) or self.every_days < 1:
            raise ValueError("every_days must be a positive whole number")
        times = self.handoff_times
        if not times:
            raise ValueError("a rotation needs at least one handoff time")
        for t in times:
            if t.tzinfo is not None:
                raise ValueError("handoff times are local wall times, without a zone")
            if t.second or t.microsecond:
                raise ValueError("handoff times are whole minutes (HH:MM)")
        if any(a >= b for a, b in zip(times, times[1:])):
            raise ValueError("handoff times must be increasing")
        if self.until is not None and self.until <= self.start:
            raise ValueError("a rotation must end after it starts")

    @property
    def kind(self) -> str:
        """`daily`, `weekly` or `custom` (a name for people; the fields decide)."""
        if len(self.handoff_times) == 1 and self.every_days in (1, 7):
            return "daily" if self.every_days == 1 else "weekly"
        return "custom"

    @classmethod
    def daily(cls, team: str, role: Role, members: Sequence[int], start: date,
              at: time = time(8, 0), **kw) -> "Rotation":
        return cls(team, role, tuple(members), start, (at,), 1, **kw)

    @classmethod
    def weekly(cls, team: str, role: Role, members: Sequence[int], start: date,
               at: time = time(8, 0), **kw) -> "Rotation":
        return cls(team, role, tuple(members), start, (at,), 7, **kw)

    @classmethod
    def every(cls, days: int, team: str, role: Role, members: Sequence[int], start: date,
              at: time = time(8, 0), **kw) -> "Rotation":
        return cls(team, role, tuple(members), start, (at,), days, **kw)


def _check_interval(start: datetime, end: datetime, what: str) -> None:
    if start.tzinfo is None or start.utcoffset() is None or end.tzinfo is None or end.utcoffset() is None:
        raise ValueError(f"{what} times must be timezone-aware")
    if not _utc(start) < _utc(end):
        raise ValueError(f"{what} must end after it starts")


@dataclass(frozen=True)
class Override:
    """`surgeon_id` holds `role` of `team` over [start, end) (顶班 / 替班).

    `replaces=None`: the surgeon is the only holder of the role then. `replaces=A`:
    a cover for A only -- the surgeon stands where A holds the role, and the
    override does nothing where A does not. Among overlapping overrides the
    later-created (later in `Roster.overrides`) wins.
    """

    team: str
    role: Role
    surgeon_id: int
    start: datetime
    end: datetime
    replaces: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        _check_interval(self.start, self.end, "an override's")

    @cached_property
    def shift(self) -> Shift:
        """The override as a `Shift` (what `OnCall.shift` shows for it)."""
        return Shift(self.team, self.surgeon_id, self.role, self.start, self.end)


@dataclass(frozen=True)
class Leave:
    """The surgeon is unavailable over [start, end) (请假): never rung then."""

    surgeon_id: int
    start: datetime
    end: datetime
    note: str = ""

    def __post_init__(self) -> None:
        _check_interval(self.start, self.end, "a leave's")


class Source(str, enum.Enum):
    """What put a surgeon on call; the value also breaks exact ties in ring order."""

    ROTATION = "rotation"
    SHIFT = "shift"
    OVERRIDE = "override"


_SOURCE_ORDER = {Source.ROTATION: 0, Source.SHIFT: 1, Source.OVERRIDE: 2}


@dataclass(frozen=True)
class EffectiveShift:
    """A stretch [start, end) (UTC) in which `surgeon_id` holds `role` of `team`.

    `shift` is what put them there, uncut: the rotation slot, the one-off shift
    or the override (as a `Shift`); `origin` is its position in
    `Roster.rotations` / `.shifts` / `.overrides`. Pieces are maximal within
    that one source and cut to the asked window.
    """

    team: str
    surgeon_id: int
    role: Role
    start: datetime
    end: datetime
    source: Source
    shift: Shift
    origin: int

    @property
    def rank(self) -> tuple:
        """Ring-order key: role, source start, surgeon id, then source and origin."""
        return (self.role.ring_order, _utc(self.shift.start), self.surgeon_id,
                _SOURCE_ORDER[self.source], self.origin)


# --------------------------------------------------------------------------- local time


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _aware(at: datetime, what: str = "on_call") -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} needs a timezone-aware time")


def team_zone(team: Team) -> ZoneInfo:
    """The team's zone; an unknown zone name falls back to Asia/Shanghai.

    A live call must not fail on a typo in a team's settings; `oncall.checks`
    reports the bad name instead.
    """
    try:
        return ZoneInfo(team.tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return ZoneInfo(HOTLINE_TZ)


@lru_cache(maxsize=8192)  # pure; a day's handoffs are asked for again and again
def local_instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) at which `tz`'s clock on `day` shows `wall` or later.

    >>> berlin = ZoneInfo("Europe/Berlin")
    >>> local_instant(date(2026, 3, 29), time(2, 30), berlin).isoformat()  # skipped
    '2026-03-29T01:00:00+00:00'
    >>> local_instant(date(2026, 10, 25), time(2, 30), berlin).isoformat()  # shown twice
    '2026-10-25T00:30:00+00:00'
    """
    naive = datetime.combine(day, wall)
    aware = naive.replace(tzinfo=tz)  # fold=0: the first showing of a repeated time
    utc = aware.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == naive:
        return utc
    # Skipped by a spring-forward jump: fold=0 reads it with the offset before the
    # jump (an instant after it), fold=1 with the one after (an instant before it).
    # The jump lies between; transitions are at whole seconds.
    offset_after = utc.astimezone(tz).utcoffset()
    lo = int(aware.replace(fold=1).astimezone(UTC).timestamp())
    hi = int(utc.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


class Slot(NamedTuple):
    index: int
    surgeon_id: int
    start: datetime  # UTC
    end: datetime  # UTC


class RotationClock:
    """Slot arithmetic for one rotation in one zone: O(1) per lookup, no expansion."""

    def __init__(self, rotation: Rotation, tz: ZoneInfo):
        self.rotation = rotation
        self.tz = tz
        self._per_cycle = len(rotation.handoff_times)
        self.first = self.slot_start(0)
        self.until = (None if rotation.until is None
                      else local_instant(rotation.until, rotation.handoff_times[0], tz))

    def slot_start(self, k: int) -> datetime:
        """Handoff k (UTC); non-decreasing in k (equal when a jump swallows a slot)."""
        rotation = self.rotation
        cycle, j = divmod(k, self._per_cycle)
        day = rotation.start + timedelta(days=cycle * rotation.every_days)
        return local_instant(day, rotation.handoff_times[j], self.tz)

    def _slot(self, k: int, start: datetime, end: datetime) -> Slot:
        members = self.rotation.members
        if self.until is not None and end > self.until:
            end = self.until
        return Slot(k, members[k % len(members)], start, end)

    def slot_at(self, at: datetime) -> Slot | None:
        """The slot covering `at` (half-open), or None before the start / from `until` on."""
        if at < self.first or (self.until is not None and at >= self.until):
            return None
        rotation = self.rotation
        days = (at.astimezone(self.tz).date() - rotation.start).days
        # Every handoff of a later cycle is on a later local day, so after `at`:
        # start from the last handoff of this cycle and step back.
        k = (days // rotation.every_days) * self._per_cycle + self._per_cycle - 1
        start = self.slot_start(k)
        while start > at:
            k -= 1
            start = self.slot_start(k)
        end = self.slot_start(k + 1)
        while end <= at:  # not expected (a jump across midnight); kept for safety
            k, start = k + 1, end
            end = self.slot_start(k + 1)
        return self._slot(k, start, end)

    def slots_between(self, start: datetime, end: datetime) -> Iterator[Slot]:
        """The non-empty slots overlapping [start, end), in order, uncut by the window."""
        if start < self.first:
            k = 0
        else:
            first = self.slot_at(start)
            if first is None:
                return
            k = first.index
        slot_start = self.slot_start(k)
        while slot_start < end and (self.until is None or slot_start < self.until):
            slot_end = self.slot_start(k + 1)
            if slot_end > slot_start:
                yield self._slot(k, slot_start, slot_end)
            k, slot_start = k + 1, slot_end


# --------------------------------------------------------------------------- resolution


class _Hold(NamedTuple):
    rank: tuple
    surgeon_id: int
    role: Role
    source: Source
    shift: Shift
    origin: int


def _hold(surgeon_id: int, role: Role, source: Source, shift: Shift, origin: int) -> _Hold:
    rank = (role.ring_order, _utc(shift.start), surgeon_id, _SOURCE_ORDER[source], origin)
    return _Hold(rank, surgeon_id, role, source, shift, origin)


def _resolve(
    slots: Iterable[tuple[int, Rotation, Shift]],
    shifts: Iterable[tuple[int, Shift]],
    overrides: Iterable[tuple[int, Override]],
    on_leave: Callable[[int], bool],
) -> tuple[list[_Hold], list[_Hold]]:
    """Steps 1-4 at one instant, given the items covering it -> (holders, vacated).

    `overrides` must be in creation order.
    """
    slots = list(slots)
    top: dict[Role, int] = {}
    for _, rotation, _ in slots:
        if rotation.layer > top.get(rotation.role, rotation.layer - 1):
            top[rotation.role] = rotation.layer
    by_role: dict[Role, list[_Hold]] = {}
    for origin, rotation, slot in slots:
        if rotation.layer == top[rotation.role]:
            by_role.setdefault(rotation.role, []).append(
                _hold(slot.surgeon_id, rotation.role, Source.ROTATION, slot, origin))
    for origin, shift in shifts:
        by_role.setdefault(shift.role, []).append(
            _hold(shift.surgeon_id, shift.role, Source.SHIFT, shift, origin))
    for origin, override in overrides:
        cover = _hold(override.surgeon_id, override.role, Source.OVERRIDE, override.shift, origin)
        held = by_role.get(override.role, [])
        if override.replaces is None:
            by_role[override.role] = [cover]
        elif any(h.surgeon_id == override.replaces for h in held):
            by_role[override.role] = [h for h in held if h.surgeon_id != override.replaces] + [cover]
    holders: list[_Hold] = []
    vacated: list[_Hold] = []
    for held in by_role.values():
        for h in held:
            (vacated if on_leave(h.surgeon_id) else holders).append(h)
    return holders, vacated


def _chain(roster: Roster, holders: Iterable[_Hold]) -> list[OnCall]:
    """Step 5 and the ring order: known surgeons, once each, in their best role."""
    best: dict[int, _Hold] = {}
    for h in holders:
        if h.surgeon_id not in roster.surgeons:
            continue
        held = best.get(h.surgeon_id)
        if held is None or h.rank < held.rank:
            best[h.surgeon_id] = h
    return [OnCall(surgeon=roster.surgeons[h.surgeon_id], role=h.role, shift=h.shift)
            for h in sorted(best.values())]


def _covers(item, at: datetime) -> bool:
    return item.start <= at < item.end


# --------------------------------------------------------------------------- fast lookup


def _day(at: datetime) -> int:
    return int(at.timestamp() // _DAY_S)


class _Buckets:
    """Items with [start, end) by UTC day number, each list in roster order."""

    def __init__(self, items: Iterable[tuple[int, object]]):
        days: dict[int, list] = {}
        self.long: list = []
        for origin, item in items:
            first, last = _day(item.start), _day(item.end)  # type: ignore[attr-defined]
            if last - first > _MAX_BUCKETS:
                self.long.append((origin, item))
                continue
            for day in range(first, last + 1):
                days.setdefault(day, []).append((origin, item))
        self.days = {day: tuple(items) for day, items in days.items()}

    def at(self, at: datetime) -> list:
        found = [(o, i) for o, i in self.days.get(_day(at), ()) if _covers(i, at)]
        if self.long:
            found += [(o, i) for o, i in self.long if _covers(i, at)]
            found.sort(key=lambda pair: pair[0])
        return found


class _TeamIndex:
    """One team's rotations, shifts and overrides; bucketed on the team's first lookup.

    A routing decision touches one team, so it does not pay for bucketing every
    team of a big roster.
    """

    def __init__(self, code: str, tz: ZoneInfo):
        self.code = code
        self.tz = tz
        self.clocks: list[tuple[int, RotationClock]] = []
        self.shifts: list[tuple[int, Shift]] = []
        self.overrides: list[tuple[int, Override]] = []

    @cached_property
    def shift_buckets(self) -> _Buckets:
        return _Buckets(self.shifts)

    @cached_property
    def override_buckets(self) -> _Buckets:
        return _Buckets(self.overrides)


class _RosterIndex:
    def __init__(self, roster: Roster):
        teams = {code: _TeamIndex(code, team_zone(team)) for code, team in roster.teams.items()}
        self.teams = teams
        for origin, rotation in enumerate(roster.rotations):
            if rotation.team in teams:
                team = teams[rotation.team]
                team.clocks.append((origin, RotationClock(rotation, team.tz)))
        for origin, shift in enumerate(roster.shifts):
            if shift.team in teams:
                teams[shift.team].shifts.append((origin, shift))
        for origin, override in enumerate(roster.overrides):
            if override.team in teams:
                teams[override.team].overrides.append((origin, override))
        leave: dict[int, list[Leave]] = {}
        for item in roster.leave:
            leave.setdefault(item.surgeon_id, []).append(item)
        self.leave = {sid: tuple(items) for sid, items in leave.items()}

    def on_leave(self, at: datetime) -> Callable[[int], bool]:
        leave = self.leave
        return lambda sid: any(_covers(item, at) for item in leave.get(sid, ()))


_INDEX_KEY = "_oncall_rotation_index"


def _index(roster: Roster) -> _RosterIndex:
    # Built on first use per snapshot and kept in the instance __dict__ (as
    # Roster.shifts_of does with cached_property): a frozen roster never changes,
    # and a changed roster is a new instance with no index yet.
    index = roster.__dict__.get(_INDEX_KEY)
    if index is None:
        index = roster.__dict__[_INDEX_KEY] = _RosterIndex(roster)
    return index


def on_call(roster: Roster, team_code: str, at: datetime) -> list[OnCall]:
    """The team's members on call at `at`, rotations, overrides and leave honoured.

    Same contract as `oncall.lookup.on_call` (which calls this when the roster
    has rotations, overrides or leave): ring order, each surgeon once, unknown
    team -> `[]`, naive `at` -> ValueError. Cost: O(the team's rotations + the
    shifts and overrides of that UTC day), after a per-snapshot index.
    """
    _aware(at)
    index = _index(roster)
    team = index.teams.get(team_code)
    if team is None:
        return []
    at = _utc(at)
    slots = []
    for origin, clock in team.clocks:
        slot = clock.slot_at(at)
        if slot is not None:
            rotation = clock.rotation
            slots.append((origin, rotation,
                          Shift(team_code, slot.surgeon_id, rotation.role, slot.start, slot.end)))
    holders, _ = _resolve(slots, team.shift_buckets.at(at), team.override_buckets.at(at),
                          index.on_leave(at))
    return _chain(roster, holders)


# --------------------------------------------------------------------------- expansion


class Expansion(NamedTuple):
    held: list[EffectiveShift]  # `shifts_between`
    vacated: list[EffectiveShift]  # `vacancies_between`


def expand_between(roster: Roster, team_code: str, start: datetime, end: datetime) -> Expansion:
    """`shifts_between` and `vacancies_between` in one pass."""
    _aware(start, "shifts_between")
    _aware(end, "shifts_between")
    start, end = _utc(start), _utc(end)
    if not start < end:
        raise ValueError("the window must end after it starts")
    team = roster.teams.get(team_code)
    if team is None:
        return Expansion([], [])
    tz = team_zone(team)

    def overlaps(item) -> bool:
        return item.start < end and item.end > start

    slots: list[tuple[int, Rotation, Shift]] = []
    for origin, rotation in enumerate(roster.rotations):
        if rotation.team == team_code:
            for slot in RotationClock(rotation, tz).slots_between(start, end):
                slots.append((origin, rotation,
                              Shift(team_code, slot.surgeon_id, rotation.role, slot.start, slot.end)))
    shifts = [(o, s) for o, s in enumerate(roster.shifts) if s.team == team_code and overlaps(s)]
    overrides = [(o, v) for o, v in enumerate(roster.overrides)
                 if v.team == team_code and overlaps(v)]
    people = ({s.surgeon_id for _, _, s in slots} | {s.surgeon_id for _, s in shifts}
              | {v.surgeon_id for _, v in overrides})
    leave = [item for item in roster.leave if item.surgeon_id in people and overlaps(item)]

    points = {start, end}
    for item in [s for _, _, s in slots] + [s for _, s in shifts] + [v for _, v in overrides] + leave:
        for point in (_utc(item.start), _utc(item.end)):
            if start < point < end:
                points.add(point)
    cuts = sorted(points)

    pieces: dict[tuple, list] = {}
    vacant: dict[tuple, list] = {}
    for lo, hi in zip(cuts, cuts[1:]):
        holders, vacated = _resolve(
            [(o, r, s) for o, r, s in slots if _covers(s, lo)],
            [(o, s) for o, s in shifts if _covers(s, lo)],
            [(o, v) for o, v in overrides if _covers(v, lo)],
            lambda sid: any(item.surgeon_id == sid and _covers(item, lo) for item in leave),
        )
        for found, into in ((holders, pieces), (vacated, vacant)):
            for h in found:
                if h.surgeon_id not in roster.surgeons:
                    continue
                runs = into.setdefault(h[1:], [])  # identity: all but the rank
                if runs and runs[-1][1] == hi:
                    continue  # already counted for this stretch
                if runs and runs[-1][1] == lo:
                    runs[-1][1] = hi
                else:
                    runs.append([lo, hi])

    def effective(into: dict[tuple, list]) -> list[EffectiveShift]:
        out = [EffectiveShift(team_code, sid, role, lo, hi, source, shift, origin)
               for (sid, role, source, shift, origin), runs in into.items() for lo, hi in runs]
        out.sort(key=lambda e: (e.start, e.rank))
        return out

    return Expansion(effective(pieces), effective(vacant))


def shifts_between(roster: Roster, team_code: str, start: datetime,
                   end: datetime) -> list[EffectiveShift]:
    """Who holds which role of the team over [start, end), as maximal pieces.

    Every holder is listed (a surgeon holding two roles at once appears twice;
    `on_call` keeps the higher one), surgeons on leave and unknown surgeons are
    not. Pieces are cut to the window, sorted by start then ring order; times
    are UTC. For any t in the window, the pieces covering t reduced to one per
    surgeon (lowest `rank`) and sorted by `rank` are `on_call(roster, team, t)`.
    Unknown team -> `[]`.
    """
    return expand_between(roster, team_code, start, end).held


def vacancies_between(roster: Roster, team_code: str, start: datetime,
                      end: datetime) -> list[EffectiveShift]:
    """The pieces a surgeon would hold over [start, end) but for their leave.

    Only what stays empty: a leave covered by an override is not listed.
    """
    return expand_between(roster, team_code, start, end).vacated
