"""The roster desk: what the CLI (`hotline roster ...`) and the JSON API do, in one place.

Each operation loads the snapshot it needs from the store, asks the pure
domain (`oncall.*`) to decide, and hands the decision back to the store with
who acted. The routing reads the same `oncall.lookup.on_call` through the
service's roster cache, so "who is on call" here and on a live call agree.

A swap or cover decided on a snapshot that another person changed meanwhile
is decided once more on a fresh one (the domain checks everything again);
if it still fails, the error goes to the person.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from db.roster_store import AuditRecord, ImportResult, RosterStore, StaleChange
from oncall import roster_ops
from oncall.checks import Finding, check_roster
from oncall.lookup import on_call
from oncall.model import OnCall, Role, Roster
from oncall.roster_csv import parse_roster_csv
from oncall.roster_ical import parse_roster_ical, surgeon_calendar, team_calendar
from oncall.roster_import import ImportPlan
from oncall.roster_ops import Change, Trade
from oncall.rotation import EffectiveShift, Leave, Override, Rotation, local_instant, shifts_between, team_zone

UTC = timezone.utc
# A file without a month is read against the roster of this span around now.
IMPORT_HORIZON = timedelta(days=400)
MAX_EXPORT = timedelta(days=400)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ImportOutcome:
    plan: ImportPlan
    result: ImportResult | None  # None: refused, or a dry run

    @property
    def written(self) -> bool:
        return self.result is not None


class RosterDesk:
    def __init__(self, store: RosterStore, clock: Callable[[], datetime] = _utcnow,
                 on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.clock = clock
        self._on_change = on_change

    # -- who is on call -----------------------------------------------------

    def snapshot(self, start: datetime, end: datetime) -> Roster:
        return self.store.load(start, end)

    def chains(self, at: datetime | None = None,
               teams: Sequence[str] | None = None) -> tuple[Roster, dict[str, list[OnCall]]]:
        """Each team's on-call members at `at` (default now), in ring order."""
        at = at or self.clock()
        roster = self.store.load(at - timedelta(days=1), at + timedelta(days=1))
        codes = teams if teams else sorted(roster.teams)
        return roster, {code: on_call(roster, code, at) for code in codes if code in roster.teams}

    def day_window(self, team: str, day: date, days: int = 1) -> tuple[datetime, datetime]:
        """Local midnight of `day` to local midnight `days` later, in the team's zone, as UTC."""
        roster = self.store.load(self.clock(), self.clock() + timedelta(seconds=1))
        _known(roster, team=team, surgeons=())
        tz = team_zone(roster.teams[team])
        return (local_instant(day, time(0), tz),
                local_instant(day + timedelta(days=days), time(0), tz))

    def pieces(self, team: str, start: datetime, end: datetime) -> tuple[Roster, list[EffectiveShift]]:
        """Who holds which role of `team` over [start, end), as `shifts_between` pieces."""
        _bounded(start, end)
        roster = self.store.load(start, end)
        _known(roster, team=team, surgeons=())
        return roster, shifts_between(roster, team, start, end)

    def check(self, start: datetime, end: datetime,
              teams: Sequence[str] | None = None) -> tuple[Roster, list[Finding]]:
        _bounded(start, end)
        roster = self.store.load(start, end)
        for team in teams or ():
            _known(roster, team=team, surgeons=())
        return roster, check_roster(roster, start, end, teams=teams)

    def trades(self, *, status: Sequence[str] | None = None, team: str | None = None,
               limit: int = 200) -> list[Trade]:
        return self.store.trades(status=status, team=team, limit=limit)

    def audit(self, *, subject: str | None = None, subject_id: str | None = None,
              limit: int = 100) -> list[AuditRecord]:
        return self.store.audit(subject=subject, subject_id=subject_id, limit=limit)

    def rotations(self, team: str | None = None) -> list[tuple[int, Rotation]]:
        return self.store.rotations(team)

    # -- import / export ------------------------------------------------------

    def import_csv(self, data: bytes, *, actor: str, team: str | None = None,
                   month: date | None = None, handoff: time = time(8, 0),
                   dry_run: bool = False, source: str = "") -> ImportOutcome:
        roster = self._import_roster(month)
        plan = parse_roster_csv(data, roster, team=team, month=month, handoff=handoff)
        return self._import(plan, actor, dry_run, source)

    def import_ical(self, data: bytes, *, actor: str, team: str | None = None,
                    role: Role | None = None, window: tuple[datetime, datetime] | None = None,
                    dry_run: bool = False, source: str = "") -> ImportOutcome:
        if window is not None:
            _bounded(*window)
            roster = self.store.load(window[0] - timedelta(days=1), window[1] + timedelta(days=1))
        else:
            roster = self._import_roster(None)
        plan = parse_roster_ical(data, roster, team=team, role=role, window=window)
        return self._import(plan, actor, dry_run, source)

    def _import_roster(self, month: date | None) -> Roster:
        if month is not None:
            first = datetime(month.year, month.month, 1, tzinfo=UTC)
            return self.store.load(first - timedelta(days=2), first + timedelta(days=33))
        now = self.clock()
        return self.store.load(now - IMPORT_HORIZON, now + IMPORT_HORIZON)

    def _import(self, plan: ImportPlan, actor: str, dry_run: bool, source: str) -> ImportOutcome:
        if dry_run or not plan.ok:
            return ImportOutcome(plan, None)
        result = self.store.apply_import(plan, actor=actor, source=source)
        self._changed()
        return ImportOutcome(plan, result)

    def team_ical(self, team: str, start: datetime, end: datetime, lang: str = "zh") -> bytes:
        _bounded(start, end)
        roster = self.store.load(start, end)
        _known(roster, team=team, surgeons=())
        return team_calendar(roster, team, start, end, now=self.clock(), lang=lang)

    def surgeon_ical(self, surgeon_id: int, start: datetime, end: datetime, lang: str = "zh") -> bytes:
        _bounded(start, end)
        roster = self.store.load(start, end)
        _known(roster, team=None, surgeons=(surgeon_id,))
        return surgeon_calendar(roster, surgeon_id, start, end, now=self.clock(), lang=lang)

    # -- swaps and give-aways -------------------------------------------------

    def offer(self, *, by: int, team: str, role: Role, start: datetime, end: datetime,
              note: str = "", actor: str | None = None) -> Trade:
        return self._decide(lambda r, at: roster_ops.offer_shift(
            r, by=by, team=team, role=role, start=start, end=end, at=at, note=note),
            (start, end), actor)

    def swap(self, *, by: int, team: str, role: Role, start: datetime, end: datetime,
             with_surgeon: int, their_start: datetime, their_end: datetime,
             their_role: Role | None = None, note: str = "", actor: str | None = None) -> Trade:
        return self._decide(lambda r, at: roster_ops.request_swap(
            r, by=by, team=team, role=role, start=start, end=end, with_surgeon=with_surgeon,
            their_start=their_start, their_end=their_end, their_role=their_role, at=at, note=note),
            (start, end, their_start, their_end), actor)

    def take(self, trade_id: int, *, by: int, actor: str | None = None) -> Trade:
        return self._decide(lambda r, at: roster_ops.take(r, trade_id, by=by, at=at),
                            self._trade_times(trade_id), actor)

    def approve(self, trade_id: int, *, by: int, actor: str | None = None) -> Trade:
        return self._decide(lambda r, at: roster_ops.approve(r, trade_id, by=by, at=at),
                            self._trade_times(trade_id), actor)

    def decline(self, trade_id: int, *, by: int, note: str = "", actor: str | None = None) -> Trade:
        return self._decide(lambda r, at: roster_ops.decline(r, trade_id, by=by, at=at, note=note),
                            self._trade_times(trade_id), actor)

    def _trade_times(self, trade_id: int) -> tuple[datetime, ...]:
        trade = self.store.trade(trade_id)
        return tuple(t for t in (trade.start, trade.end, trade.counter_start, trade.counter_end)
                     if t is not None)

    def _decide(self, decide: Callable[[Roster, datetime], Change], instants: tuple[datetime, ...],
                actor: str | None) -> Trade:
        for attempt in (1, 2):
            at = self.clock()
            roster = self.store.for_operation(at, *instants)
            change = decide(roster, at)  # RosterOpError: refused, nothing written
            try:
                trade = self.store.apply_change(change, actor=actor)
            except StaleChange:
                if attempt == 2:
                    raise
                continue
            self._changed()
            return trade
        raise AssertionError("unreachable")

    # -- overrides, leave, rotations -----------------------------------------

    def add_override(self, override: Override, *, actor: str, surgeon_id: int | None = None) -> int:
        roster = self.store.for_operation(override.start, override.end)
        _known(roster, team=override.team, surgeons=(override.surgeon_id, override.replaces))
        new_id = self.store.add_override(override, actor=actor, surgeon_id=surgeon_id)
        self._changed()
        return new_id

    def remove_override(self, override_id: int, *, actor: str, surgeon_id: int | None = None) -> Override:
        gone = self.store.remove_override(override_id, actor=actor, surgeon_id=surgeon_id)
        self._changed()
        return gone

    def add_leave(self, leave: Leave, *, actor: str, surgeon_id: int | None = None) -> int:
        roster = self.store.for_operation(leave.start, leave.end)
        _known(roster, team=None, surgeons=(leave.surgeon_id,))
        new_id = self.store.add_leave(leave, actor=actor, surgeon_id=surgeon_id)
        self._changed()
        return new_id

    def remove_leave(self, leave_id: int, *, actor: str, surgeon_id: int | None = None,
                     owner: int | None = None) -> Leave:
        """`owner`: remove only if the leave is that surgeon's (`NotOwner` otherwise)."""
        gone = self.store.remove_leave(leave_id, actor=actor, surgeon_id=surgeon_id, owner=owner)
        self._changed()
        return gone

    def add_rotation(self, rotation: Rotation, *, actor: str) -> int:
        now = self.clock()
        _known(self.store.load(now, now + timedelta(seconds=1)), team=rotation.team,
               surgeons=rotation.members)
        new_id = self.store.add_rotation(rotation, actor=actor)
        self._changed()
        return new_id

    def end_rotation(self, rotation_id: int, until: date, *, actor: str) -> Rotation:
        ended = self.store.end_rotation(rotation_id, until, actor=actor)
        self._changed()
        return ended

    def set_team_policy(self, team: str, *, actor: str, tz: str | None = None,
                        requires_approval: bool | None = None,
                        department_head: int | None | type[Ellipsis] = ...) -> None:
        """Change a team's zone, whether swaps need approval, or its department head."""
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"not a time zone: {tz!r} (e.g. Asia/Shanghai)") from None
        self.store.set_team_policy(team, actor=actor, tz=tz, requires_approval=requires_approval,
                                   department_head=department_head)
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _known(roster: Roster, *, team: str | None, surgeons: Sequence[int | None]) -> None:
    if team is not None and team not in roster.teams:
        raise roster_ops.UnknownTeam(f"no team {team}")
    for sid in surgeons:
        if sid is not None and sid not in roster.surgeons:
            raise roster_ops.UnknownSurgeon(f"no surgeon {sid}")


def _bounded(start: datetime, end: datetime) -> None:
    for t in (start, end):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("times must be timezone-aware")
    if not start < end:
        raise ValueError("the window must end after it starts")
    if end - start > MAX_EXPORT:
        raise ValueError(f"the window may span at most {MAX_EXPORT.days} days")
