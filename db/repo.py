"""Repositories: cases in and out, the roster and partner numbers out.

Writes are upserts (INSERT .. ON CONFLICT DO UPDATE, SQLite and PostgreSQL), so a
case saved twice, from two threads, or again after more happened, stays one row
and its menu events and attempts stay one row per (case_id, seq).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from cases.lifecycle import Case, DialAttempt, MenuEvent
from db.models import (
    CallbackRow,
    CaseRow,
    DialAttemptRow,
    HospitalPhoneRow,
    MenuEventRow,
    RosterAuditRow,
    ShiftRow,
    SurgeonRow,
    TeamRow,
)
from db.roster_rows import load_roster
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from network.callbacks import CallbackTask
from routing.callers import RAW_SAFE_MAX, Caller, CallerClass, normalise_number
from routing.escalation import AttemptOutcome

CASES: Table = CaseRow.__table__  # type: ignore[assignment]
MENU_EVENTS: Table = MenuEventRow.__table__  # type: ignore[assignment]
DIAL_ATTEMPTS: Table = DialAttemptRow.__table__  # type: ignore[assignment]
CALLBACKS: Table = CallbackRow.__table__  # type: ignore[assignment]

_CHUNK = 500  # rows per INSERT: far below SQLite's bound-parameter limit
_SAVE_TRIES = 3
# PostgreSQL text cannot hold NUL, and no UTF-8 text can hold a lone surrogate
# (a caller-ID decoded with surrogateescape may): both become U+FFFD, on every
# database alike, so the two behave the same.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class CaseConflict(Exception):
    """The case's linkedid belongs to another case_id, or the other way round."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | None = None,
    where: Callable[[Any], ColumnElement[bool]] | None = None,
) -> int:
    """INSERT rows, on a conflict over `keys` update `update` (None: every other
    column; empty: do nothing). `where(excluded)` limits which rows update.

    Returns the rows inserted or updated (skipped ones do not count).
    """
    if not rows:
        return 0
    name = conn.dialect.name
    if name == "sqlite":
        insert: Any = sqlite.insert
    elif name == "postgresql":
        insert = postgresql.insert
    else:
        raise NotImplementedError(f"no upsert for {name}")
    if update is None:
        update = [column for column in rows[0] if column not in keys]
    written = 0
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(table).values(list(rows[start:start + _CHUNK]))
        if update:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={column: stmt.excluded[column] for column in update},
                where=where(stmt.excluded) if where is not None else None,
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        # INSERT's rowcount is dropped with the cursor unless asked to keep it.
        result = conn.execute(stmt.execution_options(preserve_rowcount=True))
        written += max(0, result.rowcount)
    return written


