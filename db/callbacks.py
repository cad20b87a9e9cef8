"""Callback tasks in the database (`callbacks`), every change audited in the same transaction.

Each change loads the task, applies the pure transition (`network.callbacks`)
and writes it back only if the row is still as it was read (its status and
attempts in the WHERE clause): two clicks on 回拨 at once make one placement
request, and the loser gets `Changed`. The audit row (`audit_log`, subject
"callback") is written in that same transaction, so no change goes unaudited.

Tasks are created with the case that needs one (`create_for_case`, called by
`CaseRepository.save` in the case's own transaction): INSERT .. ON CONFLICT
(case_id) DO NOTHING, so however often a case is saved it has one task.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, case as sql_case, select, update

from cases.lifecycle import Case
from db.models import CallbackRow, CaseRow, SurgeonRow, TeamRow
from db.roster_rows import load_roster
from db.users import audit_row
from network import callbacks as cb
from network.callbacks import CallbackError, CallbackStatus, CallbackTask, PlacementOutcome

UTC = timezone.utc
SUBJECT = "callback"
SERVICE_ACTOR = "service"
VIEWS = ("active", "overdue", "mine", "closed", "all")
_COLUMNS = [f.name for f in fields(CallbackTask)]
#: A phone the Originate may dial: ASCII digits only (str.isdigit() takes "１" and "²").
_PHONE = re.compile(r"[0-9]{3,20}", re.ASCII)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Changed(CallbackError):
    """The task changed between reading and writing it (someone else acted first)."""


class UnknownCallback(LookupError):
    """No callback task has that id."""


@dataclass(frozen=True)
class CallbackListRow:
    """One line of the console's list: the task and what it shows beside it."""

    task: CallbackTask
    caller_raw_safe: str
    case_started_at: datetime
    owner_name: str | None
    team_name_zh: str | None
    team_name_en: str | None


@dataclass(frozen=True)
class Placement:
    """A placement the service has taken: whom to ring first, and whom to call."""

    task: CallbackTask
    surgeon_id: int
    surgeon_name: str
    surgeon_phone: str


def _task(row: Any) -> CallbackTask:
    values = {name: row[name] for name in _COLUMNS}
    values["reason"] = cb.CallbackReason(values["reason"])
    values["status"] = CallbackStatus(values["status"])
    return CallbackTask(**values)


def _row(task: CallbackTask) -> dict[str, Any]:
    values = {name: getattr(task, name) for name in _COLUMNS if name != "id"}
    values["reason"] = task.reason.value
    values["status"] = task.status.value
    return values


def _audit(conn: Connection, at: datetime, actor: str, action: str, task_id: int,
           **detail: Any) -> None:
    audit_row(conn, at, actor, action, SUBJECT, task_id, detail or None)


def create_for_case(conn: Connection, case: Case, now: datetime) -> int | None:
    """Open the callback task `case` needs, once; its id if this call created it.

    Runs on the caller's connection (CaseRepository.save's transaction). The
    roster of that moment gives the owner; it is read only when a task is
    actually about to be created.
    """
    if cb.callback_reason(case) is None:
        return None
    if conn.execute(select(CallbackRow.id).where(CallbackRow.case_id == case.case_id)).first():
        return None
    reason = cb.callback_reason(case)
    assert reason is not None
    at = cb.reason_time(case, reason)
    roster = load_roster(conn, at - timedelta(days=1), at + timedelta(days=1)) \
        if case.team is not None else None
    plan = cb.plan_callback(case, roster)
    assert plan is not None
    from db.repo import CALLBACKS, upsert  # db.repo imports this module lazily too

    written = upsert(conn, CALLBACKS, [{
        "case_id": plan.case_id, "reason": plan.reason.value, "due_at": plan.due_at,
        "status": CallbackStatus.OPEN.value, "created_at": now, "number": plan.number,
        "team": plan.team, "owner_surgeon_id": plan.owner_surgeon_id, "attempts": 0,
    }], ["case_id"], update=[])
    if not written:
        return None  # a concurrent save of the same case created it
    task_id = conn.execute(
        select(CallbackRow.id).where(CallbackRow.case_id == plan.case_id)).scalar_one()
    _audit(conn, now, SERVICE_ACTOR, "callback_created", task_id, case=plan.case_id,
           reason=plan.reason.value, due_at=plan.due_at, owner=plan.owner_surgeon_id,
           number_known=plan.number is not None)
    return task_id


