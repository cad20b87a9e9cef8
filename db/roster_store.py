"""Roster writes: swaps and covers, overrides, leave, rotations, imports -- each
in one transaction with its audit entry (who, when, before, after).

The pure operations (`oncall.roster_ops`) decide; this store only records what
they decided, and refuses a decision taken on a stale snapshot (somebody else
acted on the same trade first) rather than overwrite it: reload and retry.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from db.models import (
    LeaveRow,
    OverrideRow,
    RosterAuditRow,
    RotationRow,
    ShiftRow,
    SurgeonRow,
    TeamRow,
    TradeRow,
)
from db.repo import RosterRepository, upsert
from db.roster_rows import (
    override_of,
    override_row,
    rotation_of,
    rotation_row,
    to_json,
    trade_of,
    trade_row,
)
from oncall.model import Role, Roster, Shift
from oncall.roster_import import ImportPlan, Problem
from oncall.roster_ops import Change, Trade
from oncall.rotation import Leave, Override, Rotation

UTC = timezone.utc
# What a snapshot for a roster operation holds around the operation's times:
# rotations are always whole; this covers overrides and leave that touch it.
OPERATION_MARGIN = timedelta(days=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StaleChange(Exception):
    """The trade changed since the snapshot the decision was taken on."""


class NotFound(LookupError):
    """No such override, leave, rotation or trade."""


class PartOfTrade(Exception):
    """The override is a trade's cover: it stays as the trade's record."""


class NotOwner(PermissionError):
    """The leave is not the acting surgeon's own (or does not exist)."""