class CaseRepository:
    """Cases keyed by case_id (and unique by linkedid), written by upsert."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock  # stamps updated_at and callbacks' created_at only

    def save(self, case: Case, *, expect_revision: int | None = None) -> bool:
        """Write this snapshot of the case; False if a newer one is already stored.

        A snapshot is newer by `case.revision`; an equal revision is written
        again (the same snapshot twice is harmless). Raises CaseConflict when
        the linkedid is stored under another case_id or vice versa.

        `expect_revision` (load, change, save from several processes, e.g. the
        Twilio webhooks): write only if the stored case still has that
        revision, else False -- reload and apply the change again. Two writers
        that both turned revision 5 into 6 can then not overwrite each other.
        """
        for attempt in range(_SAVE_TRIES):
            try:
                return self._save_once(case, expect_revision)
            except IntegrityError as exc:
                owner = self._case_id_of(case.linkedid)
                if owner is not None and owner != case.case_id:
                    raise CaseConflict(
                        f"linkedid {case.linkedid} is stored as case {owner}, not {case.case_id}"
                    ) from exc
                # PostgreSQL: two first saves of one case race past ON CONFLICT
                # (case_id) and the loser trips the *other* unique key, linkedid.
                # The winner has committed by now, so a retry takes the update path.
                if owner is None or attempt == _SAVE_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _save_once(self, case: Case, expect_revision: int | None = None) -> bool:
        now = self._clock()
        with self._engine.begin() as conn:
            # The case row first: it is the lock every save of this case queues
            # on, so its children are never written by two at once. (SQLite: a
            # write as the first statement waits on busy_timeout, not SQLITE_BUSY.)
            written = upsert(
                conn, CASES, [_case_row(case, now)], ["case_id"],
                where=lambda new: ((CASES.c.revision <= new.revision) if expect_revision is None
                                   else (CASES.c.revision == expect_revision))
                & (CASES.c.linkedid == new.linkedid),
            )
            if not written:
                stored = conn.execute(
                    select(CASES.c.linkedid).where(CASES.c.case_id == case.case_id)
                ).scalar_one_or_none()
                if stored is not None and stored != case.linkedid:
                    raise CaseConflict(f"case {case.case_id} is stored with another linkedid")
                return False
            upsert(conn, MENU_EVENTS, _menu_rows(case), ["case_id", "seq"])
            upsert(conn, DIAL_ATTEMPTS, _attempt_rows(case), ["case_id", "seq"])
            # A voicemail, an abandoned call or "call me back" opens its callback
            # task here, in the case's own transaction: exactly once per case.
            from db.callbacks import create_for_case
            create_for_case(conn, case, now)
            return True

    def get(self, case_id: str) -> Case | None:
        return self._load_one(CASES.c.case_id == case_id)

    def get_by_linkedid(self, linkedid: str) -> Case | None:
        return self._load_one(CASES.c.linkedid == linkedid)

    def recent(self, limit: int = 50) -> list[Case]:
        """The newest cases by start time, newest first."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit is 1..1000")
        query = select(CASES).order_by(CASES.c.started_at.desc(), CASES.c.case_id).limit(limit)
        with self._engine.connect() as conn:
            return _load_cases(conn, conn.execute(query).mappings().all())

    def callbacks(self, status: str | None = "open") -> list[CallbackTask]:
        """Callback tasks, oldest due first; `status=None` for all (`db.callbacks`
        has the full store; this is the case record's view of them)."""
        from db.callbacks import _task  # db.callbacks imports this module

        query = select(CALLBACKS).order_by(CALLBACKS.c.due_at, CALLBACKS.c.id)
        if status is not None:
            query = query.where(CALLBACKS.c.status == status)
        with self._engine.connect() as conn:
            return [_task(row) for row in conn.execute(query).mappings()]

    def _case_id_of(self, linkedid: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(
                select(CASES.c.case_id).where(CASES.c.linkedid == linkedid)
            ).scalar_one_or_none()

    def _load_one(self, condition: ColumnElement[bool]) -> Case | None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(CASES).where(condition)).mappings().all()
            loaded = _load_cases(conn, rows)
        return loaded[0] if loaded else None


class RosterRepository:
    """Teams, surgeons, shifts, rotations, overrides, leave and trades out of the
    database, as the pure Roster."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, start: datetime, end: datetime) -> Roster:
        """All teams, surgeons and rotations; the shifts, overrides and leave
        overlapping [start, end); the open trades and those overlapping it.

        Overrides come in creation (id) order, which is what makes a later one
        win; a window must therefore hold every override that matters in it,
        and an override outside the window cannot matter inside it.
        """
        for value in (start, end):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError("load needs timezone-aware times")
        with self._engine.connect() as conn:
            return load_roster(conn, start, end)

    def version(self) -> tuple[int, ...]:
        """What routing reads moved: (newest roster audit id, newest hospital or
        block-list audit id). Every roster, directory and block-list write leaves
        such a row, so a number registered while the service runs is picked up at
        the next probe. One query, two index lookups (see
        `db.hospitals.audit_version_column`)."""
        from db.hospitals import audit_version_column  # db.hospitals imports db.figures

        roster = select(func.coalesce(func.max(RosterAuditRow.id), 0)).scalar_subquery()
        with self._engine.connect() as conn:
            return tuple(conn.execute(select(roster, audit_version_column())).one())

    def partner_numbers(self) -> dict[str, int]:
        """Registered partner-hospital numbers, normalised as `classify` expects."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(HospitalPhoneRow.number, HospitalPhoneRow.hospital_id))
            numbers = {}
            for number, hospital_id in rows:
                normal = normalise_number(number)
                if normal is not None:
                    numbers[normal] = hospital_id
            return numbers


def write_roster(
    conn: Connection, teams: Iterable[Team], surgeons: Iterable[Surgeon], shifts: Iterable[Shift]
) -> None:
    """Upsert teams by code, surgeons by id, shifts by (team, surgeon, role, start)."""
    upsert(conn, TeamRow.__table__, [  # type: ignore[arg-type]
        {"code": t.code, "name_zh": t.name_zh, "name_en": t.name_en,
         "ring_s": t.ring_s, "repeats": t.repeats, "tz": t.tz,
         "requires_approval": t.requires_approval, "department_head": t.department_head}
        for t in teams
    ], ["code"])
    upsert(conn, SurgeonRow.__table__, [  # type: ignore[arg-type]
        {"id": s.id, "name": s.name, "phone": s.phone, "rank": Rank(s.rank).value}
        for s in surgeons
    ], ["id"])
    upsert(conn, ShiftRow.__table__, [  # type: ignore[arg-type]
        {"team": s.team, "surgeon_id": s.surgeon_id, "role": Role(s.role).value,
         "starts_at": s.start, "ends_at": s.end}
        for s in shifts
    ], ["team", "surgeon_id", "role", "starts_at"])


