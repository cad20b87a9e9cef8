"""A demo network (4 teams, 16 surgeons, 5 partner hospitals) and roster writers.

Everything is deterministic: ids and phones are constants, and who holds which
role on a day depends only on that day's date, so seeding again (even from
another `now`) adds missing days and changes nothing else.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, insert

from db.models import HospitalContactRow, HospitalPhoneRow, PartnerHospitalRow
from db.repo import upsert, write_roster
from oncall.lookup import on_call
from oncall.model import HOTLINE_TZ, Rank, Role, Roster, Shift, Surgeon, Team

SHIFT_START = time(8, 0)  # the day shift hands over at 08:00 Asia/Shanghai
SEED_BACK = timedelta(days=1)
SEED_AHEAD = timedelta(days=14)


@dataclass(frozen=True)
class PartnerHospital:
    id: int
    name: str
    level: str
    city: str
    numbers: tuple[str, ...]  # registered caller numbers, national form
    contacts: tuple[tuple[str, str, str], ...] = ()  # contact doctors: (name, title, phone)


DEMO_TEAMS: tuple[Team, ...] = (
    Team("facial", "颌面部创伤", "Facial & craniomaxillofacial trauma"),
    Team("replant", "断肢(指)再植", "Limb & digit replantation"),
    Team("burns", "皮肤软组织缺损 / 烧伤", "Skin & soft tissue / burns"),
    Team("referral", "转诊转运", "Referral & transfer"),
)

_NAMES = {
    "facial": ("王建国", "李明", "张伟", "刘洋"),
    "replant": ("陈志强", "杨帆", "赵磊", "黄婷"),
    "burns": ("周海涛", "吴静", "徐鹏", "孙丽"),
    "referral": ("马永刚", "朱晓东", "胡敏", "郭涛"),
}
# Per team: the chief is department head every day; the other three rotate.
_RANKS = (Rank.CHIEF, Rank.ATTENDING, Rank.ATTENDING, Rank.RESIDENT)
_ROTATING_ROLES = (Role.PRIMARY, Role.BACKUP, Role.ATTENDING)


def _surgeon_id(team_index: int, member: int) -> int:
    return (team_index + 1) * 100 + member + 1  # facial 101..104, replant 201..204, ...


DEMO_SURGEONS: tuple[Surgeon, ...] = tuple(
    Surgeon(
        id=_surgeon_id(t, m),
        name=_NAMES[team.code][m],
        phone=f"1380000{_surgeon_id(t, m):04d}",  # 13800000101 ...: fictitious, distinct
        rank=_RANKS[m],
    )
    for t, team in enumerate(DEMO_TEAMS)
    for m in range(4)
)
DEMO_TEAM_SURGEONS: dict[str, tuple[int, ...]] = {
    team.code: tuple(_surgeon_id(t, m) for m in range(4)) for t, team in enumerate(DEMO_TEAMS)
}

DEMO_PARTNER_NUMBER = "043188888888"
DEMO_PARTNER_HOSPITAL_ID = 1
DEMO_HOSPITALS: tuple[PartnerHospital, ...] = (
    # Contact doctors are fictitious people with fictitious numbers (13910000xxx).
    PartnerHospital(1, "长春市中心医院", "三级甲等", "长春市", (DEMO_PARTNER_NUMBER, "043188888801"), (
        ("王立军", "急诊科主任", "13910000101"), ("刘芳", "手外科副主任医师", "13910000102"))),
    PartnerHospital(2, "吉林市中心医院", "三级甲等", "吉林市", ("043288888802",), (
        ("孙红", "急诊科主任", "13910000201"), ("赵海洋", "骨科主治医师", "13910000202"))),
    PartnerHospital(3, "延边大学附属医院", "三级甲等", "延吉市", ("043388888803",), (
        ("金哲", "烧伤整形科主任", "13910000301"),)),
    PartnerHospital(4, "四平市中心人民医院", "三级甲等", "四平市", ("043488888804",), (
        ("周伟", "急诊科副主任", "13910000401"), ("郑丽", "总值班", "13910000402"))),
    PartnerHospital(5, "通化市人民医院", "二级甲等", "通化市", ("043588888805",), (
        ("高明", "外科主任", "13910000501"),)),
)


def demo_shifts(now: datetime) -> tuple[Shift, ...]:
    """24 h shifts from 08:00 Asia/Shanghai, covering [now - 1 day, now + 14 days)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("demo_shifts needs a timezone-aware time")
    tz = ZoneInfo(HOTLINE_TZ)
    first = now - SEED_BACK
    local = first.astimezone(tz)
    day = local.date() if local.time() >= SHIFT_START else local.date() - timedelta(days=1)
    shifts: list[Shift] = []
    while True:
        start = datetime.combine(day, SHIFT_START, tz)
        if start >= now + SEED_AHEAD:
            break
        end = datetime.combine(day + timedelta(days=1), SHIFT_START, tz)
        turn = day.toordinal()
        for team in DEMO_TEAMS:
            chief, *others = DEMO_TEAM_SURGEONS[team.code]
            shifts.append(Shift(team.code, chief, Role.DEPARTMENT_HEAD, start, end))
            for i, role in enumerate(_ROTATING_ROLES):
                surgeon_id = others[(i + turn) % len(others)]
                shifts.append(Shift(team.code, surgeon_id, role, start, end))
        day += timedelta(days=1)
    return tuple(shifts)


