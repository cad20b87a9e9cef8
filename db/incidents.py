"""Major-incident switches in the database: the `incidents` table, audited and announced.

Each switch (on or off) writes, in ONE transaction: the incident row, an
audit_log entry (subject "incident") and a MAJOR_INCIDENT notice in the outbox
for the department head of every affected team and for the duty desk -- so
there is never a switch without its audit entry or its alert, nor the reverse.
Two switches at once are serialised (PostgreSQL: a transaction-scoped advisory
lock; SQLite: the write lock taken first), so two supervisors pressing "on" at
the same moment get one incident and one clear refusal.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from db.models import IncidentRow, NoticeRow, ShiftRow, TeamRow
from db.users import audit_row
from network.incidents import (NOTE_MAX, Incident, IncidentError, affected_teams,
                               check_switch_on, check_team, to_switch_off)
from oncall.model import Role
from oncall.notices import MAJOR_INCIDENT, Notice, clean

UTC = timezone.utc
SUBJECT = "incident"
_LOCK_KEY = 96608_0006  # pg_advisory_xact_lock key of incident switches


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _incident(row: Any) -> Incident:
    return Incident(id=row.id, team=row.team, started_at=row.started_at, started_by=row.started_by,
                    ended_at=row.ended_at, ended_by=row.ended_by, note=row.note or "")


class IncidentStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # -- reading -------------------------------------------------------------
    def active(self) -> list[Incident]:
        """Incidents not switched off, oldest first."""
        with self._engine.connect() as conn:
            return self._active(conn)

    def history(self, limit: int = 50) -> list[Incident]:
        """The newest incidents first, ended ones included."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(IncidentRow).order_by(IncidentRow.id.desc()).limit(limit))
            return [_incident(r) for r in rows]

    def version(self) -> int:
        """Moves on every switch, on or off (rows are never deleted; ended_at is set once)."""
        with self._engine.connect() as conn:
            count, ended = conn.execute(
                select(func.count(IncidentRow.id), func.count(IncidentRow.ended_at))).one()
            return int(count or 0) + int(ended or 0)

    def teams(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(TeamRow.code).order_by(TeamRow.code)).scalars())

    # -- switching -----------------------------------------------------------
    def switch_on(self, team: str | None, actor: str, note: str = "", *, ip: str = "") -> Incident:
        """Start major-incident mode for `team` (None: every team); IncidentError if refused."""
        check_team(team)
        note = clean(note or "")[:NOTE_MAX]
        now = self._clock()
        with self._engine.begin() as conn:
            self._lock(conn)
            known = self._team_codes(conn)
            if team is not None and team not in known:
                raise IncidentError(f"unknown team {team}")
            check_switch_on(self._active(conn), team, now)
            incident_id = conn.execute(insert(IncidentRow).values(
                team=team, started_at=now, started_by=actor[:128], note=note)
                .returning(IncidentRow.id)).scalar_one()
            incident = Incident(incident_id, team, now, actor[:128], note=note)
            self._audit(conn, now, actor, "incident_on", incident, ip)
            self._notify(conn, now, incident, "on", affected_teams(team, known))
        return incident

    def switch_off(self, team: str | None, actor: str, *, ip: str = "") -> Incident:
        """End the active incident of exactly this scope; IncidentError if there is none."""
        check_team(team)
        now = self._clock()
        with self._engine.begin() as conn:
            self._lock(conn)
            current = to_switch_off(self._active(conn), team, now)
            conn.execute(update(IncidentRow).where(IncidentRow.id == current.id,
                                                   IncidentRow.ended_at.is_(None))
                         .values(ended_at=now, ended_by=actor[:128]))
            ended = Incident(current.id, current.team, current.started_at, current.started_by,
                             now, actor[:128], current.note)
            self._audit(conn, now, actor, "incident_off", ended, ip)
            self._notify(conn, now, ended, "off", affected_teams(team, self._team_codes(conn)))
        return ended

    # -- helpers -------------------------------------------------------------
    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        else:
            # Any write statement takes SQLite's write lock for the whole
            # transaction, so the check below sees every committed switch.
            conn.execute(update(IncidentRow).where(IncidentRow.id == -1).values(note=""))

    @staticmethod
    def _active(conn: Connection) -> list[Incident]:
        rows = conn.execute(select(IncidentRow).where(IncidentRow.ended_at.is_(None))
                            .order_by(IncidentRow.started_at, IncidentRow.id))
        return [_incident(r) for r in rows]

    @staticmethod
    def _team_codes(conn: Connection) -> list[str]:
        return list(conn.execute(select(TeamRow.code).order_by(TeamRow.code)).scalars())

    @staticmethod
    def _audit(conn: Connection, now: datetime, actor: str, action: str, incident: Incident,
               ip: str) -> None:
        detail = {"team": incident.scope, "note": incident.note}
        audit_row(conn, now, actor, action, SUBJECT, incident.id, detail, ip=ip)

    def _notify(self, conn: Connection, now: datetime, incident: Incident, switch: str,
                teams: tuple[str, ...]) -> None:
        heads = self._heads(conn, teams, now)
        for notice in incident_notices(incident, switch, heads, now):
            conn.execute(self._insert(NoticeRow).values(
                key=notice.key, kind=notice.kind, team=notice.team, surgeon_id=notice.surgeon_id,
                due_at=notice.due_at, text_zh=notice.text_zh, text_en=notice.text_en,
                created_at=now, attempts=0).on_conflict_do_nothing(index_elements=["key"]))

    @staticmethod
    def _heads(conn: Connection, teams: tuple[str, ...], now: datetime) -> dict[int, str]:
        """Department head per recipient: the team's configured head, else whoever
        holds a department_head shift now. {surgeon_id: first team}."""
        heads: dict[int, str] = {}
        if not teams:
            return heads
        for code, head in conn.execute(select(TeamRow.code, TeamRow.department_head)
                                       .where(TeamRow.code.in_(teams)).order_by(TeamRow.code)):
            if head is not None:
                heads.setdefault(head, code)
                continue
            rows = conn.execute(select(ShiftRow.surgeon_id).where(
                ShiftRow.team == code, ShiftRow.role == Role.DEPARTMENT_HEAD.value,
                ShiftRow.starts_at <= now, ShiftRow.ends_at > now).order_by(ShiftRow.surgeon_id))
            for (sid,) in rows:
                heads.setdefault(sid, code)
        return heads