class ImportRefused(ValueError):
    """The import plan has errors; nothing was written."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__(f"{len(self.problems)} problem(s) in the file; nothing was written")


@dataclass(frozen=True)
class ImportResult:
    removed: int  # one-off shifts the import replaced
    written: int


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    surgeon_id: int | None
    action: str
    subject: str
    subject_id: str
    before: str | None  # JSON
    after: str | None


class RosterStore:
    """Reads and writes the roster; every write leaves an audit entry.

    `actor` names who acted, as the audit log shows it: "surgeon:101",
    "cli:<user>", "api:<token name>". `surgeon_id` is the acting surgeon when
    there is one (a swap is always done by a surgeon).
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._reader = RosterRepository(engine)

    # -- reads ----------------------------------------------------------------

    def load(self, start: datetime, end: datetime) -> Roster:
        return self._reader.load(start, end)

    def for_operation(self, *instants: datetime) -> Roster:
        """A snapshot wide enough to decide an operation touching these instants."""
        return self.load(min(instants) - OPERATION_MARGIN, max(instants) + OPERATION_MARGIN)

    def trade(self, trade_id: int) -> Trade:
        with self._engine.connect() as conn:
            row = conn.execute(select(TradeRow).where(TradeRow.id == trade_id)).first()
            if row is None:
                raise NotFound(f"no trade {trade_id}")
            covers = conn.execute(select(OverrideRow).where(OverrideRow.trade_id == trade_id)
                                  .order_by(OverrideRow.id)).all()
            return trade_of(row, tuple(override_of(c) for c in covers))

    def trades(self, *, status: Sequence[str] | None = None, team: str | None = None,
               limit: int = 200) -> list[Trade]:
        query = select(TradeRow).order_by(TradeRow.id.desc()).limit(limit)
        if status:
            query = query.where(TradeRow.status.in_(list(status)))
        if team:
            query = query.where(TradeRow.team == team)
        with self._engine.connect() as conn:
            return [trade_of(row) for row in conn.execute(query)]

    def overrides(self, start: datetime, end: datetime,
                  team: str | None = None) -> list[tuple[int, Override]]:
        query = (select(OverrideRow).where(OverrideRow.starts_at < end, OverrideRow.ends_at > start)
                 .order_by(OverrideRow.id))
        if team:
            query = query.where(OverrideRow.team == team)
        with self._engine.connect() as conn:
            return [(row.id, override_of(row)) for row in conn.execute(query)]

    def leave(self, start: datetime, end: datetime,
              surgeon_id: int | None = None) -> list[tuple[int, Leave]]:
        query = (select(LeaveRow).where(LeaveRow.starts_at < end, LeaveRow.ends_at > start)
                 .order_by(LeaveRow.starts_at, LeaveRow.id))
        if surgeon_id is not None:
            query = query.where(LeaveRow.surgeon_id == surgeon_id)
        with self._engine.connect() as conn:
            return [(row.id, Leave(row.surgeon_id, row.starts_at, row.ends_at, row.note))
                    for row in conn.execute(query)]

    def rotations(self, team: str | None = None) -> list[tuple[int, Rotation]]:
        query = select(RotationRow).order_by(RotationRow.id)
        if team:
            query = query.where(RotationRow.team == team)
        with self._engine.connect() as conn:
            return [(row.id, rotation_of(row)) for row in conn.execute(query)]

    def audit(self, *, subject: str | None = None, subject_id: str | None = None,
              limit: int = 100) -> list[AuditRecord]:
        """The newest audit entries first."""
        query = select(RosterAuditRow).order_by(RosterAuditRow.id.desc()).limit(limit)
        if subject:
            query = query.where(RosterAuditRow.subject == subject)
        if subject_id is not None:
            query = query.where(RosterAuditRow.subject_id == subject_id)
        with self._engine.connect() as conn:
            return [AuditRecord(r.id, r.at, r.actor, r.surgeon_id, r.action, r.subject,
                                r.subject_id, r.before, r.after) for r in conn.execute(query)]

    # -- trades ---------------------------------------------------------------

    def apply_change(self, change: Change, *, actor: str | None = None) -> Trade:
        """Record what a `roster_ops` operation decided; returns the trade as stored.

        A new trade is numbered by the database (the snapshot may not hold
        every trade, so the id it proposes is ignored). A transition is written only if
        the trade still stands where the snapshot saw it; otherwise
        `StaleChange`, and nothing is written.
        """
        entry = change.audit
        actor = actor or f"surgeon:{entry.who}"
        if entry.before is None:
            return self._new_trade(entry.after, entry.who, entry.action.value, actor)
        before, after = entry.before, entry.after
        new_covers = after.overrides[len(before.overrides):]
        with self._engine.begin() as conn:
            result = conn.execute(
                update(TradeRow)
                .where(TradeRow.id == after.id, TradeRow.status == before.status.value)
                .values({k: v for k, v in trade_row(after).items() if k != "id"})
                .execution_options(preserve_rowcount=True))
            if result.rowcount != 1:
                raise StaleChange(f"trade {after.id} changed meanwhile; reload and try again")
            self._insert_overrides(conn, new_covers, trade_id=after.id)
            self._audit(conn, entry.when, actor, entry.who, entry.action.value, "trade",
                        str(after.id), to_json(before), to_json(after))
        return after

    def _new_trade(self, trade: Trade, who: int, action: str, actor: str) -> Trade:
        row = {k: v for k, v in trade_row(trade).items() if k != "id"}
        with self._engine.begin() as conn:
            new_id = conn.execute(insert(TradeRow).values(row).returning(TradeRow.id)).scalar_one()
            stored = dataclasses.replace(trade, id=new_id)
            self._audit(conn, trade.requested_at, actor, who, action, "trade",
                        str(new_id), None, to_json(stored))
        return stored

    # -- overrides, leave, rotations ------------------------------------------

    def add_override(self, override: Override, *, actor: str, surgeon_id: int | None = None) -> int:
        with self._engine.begin() as conn:
            (new_id,) = self._insert_overrides(conn, (override,))
            self._audit(conn, self._clock(), actor, surgeon_id, "add_override", "override",
                        str(new_id), None, to_json(override))
        return new_id

    def remove_override(self, override_id: int, *, actor: str, surgeon_id: int | None = None) -> Override:
        with self._engine.begin() as conn:
            row = conn.execute(select(OverrideRow).where(OverrideRow.id == override_id)).first()
            if row is None:
                raise NotFound(f"no override {override_id}")
            if row.trade_id is not None:
                raise PartOfTrade(f"override {override_id} belongs to trade {row.trade_id}; "
                                  "it stays as the trade's record")
            conn.execute(delete(OverrideRow).where(OverrideRow.id == override_id))
            gone = override_of(row)
            self._audit(conn, self._clock(), actor, surgeon_id, "remove_override", "override",
                        str(override_id), to_json(gone), None)
        return gone

    def add_leave(self, leave: Leave, *, actor: str, surgeon_id: int | None = None) -> int:
        with self._engine.begin() as conn:
            new_id = conn.execute(insert(LeaveRow).values(
                surgeon_id=leave.surgeon_id, starts_at=leave.start, ends_at=leave.end,
                note=leave.note, created_at=self._clock()).returning(LeaveRow.id)).scalar_one()
            self._audit(conn, self._clock(), actor, surgeon_id, "add_leave", "leave",
                        str(new_id), None, to_json(leave))
        return new_id

    def remove_leave(self, leave_id: int, *, actor: str, surgeon_id: int | None = None,
                     owner: int | None = None) -> Leave:
        """Remove a leave; with `owner`, only if it is that surgeon's (checked in
        the same transaction: `NotOwner`, for someone else's and for none alike)."""
        with self._engine.begin() as conn:
            row = conn.execute(select(LeaveRow).where(LeaveRow.id == leave_id)).first()
            if owner is not None and (row is None or row.surgeon_id != owner):
                raise NotOwner(f"surgeon {owner} has no leave {leave_id}")
            if row is None:
                raise NotFound(f"no leave {leave_id}")
            conn.execute(delete(LeaveRow).where(LeaveRow.id == leave_id))
            gone = Leave(row.surgeon_id, row.starts_at, row.ends_at, row.note)
            self._audit(conn, self._clock(), actor, surgeon_id, "remove_leave", "leave",
                        str(leave_id), to_json(gone), None)
        return gone

    def add_rotation(self, rotation: Rotation, *, actor: str) -> int:
        with self._engine.begin() as conn:
            new_id = conn.execute(insert(RotationRow).values(
                **rotation_row(rotation), created_at=self._clock()).returning(RotationRow.id)
            ).scalar_one()
            self._audit(conn, self._clock(), actor, None, "add_rotation", "rotation",
                        str(new_id), None, to_json(rotation))
        return new_id

    def end_rotation(self, rotation_id: int, until: date, *, actor: str) -> Rotation:
        """End a rotation at its first handoff on `until` (the past stays as it was)."""
        with self._engine.begin() as conn:
            row = conn.execute(select(RotationRow).where(RotationRow.id == rotation_id)).first()
            if row is None:
                raise NotFound(f"no rotation {rotation_id}")
            before = rotation_of(row)
            after = dataclasses.replace(before, until=until)  # validates until > start
            conn.execute(update(RotationRow).where(RotationRow.id == rotation_id)
                         .values(until_date=until))
            self._audit(conn, self._clock(), actor, None, "end_rotation", "rotation",
                        str(rotation_id), to_json(before), to_json(after))
        return after

    def set_team_policy(self, team: str, *, actor: str, tz: str | None = None,
                        requires_approval: bool | None = None,
                        department_head: int | None | type[Ellipsis] = ...) -> None:
        """Change a team's zone, approval rule or department head (audited)."""
        values: dict[str, Any] = {}
        if tz is not None:
            values["tz"] = tz
        if requires_approval is not None:
            values["requires_approval"] = requires_approval
        if department_head is not ...:
            values["department_head"] = department_head
        if not values:
            return
        with self._engine.begin() as conn:
            row = conn.execute(select(TeamRow).where(TeamRow.code == team)).first()
            if row is None:
                raise NotFound(f"no team {team}")
            if values.get("department_head") is not None and conn.execute(
                    select(SurgeonRow.id).where(SurgeonRow.id == values["department_head"])).first() is None:
                raise NotFound(f"no surgeon {values['department_head']}")
            before = {k: getattr(row, k) for k in values}
            conn.execute(update(TeamRow).where(TeamRow.code == team).values(values))
            self._audit(conn, self._clock(), actor, None, "set_team", "team", team,
                        to_json(before), to_json(values))

    # -- imports --------------------------------------------------------------

    def apply_import(self, plan: ImportPlan, *, actor: str, source: str = "") -> ImportResult:
        """Write an import plan, all or nothing.

        For each team in `plan.replace`, the one-off shifts of that team that
        start inside its window are replaced by the plan's; rotations,
        overrides and leave are untouched. A plan with errors is refused
        (`ImportRefused`) before anything is read.
        """
        if not plan.ok:
            raise ImportRefused(plan.errors)
        for shift in plan.shifts:
            window = plan.replace.get(shift.team)
            if window is None or not (window[0] <= shift.start and shift.start < window[1]):
                raise ValueError(f"shift {shift} lies outside the window the plan replaces")
        removed = written = 0
        now = self._clock()
        with self._engine.begin() as conn:
            for team, (lo, hi) in sorted(plan.replace.items()):
                in_window = (ShiftRow.team == team) & (ShiftRow.starts_at >= lo) & (ShiftRow.starts_at < hi)
                old = [Shift(r.team, r.surgeon_id, Role(r.role), r.starts_at, r.ends_at)
                       for r in conn.execute(select(ShiftRow).where(in_window)
                                             .order_by(ShiftRow.starts_at, ShiftRow.id))]
                conn.execute(delete(ShiftRow).where(in_window))
                new = [s for s in plan.shifts if s.team == team]
                upsert(conn, ShiftRow.__table__, [  # type: ignore[arg-type]
                    {"team": s.team, "surgeon_id": s.surgeon_id, "role": s.role.value,
                     "starts_at": s.start, "ends_at": s.end} for s in new
                ], ["team", "surgeon_id", "role", "starts_at"])
                removed += len(old)
                written += len(new)
                self._audit(conn, now, actor, None, "import", "shifts",
                            f"{team}:{lo.isoformat()}/{hi.isoformat()}", to_json(old),
                            to_json({"source": source, "shifts": new}))
        return ImportResult(removed, written)

    # -- helpers --------------------------------------------------------------

    def _insert_overrides(self, conn: Connection, overrides: Sequence[Override],
                          trade_id: int | None = None) -> list[int]:
        ids = []
        for override in overrides:  # one by one: the ids must follow creation order
            ids.append(conn.execute(insert(OverrideRow).values(
                **override_row(override, trade_id), created_at=self._clock())
                .returning(OverrideRow.id)).scalar_one())
        return ids

    @staticmethod
    def _audit(conn: Connection, at: datetime, actor: str, surgeon_id: int | None, action: str,
               subject: str, subject_id: str, before: str | None, after: str | None) -> None:
        conn.execute(insert(RosterAuditRow).values(
            at=at, actor=actor[:128], surgeon_id=surgeon_id, action=action, subject=subject,
            subject_id=subject_id[:64], before=before, after=after))