class CallbackStore:
    """Callback tasks: list, assign, request placement, record results, close."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    # -- reading -----------------------------------------------------------
    def get(self, task_id: int) -> CallbackTask | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(CallbackRow.__table__).where(
                CallbackRow.id == task_id)).mappings().first()
        return _task(row) if row is not None else None

    def for_case(self, case_id: str) -> CallbackTask | None:
        """The task opened for `case_id` (each case has at most one)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(CallbackRow.__table__).where(
                CallbackRow.case_id == case_id)).mappings().first()
        return _task(row) if row is not None else None

    def list(self, view: str = "active", *, surgeon_id: int | None = None,
             now: datetime | None = None, limit: int = 200) -> list[CallbackListRow]:
        """Tasks for the console: `active` (open, placing, placed, failed) oldest due
        first; `overdue` the active ones already due; `mine` the active ones owned
        by `surgeon_id`; `closed` done and cancelled, newest first; `all`.
        Active tasks always come before closed ones."""
        if view not in VIEWS:
            raise ValueError(f"view is one of {', '.join(VIEWS)}")
        if not 1 <= limit <= 1000:
            raise ValueError("limit is 1..1000")
        now = now or self._clock()
        active = [s.value for s in CallbackStatus if s.active]
        t = CallbackRow.__table__
        query = (select(t, CaseRow.caller_raw_safe, CaseRow.started_at.label("case_started_at"),
                        SurgeonRow.name.label("owner_name"), TeamRow.name_zh, TeamRow.name_en)
                 .join(CaseRow, CaseRow.case_id == t.c.case_id)
                 .outerjoin(SurgeonRow, SurgeonRow.id == t.c.owner_surgeon_id)
                 .outerjoin(TeamRow, TeamRow.code == t.c.team))
        is_active = t.c.status.in_(active)
        if view == "active":
            query = query.where(is_active)
        elif view == "overdue":
            query = query.where(is_active, t.c.due_at <= now)
        elif view == "mine":
            query = query.where(is_active, t.c.owner_surgeon_id == (surgeon_id or 0))
        elif view == "closed":
            query = query.where(~is_active)
        if view == "closed":
            query = query.order_by(t.c.closed_at.desc(), t.c.id.desc())
        else:
            query = query.order_by(sql_case((is_active, 0), else_=1), t.c.due_at, t.c.id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [CallbackListRow(_task(r), r["caller_raw_safe"], r["case_started_at"],
                                r["owner_name"], r["name_zh"], r["name_en"]) for r in rows]

    def linked_cases(self, case_id: str) -> list[tuple[str, datetime, str]]:
        """The callback cases placed for `case_id`: (case id, started, outcome), oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(CaseRow.case_id, CaseRow.started_at, CaseRow.outcome)
                                .where(CaseRow.linked_case_id == case_id)
                                .order_by(CaseRow.started_at, CaseRow.case_id)).all()
        return [(r.case_id, r.started_at, r.outcome) for r in rows]

    # -- changes (each one transaction, audited) -----------------------------
    def _change(self, task_id: int, transition: Callable[[CallbackTask], CallbackTask],
                actor: str, action: str, **detail: Any) -> CallbackTask:
        at = self._clock()
        with self._engine.begin() as conn:
            t = CallbackRow.__table__
            row = conn.execute(select(t).where(t.c.id == task_id)
                               .with_for_update()).mappings().first()
            if row is None:
                raise UnknownCallback(task_id)
            before = _task(row)
            after = transition(before)
            done = conn.execute(
                update(t).where(t.c.id == task_id, t.c.status == before.status.value,
                                t.c.attempts == before.attempts)
                .values(**_row(after)))
            if done.rowcount != 1:
                raise Changed(f"callback {task_id} changed meanwhile; reload and try again")
            _audit(conn, at, actor, action, task_id, status=[before.status.value,
                                                             after.status.value], **detail)
        return after

    def _check_surgeon(self, surgeon_id: int | None) -> None:
        if surgeon_id is not None:
            with self._engine.connect() as conn:
                if conn.execute(select(SurgeonRow.id).where(SurgeonRow.id == surgeon_id)).first() \
                        is None:
                    raise CallbackError(f"no surgeon {surgeon_id}")

    def assign(self, task_id: int, surgeon_id: int | None, actor: str) -> CallbackTask:
        """A new owner (a surgeon id; None: nobody)."""
        self._check_surgeon(surgeon_id)
        return self._change(task_id, lambda task: cb.assign(task, surgeon_id), actor,
                            "callback_assign", owner=surgeon_id)

    def request_placement(self, task_id: int, actor: str,
                          surgeon_id: int | None = None) -> CallbackTask:
        """open/failed → placing; the service picks the request up within a second or two."""
        self._check_surgeon(surgeon_id)
        at = self._clock()
        return self._change(task_id, lambda task: cb.request_placement(task, at, actor, surgeon_id),
                            actor, "callback_place", surgeon=surgeon_id)

    def close(self, task_id: int, actor: str, note: str, cancelled: bool = False) -> CallbackTask:
        at = self._clock()
        return self._change(task_id, lambda task: cb.close(task, at, actor, note, cancelled),
                            actor, "callback_cancel" if cancelled else "callback_close",
                            chars=len(note.strip()))

    # -- the service's side ------------------------------------------------
    def requests(self) -> list[CallbackTask]:
        """Placement requests waiting for the service (status placing), oldest first."""
        t = CallbackRow.__table__
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.status == CallbackStatus.PLACING.value)
                                .order_by(t.c.placed_at, t.c.id)).mappings().all()
        return [_task(r) for r in rows]

    def take(self, task_id: int) -> Placement | None:
        """Take one placement request: placing → placed, exactly once across processes.

        None when someone else took it, it is no longer requested, or the
        surgeon to ring has no usable phone (then the task goes back to open
        with a note). A request older than REQUEST_TTL expires back to open.
        """
        at = self._clock()
        task = self.get(task_id)
        if task is None or task.status is not CallbackStatus.PLACING:
            return None
        if cb.request_expired(task, at):
            self._result(task_id, PlacementOutcome.EXPIRED, None)
            return None
        with self._engine.connect() as conn:
            surgeon = conn.execute(select(SurgeonRow).where(
                SurgeonRow.id == task.owner_surgeon_id)).first()
        if surgeon is None or not _PHONE.fullmatch(surgeon.phone or ""):
            self._result(task_id, PlacementOutcome.FAILED, None)
            return None
        try:
            taken = self._change(task_id, lambda t: cb.start_placing(t, at), SERVICE_ACTOR,
                                 "callback_originate", surgeon=surgeon.id)
        except (Changed, CallbackError):
            return None
        return Placement(taken, surgeon.id, surgeon.name, surgeon.phone)

    def record_result(self, task_id: int, outcome: PlacementOutcome,
                      callback_case_id: str | None = None) -> CallbackTask | None:
        """How the placement ended; None if the task was no longer being placed
        (the result of a placement already settled is not applied twice)."""
        return self._result(task_id, outcome, callback_case_id)

    def _result(self, task_id: int, outcome: PlacementOutcome,
                callback_case_id: str | None) -> CallbackTask | None:
        at = self._clock()
        try:
            return self._change(task_id, lambda t: cb.record_result(t, at, outcome, callback_case_id),
                                SERVICE_ACTOR, "callback_result", outcome=outcome.value,
                                callback_case=callback_case_id)
        except (cb.NotPlacing, Changed, UnknownCallback):
            return None

    def set_callback_case(self, task_id: int, case_id: str) -> bool:
        """Name the case of the placement under way (the surgeon answered)."""
        t = CallbackRow.__table__
        with self._engine.begin() as conn:
            done = conn.execute(update(t).where(
                t.c.id == task_id, t.c.status.in_([CallbackStatus.PLACED.value]))
                .values(callback_case_id=case_id)).rowcount
            if done:
                _audit(conn, self._clock(), SERVICE_ACTOR, "callback_case", task_id, case=case_id)
        return bool(done)

    def settle_interrupted(self, keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Tasks left `placed` by a service that stopped (or lost AMI) mid-placement,
        except those in `keep` (still tracked): back to open as outcome unknown --
        never placed again by themselves. Their ids."""
        t = CallbackRow.__table__
        with self._engine.connect() as conn:
            ids = [r.id for r in conn.execute(select(t.c.id).where(
                t.c.status == CallbackStatus.PLACED.value))]
        settled = []
        for task_id in ids:
            if task_id not in keep and self._result(task_id, PlacementOutcome.UNKNOWN, None):
                settled.append(task_id)
        return settled

    def expire_requests(self) -> list[int]:
        """Placement requests nobody took within REQUEST_TTL: back to open. Their ids."""
        now = self._clock()
        expired = []
        for task in self.requests():
            if cb.request_expired(task, now) and self._result(task.id, PlacementOutcome.EXPIRED,
                                                              None):
                expired.append(task.id)
        return expired


__all__ = ["CallbackListRow", "CallbackStore", "Changed", "Placement", "UnknownCallback",
           "VIEWS", "create_for_case"]
