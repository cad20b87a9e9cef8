"""The partner-hospital directory in the database: read, import, numbers, figures.

    store = HospitalStore(engine)
    plan = store.plan_import(data)              # network.hospitals.parse_hospital_csv
    store.apply(plan, actor="cli:root")         # one transaction, one audit_log row

Every write is one transaction that also writes its `audit_log` row (subject
"hospital"), so the change and its trail stand or fall together.
`network_version()` moves whenever the registered numbers or the block list
change; the service's roster cache polls it (through
`RosterRepository.version()`) to pick up a newly registered number within
seconds.

Writes to the numbers and to the block list (`db.blocklist`) take one lock
(`network_lock`) before they check each other: a number is never registered
and blocked at once, whatever runs concurrently.

A hospital that cases or referrals point at is never deleted: "removing" it
(an import with `remove_missing`) drops its numbers and contacts, so its
callers are no longer recognised, and keeps its name for the history.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, text, update

from cases.figures import check_range
from db.figures import CASES, _reach, local_bounds
from db.models import (
    AuditRow,
    BlockedNumberRow,
    HospitalContactRow,
    HospitalPhoneRow,
    PartnerHospitalRow,
    ReferralRow,
)
from db.users import audit_row
from network.hospitals import (
    Contact,
    Hospital,
    HospitalError,
    HospitalPlan,
    check_number,
    parse_hospital_csv,
)

SUBJECT = "hospital"
_LOCK_KEY = 96608_0001  # pg_advisory_xact_lock key shared with db.blocklist


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HospitalStoreError(Exception):
    """A write refused; `message_zh` says it in Chinese."""

    def __init__(self, message: str, message_zh: str):
        super().__init__(message)
        self.message, self.message_zh = message, message_zh

    def __str__(self) -> str:
        return f"{self.message} / {self.message_zh}"


class UnknownHospital(HospitalStoreError):
    pass


class NumberTaken(HospitalStoreError):
    """The number is registered already, or on the block list."""


class PlanRefused(HospitalStoreError):
    """The plan has errors, or no longer fits the directory (re-plan and look again)."""


@dataclass(frozen=True)
class HospitalSummary:
    """A line of the directory list."""

    id: int
    name: str
    level: str
    city: str
    numbers: tuple[str, ...]
    contacts: int
    calls: int  # in the range asked for


@dataclass(frozen=True)
class HospitalReport:
    """One hospital's figures for local days [start, end]; see `HospitalStore.figures`."""

    hospital_id: int
    start: date
    end: date
    calls: int
    connected: int
    median_s: float | None  # time to reach a surgeon, answered calls
    p90_s: float | None
    referrals: int
    last_call_at: datetime | None  # ever, not only in the range

    @property
    def connected_share(self) -> float | None:
        return self.connected / self.calls if self.calls else None


@dataclass(frozen=True)
class HospitalCase:
    case_id: str
    started_at: datetime
    team: str | None
    outcome: str
    connected_surgeon_id: int | None