def _storable(text: str | None) -> str | None:
    return None if text is None else _UNSTORABLE.sub("\ufffd", text)


def _case_row(case: Case, now: datetime) -> dict[str, Any]:
    caller = case.caller
    return {
        "case_id": case.case_id,
        "linkedid": case.linkedid,
        "revision": case.revision,
        "caller_number": caller.number,
        "caller_class": CallerClass(caller.caller_class).value,
        "caller_raw": _storable(caller.raw),
        "caller_raw_safe": caller.raw_safe[:RAW_SAFE_MAX],
        "partner_hospital_id": caller.hospital_id,
        "language": case.language,
        "team": case.team,
        "started_at": case.started_at,
        "connected_at": case.connected_at,
        "connected_surgeon_id": case.connected_surgeon_id,
        "connected_seq": case.connected_seq,
        "ended_at": case.ended_at,
        "hangup_by": case.hangup_by,
        "outcome": case.outcome,
        "recording_path": case.recording_path,
        "recording_s": case.recording_s,
        "voicemail_path": case.voicemail_path,
        "voicemail_at": case.voicemail_at,
        "linked_case_id": case.linked_case_id,
        "updated_at": now,
    }


def _menu_rows(case: Case) -> list[dict[str, Any]]:
    return [
        {"case_id": case.case_id, "seq": seq, "at": e.at, "choice": e.choice, "label": e.label}
        for seq, e in enumerate(case.menu, start=1)
    ]


def _attempt_rows(case: Case) -> list[dict[str, Any]]:
    return [
        {
            "case_id": case.case_id, "seq": a.seq, "kind": a.kind, "surgeon_id": a.surgeon_id,
            "name": a.name, "phone": a.phone, "role": a.role, "started_at": a.started_at,
            "ended_at": a.ended_at, "ring_s": a.ring_s, "answered": a.answered,
            "outcome": a.outcome.value if a.outcome is not None else None,
        }
        for a in case.attempts
    ]


def _load_cases(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Case]:
    """Cases for `rows`, in their order, with menu events and attempts (3 queries)."""
    if not rows:
        return []
    ids = [row["case_id"] for row in rows]
    menus: dict[str, list[MenuEvent]] = {case_id: [] for case_id in ids}
    for e in conn.execute(
        select(MENU_EVENTS).where(MENU_EVENTS.c.case_id.in_(ids))
        .order_by(MENU_EVENTS.c.case_id, MENU_EVENTS.c.seq)
    ).mappings():
        menus[e["case_id"]].append(MenuEvent(at=e["at"], choice=e["choice"], label=e["label"]))
    attempts: dict[str, list[DialAttempt]] = {case_id: [] for case_id in ids}
    for a in conn.execute(
        select(DIAL_ATTEMPTS).where(DIAL_ATTEMPTS.c.case_id.in_(ids))
        .order_by(DIAL_ATTEMPTS.c.case_id, DIAL_ATTEMPTS.c.seq)
    ).mappings():
        attempts[a["case_id"]].append(DialAttempt(
            seq=a["seq"], kind=a["kind"], surgeon_id=a["surgeon_id"], name=a["name"],
            phone=a["phone"], role=a["role"], started_at=a["started_at"],
            ended_at=a["ended_at"], ring_s=a["ring_s"], answered=bool(a["answered"]),
            outcome=AttemptOutcome(a["outcome"]) if a["outcome"] is not None else None,
        ))
    return [
        Case(
            case_id=row["case_id"],
            linkedid=row["linkedid"],
            caller=Caller(
                number=row["caller_number"],
                caller_class=CallerClass(row["caller_class"]),
                hospital_id=row["partner_hospital_id"],
                raw_safe=row["caller_raw_safe"],
                raw=row["caller_raw"],
            ),
            started_at=row["started_at"],
            language=row["language"],
            team=row["team"],
            menu=menus[row["case_id"]],
            attempts=attempts[row["case_id"]],
            connected_at=row["connected_at"],
            connected_surgeon_id=row["connected_surgeon_id"],
            connected_seq=row["connected_seq"],
            ended_at=row["ended_at"],
            hangup_by=row["hangup_by"],
            recording_path=row["recording_path"],
            recording_s=row["recording_s"],
            voicemail_path=row["voicemail_path"],
            voicemail_at=row["voicemail_at"],
            fallback=row["outcome"] == "fallback",
            linked_case_id=row["linked_case_id"],
            revision=row["revision"],
        )
        for row in rows
    ]