def demo_roster(now: datetime) -> Roster:
    """The demo network's roster as `seed_demo(engine, now)` writes it."""
    return Roster(
        teams={team.code: team for team in DEMO_TEAMS},
        surgeons={surgeon.id: surgeon for surgeon in DEMO_SURGEONS},
        shifts=demo_shifts(now),
    )


def demo_chain_phones(at: datetime) -> dict[str, list[str]]:
    """Per team, the phones the demo chain rings at `at`, in ring order."""
    roster = demo_roster(at)
    return {
        team.code: [member.surgeon.phone for member in on_call(roster, team.code, at)]
        for team in DEMO_TEAMS
    }


def seed_roster(
    engine: Engine, teams: Iterable[Team], surgeons: Iterable[Surgeon], shifts: Iterable[Shift]
) -> None:
    """Write (upsert) an arbitrary roster, in one transaction."""
    with engine.begin() as conn:
        write_roster(conn, teams, surgeons, shifts)


def seed_partners(engine: Engine, hospitals: Iterable[PartnerHospital]) -> None:
    """Write (upsert) partner hospitals and their registered numbers."""
    hospitals = tuple(hospitals)
    with engine.begin() as conn:
        upsert(conn, PartnerHospitalRow.__table__, [  # type: ignore[arg-type]
            {"id": h.id, "name": h.name, "level": h.level, "city": h.city} for h in hospitals
        ], ["id"])
        upsert(conn, HospitalPhoneRow.__table__, [  # type: ignore[arg-type]
            {"hospital_id": h.id, "number": number} for h in hospitals for number in h.numbers
        ], ["number"])
        # Contacts have no natural key: a hospital seeded with contacts gets exactly these.
        with_contacts = [h for h in hospitals if h.contacts]
        if with_contacts:
            conn.execute(delete(HospitalContactRow).where(
                HospitalContactRow.hospital_id.in_([h.id for h in with_contacts])))
            conn.execute(insert(HospitalContactRow), [
                {"hospital_id": h.id, "name": name, "title": title, "phone": phone}
                for h in with_contacts for name, title, phone in h.contacts])


def seed_demo(engine: Engine, now: datetime) -> None:
    """Write the demo network; idempotent."""
    roster = demo_roster(now)
    seed_roster(engine, roster.teams.values(), roster.surgeons.values(), roster.shifts)
    seed_partners(engine, DEMO_HOSPITALS)
