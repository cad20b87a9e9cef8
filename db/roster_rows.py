"""Roster rows <-> the pure roster types, and the JSON the roster audit keeps.

Lists are stored as text ("101,102,103", "08:00,20:00") rather than a JSON
column: both databases read them alike and a person can read them in psql.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from datetime import date, datetime, time
from typing import Any, Mapping

from sqlalchemy import Connection, or_, select

from db.models import (
    LeaveRow,
    OverrideRow,
    RotationRow,
    ShiftRow,
    SurgeonRow,
    TeamRow,
    TradeRow,
)
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from oncall.roster_ops import OPEN, Trade, TradeKind, TradeStatus
from oncall.rotation import Leave, Override, Rotation


def load_roster(conn: Connection, start: datetime, end: datetime) -> Roster:
    """The roster as `RosterRepository.load` documents it, read on `conn`."""
    teams = {row.code: team_of(row) for row in conn.execute(select(TeamRow))}
    surgeons = {
        row.id: Surgeon(row.id, row.name, row.phone, Rank(row.rank))
        for row in conn.execute(select(SurgeonRow))
    }
    shifts = tuple(
        Shift(row.team, row.surgeon_id, Role(row.role), row.starts_at, row.ends_at)
        for row in conn.execute(
            select(ShiftRow).where(ShiftRow.starts_at < end, ShiftRow.ends_at > start)
            .order_by(ShiftRow.team, ShiftRow.starts_at, ShiftRow.id))
    )
    rotations = tuple(rotation_of(row) for row in conn.execute(
        select(RotationRow).order_by(RotationRow.id)))
    override_rows = conn.execute(
        select(OverrideRow).where(OverrideRow.starts_at < end, OverrideRow.ends_at > start)
        .order_by(OverrideRow.id)).all()
    leave = tuple(
        Leave(row.surgeon_id, row.starts_at, row.ends_at, row.note)
        for row in conn.execute(
            select(LeaveRow).where(LeaveRow.starts_at < end, LeaveRow.ends_at > start)
            .order_by(LeaveRow.starts_at, LeaveRow.id))
    )
    trade_rows = conn.execute(
        select(TradeRow).where(or_(
            TradeRow.status.in_([s.value for s in OPEN]),
            (TradeRow.starts_at < end) & (TradeRow.ends_at > start),
            (TradeRow.counter_starts_at < end) & (TradeRow.counter_ends_at > start),
        )).order_by(TradeRow.id)).all()
    covers: dict[int, list[Override]] = {}
    if trade_rows:
        for row in conn.execute(select(OverrideRow).where(
                OverrideRow.trade_id.in_([t.id for t in trade_rows])).order_by(OverrideRow.id)):
            covers.setdefault(row.trade_id, []).append(override_of(row))
    return Roster(
        teams=teams, surgeons=surgeons, shifts=shifts, rotations=rotations,
        overrides=tuple(override_of(row) for row in override_rows), leave=leave,
        trades=tuple(trade_of(row, tuple(covers.get(row.id, ()))) for row in trade_rows),
    )


def team_of(row: Any) -> Team:
    return Team(row.code, row.name_zh, row.name_en, row.ring_s, row.repeats, tz=row.tz,
                requires_approval=bool(row.requires_approval), department_head=row.department_head)


def rotation_of(row: Any) -> Rotation:
    return Rotation(
        row.team, Role(row.role), tuple(int(m) for m in row.members.split(",")),
        row.start_date, tuple(time.fromisoformat(t) for t in row.handoff_times.split(",")),
        row.every_days, row.layer, row.until_date, row.name,
    )


def rotation_row(rotation: Rotation) -> dict[str, Any]:
    return {
        "team": rotation.team, "role": rotation.role.value,
        "members": ",".join(str(m) for m in rotation.members),
        "start_date": rotation.start, "until_date": rotation.until,
        "handoff_times": ",".join(t.strftime("%H:%M") for t in rotation.handoff_times),
        "every_days": rotation.every_days, "layer": rotation.layer, "name": rotation.name,
    }


def override_of(row: Any) -> Override:
    return Override(row.team, Role(row.role), row.surgeon_id, row.starts_at, row.ends_at,
                    row.replaces, row.note)


def override_row(override: Override, trade_id: int | None = None) -> dict[str, Any]:
    return {
        "team": override.team, "role": override.role.value, "surgeon_id": override.surgeon_id,
        "starts_at": override.start, "ends_at": override.end, "replaces": override.replaces,
        "note": override.note, "trade_id": trade_id,
    }


def trade_of(row: Any, overrides: tuple[Override, ...] = ()) -> Trade:
    return Trade(
        row.id, TradeKind(row.kind), row.team, row.requester, Role(row.role), row.starts_at,
        row.ends_at, row.requested_at, TradeStatus(row.status), row.counterpart,
        Role(row.counter_role) if row.counter_role else None, row.counter_starts_at,
        row.counter_ends_at, row.taker, row.decided_by, row.decided_at, overrides, row.note,
    )


def trade_row(trade: Trade) -> dict[str, Any]:
    return {
        "id": trade.id, "kind": trade.kind.value, "team": trade.team, "requester": trade.requester,
        "role": trade.role.value, "starts_at": trade.start, "ends_at": trade.end,
        "requested_at": trade.requested_at, "status": trade.status.value,
        "counterpart": trade.counterpart,
        "counter_role": trade.counter_role.value if trade.counter_role else None,
        "counter_starts_at": trade.counter_start, "counter_ends_at": trade.counter_end,
        "taker": trade.taker, "decided_by": trade.decided_by, "decided_at": trade.decided_at,
        "note": trade.note,
    }


def to_json(value: Any) -> str:
    """A roster value (dataclass, list of them, mapping) as JSON for the audit log."""
    return json.dumps(_plain(value), ensure_ascii=False, sort_keys=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value