def network_lock(conn: Connection) -> None:
    """Serialise writers of hospital numbers and the block list within this transaction.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write as the
    first statement takes the database's write lock (waiting on
    busy_timeout) before anything is read, so the check and the write see
    the same state.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    else:
        conn.execute(delete(HospitalPhoneRow).where(text("0 = 1")))


NETWORK_SUBJECTS = ("hospital", "blocklist")  # audit subjects that move the routing version


def audit_version_column(subjects: tuple[str, ...] = NETWORK_SUBJECTS) -> Any:
    """The newest audit_log id about `subjects` (0: none yet), as a scalar subquery.

    Every directory and block-list write adds such a row in its own
    transaction, and audit rows are never deleted, so this only grows: no
    change is missed between a probe and a load. `id + 0` is deliberate: with
    a plain max(id) PostgreSQL walks the primary key backwards past every
    sign-in until it meets a matching row (measured: 25 ms behind 200,000
    sign-ins); `id + 0` makes it read the few matching rows through the
    (subject, subject_id) index instead (0.2 ms). A change written with plain
    SQL, bypassing the stores, is seen at the cache's next full reload.
    """
    return (select(func.coalesce(func.max(AuditRow.id + 0), 0))
            .where(AuditRow.subject.in_(subjects)).scalar_subquery())


def network_version(conn: Connection) -> int:
    """The newest audit entry about hospitals or the block list (0: none yet)."""
    return int(conn.execute(select(audit_version_column())).scalar_one())


def _load(conn: Connection, ids: Iterable[int] | None = None) -> list[Hospital]:
    hospitals = select(PartnerHospitalRow).order_by(PartnerHospitalRow.id)
    phones = select(HospitalPhoneRow.hospital_id, HospitalPhoneRow.number)
    contacts = select(HospitalContactRow).order_by(HospitalContactRow.id)
    if ids is not None:
        wanted = list(ids)
        hospitals = hospitals.where(PartnerHospitalRow.id.in_(wanted))
        phones = phones.where(HospitalPhoneRow.hospital_id.in_(wanted))
        contacts = contacts.where(HospitalContactRow.hospital_id.in_(wanted))
    numbers: dict[int, list[str]] = {}
    for hospital_id, number in conn.execute(phones):
        numbers.setdefault(hospital_id, []).append(number)
    people: dict[int, list[Contact]] = {}
    for row in conn.execute(contacts).mappings():
        people.setdefault(row["hospital_id"], []).append(
            Contact(row["name"], row["title"] or "", row["phone"] or ""))
    return [Hospital(r.id, r.name, r.level, r.city, tuple(sorted(numbers.get(r.id, ()))),
                     tuple(people.get(r.id, ())))
            for r in conn.execute(hospitals)]


def _blocked(conn: Connection, numbers: Iterable[str] | None = None) -> frozenset[str]:
    query = select(BlockedNumberRow.number).where(BlockedNumberRow.removed_at.is_(None))
    if numbers is not None:
        query = query.where(BlockedNumberRow.number.in_(list(numbers)))
    return frozenset(conn.execute(query).scalars())


class HospitalStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    # ------------------------------------------------------------------ reading

    def all(self) -> list[Hospital]:
        """Every hospital with its numbers and contacts, by id."""
        with self._engine.connect() as conn:
            return _load(conn)

    def get(self, hospital_id: int) -> Hospital | None:
        with self._engine.connect() as conn:
            found = _load(conn, [hospital_id])
        return found[0] if found else None

    def owner_of(self, number: str) -> Hospital | None:
        """The hospital a (normalised) number is registered to."""
        with self._engine.connect() as conn:
            hospital_id = conn.execute(select(HospitalPhoneRow.hospital_id)
                                       .where(HospitalPhoneRow.number == number)).scalar()
            found = _load(conn, [hospital_id]) if hospital_id is not None else []
        return found[0] if found else None

    def summaries(self, since: datetime, until: datetime) -> list[HospitalSummary]:
        """The directory list: each hospital, its numbers, contact count and calls in [since, until)."""
        calls = (select(CASES.c.partner_hospital_id.label("h"), func.count().label("n"))
                 .where(CASES.c.partner_hospital_id.is_not(None), CASES.c.started_at >= since,
                        CASES.c.started_at < until)
                 .group_by(CASES.c.partner_hospital_id).subquery())
        contacts = (select(HospitalContactRow.hospital_id.label("h"), func.count().label("n"))
                    .group_by(HospitalContactRow.hospital_id).subquery())
        h = PartnerHospitalRow
        query = (select(h.id, h.name, h.level, h.city, func.coalesce(calls.c.n, 0),
                        func.coalesce(contacts.c.n, 0))
                 .outerjoin(calls, calls.c.h == PartnerHospitalRow.id)
                 .outerjoin(contacts, contacts.c.h == PartnerHospitalRow.id)
                 .order_by(PartnerHospitalRow.id))
        with self._engine.connect() as conn:
            numbers: dict[int, list[str]] = {}
            for hospital_id, number in conn.execute(select(HospitalPhoneRow.hospital_id,
                                                           HospitalPhoneRow.number)):
                numbers.setdefault(hospital_id, []).append(number)
            return [HospitalSummary(i, name, level, city, tuple(sorted(numbers.get(i, ()))),
                                    n_contacts, n_calls)
                    for i, name, level, city, n_calls, n_contacts in conn.execute(query)]

    def version(self) -> int:
        """Grows with every write of the directory or the block list."""
        with self._engine.connect() as conn:
            return network_version(conn)

    # ------------------------------------------------------------------ import

    def plan_import(self, data: bytes, *, remove_missing: bool = False) -> HospitalPlan:
        """What importing the file would do, against the directory and block list as they are now."""
        with self._engine.connect() as conn:
            existing = _load(conn)
            blocked = _blocked(conn)
        return parse_hospital_csv(data, existing, blocked, remove_missing=remove_missing)

    def apply(self, plan: HospitalPlan, actor: str) -> dict[str, int]:
        """Write a plan in one transaction with its audit row; the plan's summary.

        Refuses (PlanRefused) a plan with errors, and one that no longer fits:
        a hospital it changes was changed since it was planned, one it adds
        exists now, or one of its numbers was registered elsewhere or blocked
        in the meantime. Nothing is written then.
        """
        if not plan.ok:
            raise PlanRefused(f"the import has {len(plan.errors)} error(s); nothing was written",
                              f"导入文件有 {len(plan.errors)} 处错误，未写入任何内容")
        now = self._clock()
        after = [*plan.added, *(new for _, new in plan.changed)]
        with self._engine.begin() as conn:
            network_lock(conn)
            self._check_still_fits(conn, plan, after)
            touched = [h.id for h in after] + [h.id for h in plan.removed]
            if touched:
                conn.execute(delete(HospitalPhoneRow).where(HospitalPhoneRow.hospital_id.in_(touched)))
                conn.execute(delete(HospitalContactRow).where(HospitalContactRow.hospital_id.in_(touched)))
            for hospital in plan.added:
                conn.execute(insert(PartnerHospitalRow).values(
                    id=hospital.id, name=hospital.name, level=hospital.level, city=hospital.city))
            for _, hospital in plan.changed:
                conn.execute(update(PartnerHospitalRow).where(PartnerHospitalRow.id == hospital.id)
                             .values(name=hospital.name, level=hospital.level, city=hospital.city))
            self._write_children(conn, after)
            kept = self._remove(conn, plan.removed)
            summary = plan.summary()
            audit_row(conn, now, actor, "import", SUBJECT, "directory", {
                **summary, "kept_for_history": kept,
                "added_ids": [h.id for h in plan.added],
                "changed_ids": [h.id for _, h in plan.changed],
                "removed_ids": [h.id for h in plan.removed]})
        return summary

    def _check_still_fits(self, conn: Connection, plan: HospitalPlan, after: list[Hospital]) -> None:
        ids = [h.id for h in after] + [h.id for h in plan.removed]
        current = {h.id: h for h in _load(conn, ids)} if ids else {}
        stale = [h.id for h in plan.added if h.id in current]
        stale += [before.id for before, _ in plan.changed if current.get(before.id) != before]
        stale += [h.id for h in plan.removed if current.get(h.id) != h]
        if stale:
            raise PlanRefused(
                f"the directory changed since the import was planned (hospitals {sorted(set(stale))}); "
                "plan it again", "名录在预览后已被修改，请重新预览导入")
        numbers = [n for h in after for n in h.numbers]
        if not numbers:
            return
        blocked = _blocked(conn, numbers)
        if blocked:
            raise PlanRefused(f"now on the block list: {', '.join(sorted(blocked))}; plan it again",
                              f"以下号码现已在黑名单中：{'、'.join(sorted(blocked))}；请重新预览导入")
        moving = set(ids)
        elsewhere = conn.execute(select(HospitalPhoneRow.number, HospitalPhoneRow.hospital_id)
                                 .where(HospitalPhoneRow.number.in_(numbers),
                                        HospitalPhoneRow.hospital_id.not_in(moving))).all()
        if elsewhere:
            taken = ", ".join(f"{n} (#{h})" for n, h in elsewhere)
            raise PlanRefused(f"now registered to another hospital: {taken}; plan it again",
                              f"以下号码现已登记在其他医院：{taken}；请重新预览导入")

    @staticmethod
    def _write_children(conn: Connection, hospitals: Iterable[Hospital]) -> None:
        phones = [{"hospital_id": h.id, "number": n} for h in hospitals for n in h.numbers]
        people = [{"hospital_id": h.id, "name": c.name, "title": c.title, "phone": c.phone}
                  for h in hospitals for c in h.contacts]
        if phones:
            conn.execute(insert(HospitalPhoneRow), phones)
        if people:
            conn.execute(insert(HospitalContactRow), people)

    @staticmethod
    def _remove(conn: Connection, hospitals: Iterable[Hospital]) -> list[int]:
        """Delete the hospitals nothing points at; the ids kept for history (numbers already gone)."""
        ids = [h.id for h in hospitals]
        if not ids:
            return []
        used = set(conn.execute(select(CASES.c.partner_hospital_id)
                                .where(CASES.c.partner_hospital_id.in_(ids)).distinct()).scalars())
        used |= set(conn.execute(select(ReferralRow.hospital_id)
                                 .where(ReferralRow.hospital_id.in_(ids)).distinct()).scalars())
        gone = [i for i in ids if i not in used]
        if gone:
            conn.execute(delete(PartnerHospitalRow).where(PartnerHospitalRow.id.in_(gone)))
        return sorted(used)

    # ------------------------------------------------------------------ numbers

    def add_number(self, hospital_id: int, number: str, actor: str) -> str:
        """Register a number to a hospital; the normalised number.

        Raises HospitalError (not a number), UnknownHospital, NumberTaken
        (registered already -- to this hospital or another -- or blocked).
        """
        normal = check_number(number)
        with self._engine.begin() as conn:
            network_lock(conn)
            name = conn.execute(select(PartnerHospitalRow.name)
                                .where(PartnerHospitalRow.id == hospital_id)).scalar()
            if name is None:
                raise UnknownHospital(f"no partner hospital #{hospital_id}", f"合作医院 {hospital_id} 不存在")
            owner = conn.execute(select(HospitalPhoneRow.hospital_id)
                                 .where(HospitalPhoneRow.number == normal)).scalar()
            if owner is not None:
                raise NumberTaken(f"{normal} is registered to hospital #{owner} already",
                                  f"号码 {normal} 已登记在合作医院（编号 {owner}）")
            if _blocked(conn, [normal]):
                raise NumberTaken(f"{normal} is on the block list: remove it from the block list first",
                                  f"号码 {normal} 在黑名单中：请先将其移出黑名单")
            conn.execute(insert(HospitalPhoneRow).values(hospital_id=hospital_id, number=normal))
            audit_row(conn, self._clock(), actor, "add_number", SUBJECT, str(hospital_id),
                      {"number": normal})
        return normal

    def remove_number(self, number: str, actor: str) -> int:
        """Unregister a number; the hospital it belonged to. Raises HospitalError, UnknownHospital."""
        normal = check_number(number)
        with self._engine.begin() as conn:
            network_lock(conn)
            owner = conn.execute(select(HospitalPhoneRow.hospital_id)
                                 .where(HospitalPhoneRow.number == normal)).scalar()
            if owner is None:
                raise UnknownHospital(f"{normal} is not registered to any partner hospital",
                                      f"号码 {normal} 未登记在任何合作医院")
            conn.execute(delete(HospitalPhoneRow).where(HospitalPhoneRow.number == normal))
            audit_row(conn, self._clock(), actor, "remove_number", SUBJECT, str(owner),
                      {"number": normal})
        return owner

    # ------------------------------------------------------------------ figures

    def figures(self, hospital_id: int, start: date, end: date) -> HospitalReport:
        """Calls, answered share, time to reach a surgeon and referrals of local days [start, end].

        The same definitions as the network's figures (`cases.figures`):
        connected = a surgeon pressed 1; time to reach = connected_at -
        started_at, median and 90th percentile by `percentile_cont` on both
        databases. Referrals: rows of `referrals` for this hospital created
        in the range. Raises `cases.figures.RangeError` for a bad range.
        """
        check_range(start, end)
        lo, hi = local_bounds(start, end)
        scope = and_(CASES.c.partner_hospital_id == hospital_id, CASES.c.started_at >= lo,
                     CASES.c.started_at < hi)
        with self._engine.connect() as conn:
            calls, connected = conn.execute(
                select(func.count(), func.count().filter(CASES.c.outcome == "connected")).where(scope)).one()
            reach = _reach(conn, scope).get(("all", None))
            referrals = conn.execute(select(func.count()).select_from(ReferralRow).where(
                ReferralRow.hospital_id == hospital_id, ReferralRow.created_at >= lo,
                ReferralRow.created_at < hi)).scalar_one()
            last = conn.execute(select(func.max(CASES.c.started_at))
                                .where(CASES.c.partner_hospital_id == hospital_id)).scalar()
        return HospitalReport(hospital_id, start, end, calls, connected,
                              reach.median_s if reach else None, reach.p90_s if reach else None,
                              referrals, last)

    def recent_cases(self, hospital_id: int, limit: int = 20) -> list[HospitalCase]:
        """The hospital's newest cases, newest first."""
        query = (select(CASES.c.case_id, CASES.c.started_at, CASES.c.team, CASES.c.outcome,
                        CASES.c.connected_surgeon_id)
                 .where(CASES.c.partner_hospital_id == hospital_id)
                 .order_by(CASES.c.started_at.desc(), CASES.c.case_id).limit(max(1, min(limit, 200))))
        with self._engine.connect() as conn:
            return [HospitalCase(*row) for row in conn.execute(query)]


__all__ = ["HospitalCase", "HospitalError", "HospitalReport", "HospitalStore", "HospitalStoreError",
           "HospitalSummary", "NumberTaken", "PlanRefused", "UnknownHospital",
           "audit_version_column", "network_lock", "network_version"]
