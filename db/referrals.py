"""Referrals in the database: made from a case, changed with optimistic concurrency.

Every change is one transaction that writes, together or not at all:
- the `referrals` row (its `version` + 1; an UPDATE guarded by the version the
  client saw, so of two people changing the same referral one wins and the
  other gets `StaleReferral` with nothing written);
- a `referral_events` row for a status change (and for the first `requested`);
- an `audit_log` row (subject "referral", the actor as given: "user:<name>",
  "api:<token name>", "cli:<user>");
- `referral_status` notices in the outbox (`notices`), one to the receiving
  surgeon if there is one and one to the duty desk, keyed
  `referral:<id>:v<version>:<surgeon id|desk>` and inserted with ON CONFLICT
  DO NOTHING, so a retried write never sends twice.

The decisions (which status may follow which, what the essentials may hold)
are `network.referrals`'; this module only reads, asks, and writes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, case, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from db.models import (
    CaseRow,
    DialAttemptRow,
    NoticeRow,
    PartnerHospitalRow,
    ReferralEventRow,
    ReferralRow,
    SurgeonRow,
    TeamRow,
)
from db.users import audit_row
from network.referrals import (
    OPEN,
    SEX_LABELS,
    Patient,
    Referral,
    ReferralError,
    ReferralEvent,
    ReferralStatus,
    Sex,
    elapsed_words,
    new_referral,
    since_injury,
    transition,
)
from oncall.model import HOTLINE_TZ
from oncall.notices import DESK, REFERRAL_STATUS, Notice, clean, fmt_en, fmt_zh

UTC = timezone.utc
LOCAL = ZoneInfo(HOTLINE_TZ)
LIST_LIMIT = 500
SUBJECT = "referral"


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- errors


class ReferralNotFound(ReferralError):
    code = "not_found"

    def __init__(self, referral_id: object) -> None:
        super().__init__(f"no referral {str(referral_id)[:20]}", "转诊记录不存在")


class CaseNotFound(ReferralError):
    code = "case_not_found"

    def __init__(self, case_id: str) -> None:
        super().__init__("no such case", "病例记录不存在")
        self.case_id = case_id


class AlreadyReferred(ReferralError):
    """The case is a referral already (one referral per case)."""

    code = "already_referred"

    def __init__(self, referral_id: int | None) -> None:
        super().__init__(f"the case is already referral {referral_id}", "该病例已转为转诊")
        self.referral_id = referral_id


class StaleReferral(ReferralError):
    """Someone changed the referral since the client read it: nothing was written."""

    code = "stale_version"

    def __init__(self, seen: int, current: int) -> None:
        super().__init__(f"the referral changed since you read it (version {seen}, now "
                         f"{current}); reload and try again",
                         "该转诊已被他人修改，请刷新后重试")
        self.seen = seen
        self.current = current


class InvalidAssignment(ReferralError):
    code = "invalid_assignment"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Listed:
    """A referral and the names its row keeps only as ids."""

    referral: Referral
    hospital_name: str | None
    team_name_zh: str | None
    team_name_en: str | None
    surgeon_name: str | None


def _patient(row: Any) -> Patient:
    sex = row.patient_sex if row.patient_sex in {s.value for s in Sex} else Sex.UNKNOWN.value
    return Patient(row.patient_age, Sex(sex), row.injury or "", row.injured_at)


def _referral(row: Any, events: Iterable[ReferralEvent] = ()) -> Referral:
    return Referral(row.id, row.case_id, row.hospital_id, ReferralStatus(row.status), row.team,
                    row.surgeon_id, _patient(row), row.created_at, row.updated_at, row.version,
                    tuple(events))


def _events(conn: Connection, referral_id: int) -> list[ReferralEvent]:
    e = ReferralEventRow
    rows = conn.execute(select(e).where(e.referral_id == referral_id).order_by(e.at, e.id))
    return [ReferralEvent(r.at, ReferralStatus(r.status), r.actor, r.note or "") for r in rows]


def _listed_query():
    r = ReferralRow
    return (select(r, PartnerHospitalRow.name.label("hospital_name"),
                   TeamRow.name_zh.label("team_name_zh"), TeamRow.name_en.label("team_name_en"),
                   SurgeonRow.name.label("surgeon_name"))
            .outerjoin(PartnerHospitalRow, PartnerHospitalRow.id == r.hospital_id)
            .outerjoin(TeamRow, TeamRow.code == r.team)
            .outerjoin(SurgeonRow, SurgeonRow.id == r.surgeon_id))


def _listed(row: Any, events: Iterable[ReferralEvent] = ()) -> Listed:
    return Listed(_referral(row, events), row.hospital_name, row.team_name_zh,
                  row.team_name_en, row.surgeon_name)


def visible_to(surgeon_id: int):
    """SQL: the referrals a surgeon may see and act on -- those assigned to them, and
    those of cases they took part in (rung, or connected), as the case page rules."""
    r = ReferralRow
    took_part = exists(select(DialAttemptRow.case_id).where(
        DialAttemptRow.case_id == r.case_id, DialAttemptRow.surgeon_id == surgeon_id))
    connected = exists(select(CaseRow.case_id).where(
        CaseRow.case_id == r.case_id, CaseRow.connected_surgeon_id == surgeon_id))
    return or_(r.surgeon_id == surgeon_id, took_part, connected)


# --------------------------------------------------------------------------- the store


class ReferralStore:
    """Referrals: made from cases, read, and changed (see the module docstring)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # ------------------------------------------------------------------ reads

    def get(self, referral_id: int) -> Listed | None:
        """The referral with its events (oldest first) and names, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(_listed_query().where(ReferralRow.id == referral_id)).first()
            return _listed(row, _events(conn, row.id)) if row is not None else None

    def get_by_case(self, case_id: str) -> Listed | None:
        with self._engine.connect() as conn:
            row = conn.execute(_listed_query().where(ReferralRow.case_id == case_id)).first()
            return _listed(row, _events(conn, row.id)) if row is not None else None

    def list(self, *, status: ReferralStatus | Iterable[ReferralStatus] | None = None,
             hospital_id: int | None = None, team: str | None = None, open_only: bool = False,
             only_surgeon: int | None = None, limit: int = LIST_LIMIT) -> list[Listed]:
        """Referrals matching every filter given: open ones first, then the latest change first.

        `only_surgeon`: just the referrals that surgeon may see (`visible_to`).
        Events are not loaded (`get` has them).
        """
        r = ReferralRow
        query = _listed_query()
        if status is not None:
            wanted = [status] if isinstance(status, ReferralStatus) else list(status)
            query = query.where(r.status.in_([s.value for s in wanted]))
        if hospital_id is not None:
            query = query.where(r.hospital_id == hospital_id)
        if team is not None:
            query = query.where(r.team == team)
        if open_only:
            query = query.where(r.status.in_([s.value for s in OPEN]))
        if only_surgeon is not None:
            query = query.where(visible_to(only_surgeon))
        is_open = case((r.status.in_([s.value for s in OPEN]), 0), else_=1)
        query = query.order_by(is_open, r.updated_at.desc(), r.id.desc()).limit(max(1, limit))
        with self._engine.connect() as conn:
            return [_listed(row) for row in conn.execute(query)]

    def may_see(self, referral_id: int, surgeon_id: int) -> bool:
        """Whether a surgeon may see (and act on) the referral (`visible_to`)."""
        with self._engine.connect() as conn:
            return conn.execute(select(ReferralRow.id).where(
                ReferralRow.id == referral_id, visible_to(surgeon_id))).first() is not None

    # ------------------------------------------------------------------ writes

    def create(self, case_id: str, *, actor: str, patient: Patient | None = None,
               team: str | None = None, surgeon_id: int | None = None, note: str = "",
               ip: str = "") -> Referral:
        """A referral made from the case: the hospital from the case, the team the case's
        unless `team` is given. Raises CaseNotFound, AlreadyReferred, InvalidAssignment."""
        now = self._clock()
        try:
            return self._create(case_id, now, actor=actor, patient=patient, team=team,
                                surgeon_id=surgeon_id, note=note, ip=ip)
        except IntegrityError:
            # Two people referred the same case at once: the unique key on
            # case_id let one in; the other's transaction is rolled back whole
            # (no savepoint: on SQLite, releasing an outermost savepoint would
            # commit the half-written referral).
            with self._engine.connect() as conn:
                existing = conn.execute(select(ReferralRow.id)
                                        .where(ReferralRow.case_id == case_id)).scalar()
            if existing is None:
                raise
            raise AlreadyReferred(existing) from None

    def _create(self, case_id: str, now: datetime, *, actor: str, patient: Patient | None,
                team: str | None, surgeon_id: int | None, note: str, ip: str) -> Referral:
        with self._engine.begin() as conn:
            found = conn.execute(select(CaseRow.partner_hospital_id, CaseRow.team)
                                 .where(CaseRow.case_id == case_id)).first()
            if found is None:
                raise CaseNotFound(case_id)
            existing = conn.execute(select(ReferralRow.id)
                                    .where(ReferralRow.case_id == case_id)).scalar()
            if existing is not None:
                raise AlreadyReferred(existing)
            chosen_team = team if team is not None else found.team
            if team is not None or surgeon_id is not None:
                _check_assignment(conn, team, surgeon_id)
            made = new_referral(case_id=case_id, hospital_id=found.partner_hospital_id,
                                team=chosen_team, surgeon_id=surgeon_id,
                                patient=patient or Patient(), at=now, actor=actor, note=note)
            p = made.referral.patient
            referral_id = conn.execute(insert(ReferralRow).values(
                case_id=case_id, hospital_id=found.partner_hospital_id,
                status=made.referral.status.value, team=chosen_team,
                surgeon_id=surgeon_id, patient_age=p.age, patient_sex=p.sex.value,
                injury=p.injury, injured_at=p.injured_at, created_at=now,
                updated_at=now, version=1).returning(ReferralRow.id)).scalar_one()
            referral = _with_id(made.referral, referral_id)
            self._event(conn, referral_id, made.event)
            self._audit(conn, now, actor, "referral_create", referral_id, ip,
                        {"case": case_id, "status": referral.status.value, "team": chosen_team,
                         "surgeon": surgeon_id, "version": 1})
            self._notify(conn, referral, now, "create", made.event.note)
        return referral

    def change_status(self, referral_id: int, to: ReferralStatus | str, *, seen_version: int,
                      actor: str, note: str = "", by_surgeon: int | None = None,
                      ip: str = "") -> Referral:
        """Move the referral to `to`. Raises ReferralNotFound, StaleReferral (nothing
        written), IllegalTransition / ReasonRequired / InvalidPatient (from the domain)."""
        now = self._clock()
        with self._engine.begin() as conn:
            before = self._current(conn, referral_id, seen_version)
            change = transition(before, to, at=now, actor=actor, note=note, by_surgeon=by_surgeon)
            after = change.referral
            self._write(conn, before, status=after.status.value, surgeon_id=after.surgeon_id,
                        updated_at=now)
            self._event(conn, referral_id, change.event)
            self._audit(conn, now, actor, "referral_status", referral_id, ip,
                        {"from": before.status.value, "to": after.status.value,
                         "version": after.version, "note": change.event.note[:200],
                         **({"surgeon": after.surgeon_id}
                            if after.surgeon_id != before.surgeon_id else {})})
            self._notify(conn, after, now, "status", change.event.note)
        return after

    def assign(self, referral_id: int, *, seen_version: int, team: str | None,
               surgeon_id: int | None, actor: str, ip: str = "") -> Referral:
        """Set the receiving team and surgeon (None clears). Raises ReferralNotFound,
        StaleReferral, InvalidAssignment (an unknown team or surgeon)."""
        now = self._clock()
        with self._engine.begin() as conn:
            before = self._current(conn, referral_id, seen_version)
            _check_assignment(conn, team, surgeon_id)
            after = _bumped(before, now, team=team, surgeon_id=surgeon_id)
            self._write(conn, before, team=team, surgeon_id=surgeon_id, updated_at=now)
            self._audit(conn, now, actor, "referral_assign", referral_id, ip,
                        {"team": [before.team, team], "surgeon": [before.surgeon_id, surgeon_id],
                         "version": after.version})
            self._notify(conn, after, now, "assign", "")
        return after

    def edit_patient(self, referral_id: int, patient: Patient, *, seen_version: int,
                     actor: str, ip: str = "") -> Referral:
        """Replace the patient's essentials (checked already: build them with
        `network.referrals.patient`). Raises ReferralNotFound, StaleReferral."""
        now = self._clock()
        with self._engine.begin() as conn:
            before = self._current(conn, referral_id, seen_version)
            after = _bumped(before, now, patient=patient)
            self._write(conn, before, patient_age=patient.age, patient_sex=patient.sex.value,
                        injury=patient.injury, injured_at=patient.injured_at, updated_at=now)
            old = before.patient
            self._audit(conn, now, actor, "referral_patient", referral_id, ip, {
                "version": after.version,
                "before": {"age": old.age, "sex": old.sex.value, "injury": old.injury,
                           "injured_at": old.injured_at},
                "after": {"age": patient.age, "sex": patient.sex.value,
                          "injury": patient.injury, "injured_at": patient.injured_at}})
            self._notify(conn, after, now, "patient", "")
        return after

    # ------------------------------------------------------------------ inside a transaction

    def _current(self, conn: Connection, referral_id: int, seen_version: int) -> Referral:
        # Take the row's write lock before reading it, so two writers queue
        # instead of both reading the same version: the second then sees the
        # first one's version and gets StaleReferral. PostgreSQL: FOR UPDATE.
        # SQLite has no row locks; a write that changes nothing takes the
        # database's write lock at once (otherwise, in WAL mode, the second
        # writer's read snapshot would be stale and its write would fail with
        # "database is locked" rather than a clear StaleReferral).
        query = select(ReferralRow).where(ReferralRow.id == referral_id)
        if conn.dialect.name == "sqlite":
            conn.execute(update(ReferralRow).where(ReferralRow.id == referral_id)
                         .values(version=ReferralRow.version))
        else:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise ReferralNotFound(referral_id)
        if row.version != seen_version:
            raise StaleReferral(seen_version, row.version)
        return _referral(row)

    def _write(self, conn: Connection, before: Referral, **values: Any) -> None:
        # Guarded by the version read: a writer that got in between makes this
        # touch no row, and the whole transaction is rolled back.
        done = conn.execute(
            update(ReferralRow)
            .where(ReferralRow.id == before.id, ReferralRow.version == before.version)
            .values(version=before.version + 1, **values)
            .execution_options(preserve_rowcount=True))
        if done.rowcount != 1:
            current = conn.execute(select(ReferralRow.version)
                                   .where(ReferralRow.id == before.id)).scalar()
            raise StaleReferral(before.version, current if current is not None else -1)

    def _event(self, conn: Connection, referral_id: int, event: ReferralEvent) -> None:
        conn.execute(insert(ReferralEventRow).values(
            referral_id=referral_id, at=event.at, status=event.status.value,
            actor=event.actor[:128], note=event.note or None))

    def _audit(self, conn: Connection, at: datetime, actor: str, action: str,
               referral_id: int, ip: str, detail: Mapping[str, Any]) -> None:
        audit_row(conn, at, actor, action, SUBJECT, referral_id, detail, ip=ip)

    def _notify(self, conn: Connection, referral: Referral, now: datetime, what: str,
                note: str) -> None:
        names = conn.execute(
            select(PartnerHospitalRow.name.label("hospital"), SurgeonRow.name.label("surgeon"))
            .select_from(ReferralRow)
            .outerjoin(PartnerHospitalRow, PartnerHospitalRow.id == ReferralRow.hospital_id)
            .outerjoin(SurgeonRow, SurgeonRow.id == ReferralRow.surgeon_id)
            .where(ReferralRow.id == referral.id)).first()
        for notice in referral_notices(referral, now, what=what, note=note,
                                       hospital=names.hospital if names else None,
                                       surgeon=names.surgeon if names else None):
            conn.execute(self._insert(NoticeRow).values(
                key=notice.key, kind=notice.kind, team=notice.team, surgeon_id=notice.surgeon_id,
                due_at=notice.due_at, text_zh=notice.text_zh, text_en=notice.text_en,
                created_at=now, attempts=0).on_conflict_do_nothing(index_elements=["key"]))


def _with_id(referral: Referral, referral_id: int) -> Referral:
    return replace(referral, id=referral_id)


def _bumped(referral: Referral, now: datetime, **changes: Any) -> Referral:
    return replace(referral, updated_at=now, version=referral.version + 1, **changes)


def _check_assignment(conn: Connection, team: str | None, surgeon_id: int | None) -> None:
    if team is not None and conn.execute(
            select(TeamRow.code).where(TeamRow.code == team)).first() is None:
        raise InvalidAssignment(f"no team {team[:32]!r}", "专业组不存在")
    if surgeon_id is not None and conn.execute(
            select(SurgeonRow.id).where(SurgeonRow.id == surgeon_id)).first() is None:
        raise InvalidAssignment(f"no surgeon {surgeon_id}", "医生不存在")


# --------------------------------------------------------------------------- notices


_HEADLINES = {
    "create": ("新转诊申请", "new referral"),
    "status": ("状态更新", "status changed"),
    "assign": ("接收专业组/医生变更", "receiving team or surgeon changed"),
    "patient": ("患者信息更新", "patient's essentials changed"),
}


def referral_notices(referral: Referral, now: datetime, *, what: str, note: str = "",
                     hospital: str | None = None, surgeon: str | None = None) -> list[Notice]:
    """The `referral_status` notices of one change: to the receiving surgeon (if any) and
    to the duty desk, keyed by the referral's id and version. Pure."""
    assert referral.id is not None
    head_zh, head_en = _HEADLINES[what]
    p = referral.patient
    where_zh = clean(hospital) if hospital else "未登记医院"
    where_en = clean(hospital) if hospital else "an unregistered hospital"
    sex_zh, sex_en = SEX_LABELS[p.sex]
    age_zh = f"{p.age}岁" if p.age is not None else "年龄不详"
    age_en = f"{p.age} y" if p.age is not None else "age unknown"
    zh = [f"【96608转诊】{head_zh}：{where_zh}（病例 {referral.case_id}），"
          f"当前状态：{referral.status.label_zh}。",
          f"患者：{sex_zh}，{age_zh}；伤情：{clean(p.injury) or '未填写'}。"]
    en = [f"96608 referral, {head_en}: {where_en} (case {referral.case_id}), "
          f"now {referral.status.label_en}.",
          f"Patient: {sex_en}, {age_en}; injury: {clean(p.injury) or 'not given'}."]
    if p.injured_at is not None:
        ago_zh, ago_en = elapsed_words(since_injury(referral, now))
        zh.append(f"受伤时间：{fmt_zh(p.injured_at, LOCAL)}（伤后{ago_zh}）。")
        en.append(f"Injured {fmt_en(p.injured_at, LOCAL)} ({ago_en} ago).")
    if surgeon:
        zh.append(f"接收医生：{clean(surgeon)}。")
        en.append(f"Receiving surgeon: {clean(surgeon)}.")
    if note:
        zh.append(f"备注：{clean(note)}")
        en.append(f"Note: {clean(note)}")
    text_zh, text_en = "".join(zh), " ".join(en)
    recipients: list[int | None] = ([referral.surgeon_id] if referral.surgeon_id is not None
                                    else []) + [None]
    return [Notice(key=f"referral:{referral.id}:v{referral.version}:"
                       f"{DESK if r is None else r}",
                   kind=REFERRAL_STATUS, team=referral.team, surgeon_id=r, due_at=now,
                   text_zh=text_zh, text_en=text_en)
            for r in recipients]