def incident_notices(incident: Incident, switch: str, heads: dict[int, str],
                     now: datetime) -> list[Notice]:
    """The MAJOR_INCIDENT notices of one switch: each department head, then the duty desk.

    Keys are deterministic (`major_incident:<id>:<on|off>:<recipient>`): a
    repeated write adds nothing.
    """
    scope_zh = "全部专业组" if incident.team is None else f"专业组 {incident.team}"
    scope_en = "all teams" if incident.team is None else f"team {incident.team}"
    note = f"（{incident.note}）" if incident.note else ""
    note_en = f" ({incident.note})" if incident.note else ""
    local = now.astimezone(timezone(timedelta(hours=8)))
    if switch == "on":
        zh = (f"【96608 重大突发事件】{local:%m-%d %H:%M} {scope_zh}已启动重大突发事件模式{note}。"
              "来电将同时呼叫所有值班医生，来电者排队等候。请科主任关注并调配人手。")
        en = (f"[96608 MAJOR INCIDENT] {local:%m-%d %H:%M} major-incident mode switched on for "
              f"{scope_en}{note_en}. Calls ring every on-call surgeon at once; callers queue.")
    else:
        zh = f"【96608 重大突发事件】{local:%m-%d %H:%M} {scope_zh}已解除重大突发事件模式，恢复逐个呼叫。"
        en = (f"[96608 MAJOR INCIDENT] {local:%m-%d %H:%M} major-incident mode switched off for "
              f"{scope_en}; calls ring one by one again.")
    recipients: list[tuple[int | None, str | None]] = [(sid, team) for sid, team in sorted(heads.items())]
    recipients.append((None, incident.team))
    return [Notice(key=f"major_incident:{incident.id}:{switch}:{'desk' if sid is None else sid}",
                   kind=MAJOR_INCIDENT, team=team, surgeon_id=sid, due_at=now,
                   text_zh=zh, text_en=en)
            for sid, team in recipients]

