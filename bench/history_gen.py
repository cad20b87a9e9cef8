"""A realistic case history for the console benchmarks: N cases into a database. Not a test.

    .venv/bin/python bench/history_gen.py --db-url URL --cases 100000 \
        [--first 2025-01-01 --days 730 --seed 96608]

Migrates the database, writes the reference data (4 teams, 48 surgeons and
their console users, 86 partner hospitals with their phones) and then
`--cases` finished calls spread over `--days` local days from `--first`, in
time order (as the service writes them), with a day-and-night profile:

- callers: 30% partner hospitals (a few big ones call most: Zipf-like
  weights), 60% public, 7% anonymous, 3% invalid caller-IDs; partner
  hospitals take the fast lane to the referral team;
- public callers: facial 32%, replantation 28%, burns 28%, duty nurse 6%,
  6% hang up at the menu (abandoned, no team);
- outcomes (a team's call): 86% connected, 3% the duty nurse after the chain,
  4% voicemail, 6.5% abandoned while ringing, 0.5% static fallback;
- 1-4 dial attempts: the accepting one is the 1st in 72%, 2nd 19%, 3rd 6%,
  4th 3%; time to reach the surgeon log-normal, median 30 s + 25 s per
  earlier attempt (30/55/80/105 s), sigma 0.35;
- notes: 65% of connected calls get a disposition (consultation 50%, advice
  only 20%, referral accepted 15% -- 45% on the referral team --, transfer
  arranged 15%; a tenth of accepted referrals also a transfer), plus 5% plain
  notes; a third of the duty nurse's calls get "advice only".

PostgreSQL is loaded with COPY (psycopg's `cursor.copy`), SQLite with
executemany, in batches of 50,000 cases; then ANALYZE (PostgreSQL: VACUUM
ANALYZE, which autovacuum would do on a live system).
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, insert, select, text  # noqa: E402

from db.models import (  # noqa: E402
    CaseRow,
    HospitalPhoneRow,
    PartnerHospitalRow,
    SurgeonRow,
    TeamRow,
    UserRow,
)
from db.session import make_engine, migrate  # noqa: E402

UTC = timezone.utc
LOCAL = ZoneInfo("Asia/Shanghai")
BATCH = 50_000

TEAMS = (("facial", "颌面部创伤", "Facial trauma", "1"),
         ("replant", "断肢(指)再植", "Replantation", "2"),
         ("burns", "皮肤软组织缺损 / 烧伤", "Skin & soft tissue / burns", "3"),
         ("referral", "转诊转运", "Referral", "4"))
SURGEONS_PER_TEAM = 12
CHAIN_LENGTH = 3  # on call per team and day: primary, backup, attending
HOSPITALS = 86
CITIES = ("长春", "吉林", "四平", "辽源", "通化", "白山", "松原", "白城", "延边")
RANKS = ("resident", "attending", "attending", "chief")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
# Calls per hour of the local day (relative): quiet nights, busy afternoons and evenings.
HOUR_WEIGHTS = (2, 1.5, 1, 1, 1, 1.5, 3, 5, 7, 8, 8, 7, 6, 7, 8, 8, 8, 8, 9, 9, 8, 6, 4, 3)
PUBLIC_TEAMS = (("facial", 0.32), ("replant", 0.28), ("burns", 0.28), ("nurse", 0.06), (None, 0.06))
DEPTH_WEIGHTS = (0.72, 0.19, 0.06, 0.03)
FAILED_OUTCOMES = (("no-answer", 0.70), ("declined", 0.15), ("busy", 0.10), ("failed", 0.05))
NURSE_PHONE = "13900000000"

CASE_COLUMNS = ("case_id", "linkedid", "revision", "caller_number", "caller_class", "caller_raw",
                "caller_raw_safe", "partner_hospital_id", "language", "team", "started_at",
                "connected_at", "connected_surgeon_id", "connected_seq", "ended_at", "hangup_by",
                "outcome", "recording_path", "recording_s", "voicemail_path", "voicemail_at",
                "updated_at")
MENU_COLUMNS = ("case_id", "seq", "at", "choice", "label")
ATTEMPT_COLUMNS = ("case_id", "seq", "kind", "surgeon_id", "name", "phone", "role", "started_at",
                   "ended_at", "ring_s", "answered", "outcome")
NOTE_COLUMNS = ("case_id", "at", "user_id", "surgeon_id", "disposition", "text")
# Which columns hold times (SQLite stores them as naive UTC text in SQLAlchemy's format).
TIME_COLUMNS = {"cases": {10, 11, 14, 20, 21}, "case_menu_events": {2},
                "dial_attempts": {7, 8}, "case_notes": {1}}


@dataclass
class Generated:
    cases: int = 0
    attempts: int = 0
    menu_events: int = 0
    notes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Batch:
    cases: list[tuple] = field(default_factory=list)
    menu: list[tuple] = field(default_factory=list)
    attempts: list[tuple] = field(default_factory=list)
    notes: list[tuple] = field(default_factory=list)


def _pick(rng: random.Random, weighted: tuple) -> object:
    r = rng.random()
    for value, weight in weighted:
        r -= weight
        if r < 0:
            return value
    return weighted[-1][0]


class History:
    """Reference data and a stream of generated cases (deterministic for a seed)."""

    def __init__(self, seed: int, first: date, days: int) -> None:
        self.rng = random.Random(seed)
        self.first = first
        self.days = days
        rng = self.rng
        self.surgeons: dict[int, tuple[str, str, str]] = {}  # id -> (name, phone, rank)
        self.members: dict[str, list[int]] = {}
        next_id = 101
        for code, *_ in TEAMS:
            self.members[code] = []
            for k in range(SURGEONS_PER_TEAM):
                name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
                self.surgeons[next_id] = (name, f"138{next_id:08d}", RANKS[k % len(RANKS)])
                self.members[code].append(next_id)
                next_id += 1
        self.hospitals = [(h, f"合作医院{h:02d}", "二级" if h % 3 else "三级", CITIES[h % len(CITIES)])
                          for h in range(1, HOSPITALS + 1)]
        self.phones = [(h, f"0431{8800000 + h * 10 + k:07d}") for h in range(1, HOSPITALS + 1)
                       for k in range(2)]
        weights = [1 / (rank ** 0.9) for rank in range(1, HOSPITALS + 1)]
        rng.shuffle(weights)
        self.hospital_cum = list(_cumulative(weights))
        self.user_of = {sid: n + 1 for n, sid in enumerate(self.surgeons)}

    # -------------------------------------------------------------- reference data

    def write_reference(self, engine: Engine) -> None:
        now = datetime.now(UTC)
        with engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(TeamRow)).scalar_one():
                return  # already there (a second run into the same database)
            conn.execute(insert(TeamRow), [
                {"code": code, "name_zh": zh, "name_en": en, "ring_s": 25, "repeats": 1,
                 "tz": "Asia/Shanghai", "requires_approval": False, "department_head": None}
                for code, zh, en, _key in TEAMS])
            conn.execute(insert(SurgeonRow), [
                {"id": sid, "name": name, "phone": phone, "rank": rank}
                for sid, (name, phone, rank) in self.surgeons.items()])
            conn.execute(insert(PartnerHospitalRow), [
                {"id": h, "name": name, "level": level, "city": city}
                for h, name, level, city in self.hospitals])
            conn.execute(insert(HospitalPhoneRow), [
                {"hospital_id": h, "number": number} for h, number in self.phones])
            # One console account per surgeon, for their notes (no usable password).
            conn.execute(insert(UserRow), [
                {"id": uid, "username": f"s{sid}", "password_hash": "!", "role": "surgeon",
                 "surgeon_id": sid, "display_name": self.surgeons[sid][0], "lang": "zh",
                 "created_at": now, "disabled_at": None}
                for sid, uid in self.user_of.items()])
            if conn.dialect.name == "postgresql":  # explicit ids: move the sequence past them
                conn.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), "
                                  "(SELECT max(id) FROM users))"))

    # -------------------------------------------------------------- cases

    def start_times(self, n: int) -> list[int]:
        """`n` start instants (µs since the first local midnight), sorted."""
        rng = self.rng
        hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=n)
        micro_day, micro_hour = 86_400_000_000, 3_600_000_000
        starts = [rng.randrange(self.days) * micro_day + hour * micro_hour + rng.randrange(micro_hour)
                  for hour in hours]
        starts.sort()
        return starts

    def batches(self, n: int, stats: Generated) -> Iterator[Batch]:
        origin = datetime.combine(self.first, datetime.min.time(), LOCAL).astimezone(UTC)
        batch = Batch()
        for index, offset in enumerate(self.start_times(n)):
            started = origin + timedelta(microseconds=offset)
            self._case(index, started, batch, stats)
            if len(batch.cases) >= BATCH:
                yield batch
                batch = Batch()
        if batch.cases:
            yield batch

    def _case(self, index: int, started: datetime, out: Batch, stats: Generated) -> None:
        rng = self.rng
        local = started.astimezone(LOCAL)
        case_id = f"{local:%Y%m%d-%H%M%S}-{index:07x}"
        linkedid = f"{int(started.timestamp())}.{index}"
        kind = rng.random()
        hospital = None
        if kind < 0.30:
            hospital = 1 + _bisect(self.hospital_cum, rng.random() * self.hospital_cum[-1])
            number = self.phones[(hospital - 1) * 2 + rng.randrange(2)][1]
            caller_class, raw, team = "partner", number, "referral"
        elif kind < 0.90:
            number = f"1{rng.randrange(3, 10)}{rng.randrange(10**9):09d}"
            caller_class, raw, team = "public", number, _pick(rng, PUBLIC_TEAMS)
        elif kind < 0.97:
            number, caller_class, raw, team = None, "anonymous", None, _pick(rng, PUBLIC_TEAMS)
        else:
            number, caller_class, raw = None, "invalid", "<sip:anonymous;x>"
            team = _pick(rng, PUBLIC_TEAMS)
        language = "en" if rng.random() < 0.03 else "zh"
        menu_s = rng.uniform(3, 15) if caller_class != "partner" else rng.uniform(2, 4)
        menu_at = started + timedelta(seconds=menu_s)
        if caller_class == "partner":
            out.menu.append((case_id, 1, menu_at, "partner", "partner hospital fast lane"))
        elif team is not None:
            key = {"nurse": "0"}.get(team) or next(k for c, *_, k in TEAMS if c == team)
            out.menu.append((case_id, 1, menu_at, key, team))
        else:
            out.menu.append((case_id, 1, menu_at, "timeout", "timeout"))

        connected_at = surgeon_id = seq = voicemail_path = voicemail_at = recording = None
        recording_s = None
        hangup_by = "caller"
        attempts: list[tuple] = []
        if team is None:
            outcome = "abandoned"
            ended = menu_at
        elif team == "nurse":
            if rng.random() < 0.9:
                outcome, seq = "nurse", 1
                connected_at = menu_at + timedelta(seconds=rng.lognormvariate(math.log(12), 0.4))
                attempts.append(self._attempt(case_id, 1, "nurse", None, menu_at, connected_at, "accepted"))
                ended = connected_at + timedelta(seconds=rng.lognormvariate(math.log(120), 0.6))
            else:
                outcome = "abandoned"
                ended = menu_at + timedelta(seconds=rng.uniform(2, 25))
                attempts.append(self._attempt(case_id, 1, "nurse", None, menu_at, ended, "cancelled"))
        else:
            chain = self._chain(team, local.date())
            r = rng.random()
            if r < 0.86:
                outcome = "connected"
                depth = _pick(rng, tuple(zip((1, 2, 3, 4), DEPTH_WEIGHTS)))
                delay = rng.lognormvariate(math.log(30 + 25 * (depth - 1)), 0.35)
                connected_at = started + timedelta(seconds=max(delay, menu_s + 2.0))
                attempts += self._failed_then(case_id, chain, depth, menu_at, connected_at, "accepted")
                seq, surgeon_id = depth, chain[(depth - 1) % len(chain)]
                ended = connected_at + timedelta(seconds=rng.lognormvariate(math.log(240), 0.7))
                recording = f"2026/{case_id}.wav"
                recording_s = int((ended - connected_at).total_seconds())
                hangup_by = rng.choice(("caller", "surgeon"))
            elif r < 0.89:
                outcome = "nurse"
                depth = rng.randint(2, 4)
                connected_at = started + timedelta(seconds=rng.lognormvariate(math.log(40 + 25 * depth), 0.3))
                attempts += self._failed_then(case_id, chain, depth - 1, menu_at, connected_at, None)
                attempts.append(self._attempt(case_id, depth, "nurse", None, connected_at
                                              - timedelta(seconds=8), connected_at, "accepted"))
                seq = depth
                ended = connected_at + timedelta(seconds=rng.lognormvariate(math.log(120), 0.6))
            elif r < 0.93:
                outcome = "voicemail"
                tries = rng.randint(2, 4)
                gave_up = started + timedelta(seconds=menu_s + 27 * tries)
                attempts += self._failed_then(case_id, chain, tries, menu_at, gave_up, None)
                voicemail_at = gave_up + timedelta(seconds=rng.uniform(10, 40))
                voicemail_path = f"voicemail/{case_id}.wav"
                ended = voicemail_at
            elif r < 0.995:
                outcome = "abandoned"
                tries = rng.randint(1, 3)
                ended = started + timedelta(seconds=menu_s + rng.uniform(5, 25 * tries))
                attempts += self._failed_then(case_id, chain, tries, menu_at, ended, "cancelled")
            else:
                outcome, ended, hangup_by = "fallback", started + timedelta(seconds=90), None
        out.attempts += attempts
        out.cases.append((
            case_id, linkedid, 6, number, caller_class, raw, (raw or "")[:64], hospital, language,
            team, started, connected_at, surgeon_id, seq, ended, hangup_by, outcome, recording,
            recording_s, voicemail_path, voicemail_at, ended))
        self._notes(case_id, team, outcome, surgeon_id, ended, out)
        stats.cases += 1
        stats.attempts += len(attempts)
        stats.menu_events += 1
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1

    def _chain(self, team: str, day: date) -> list[int]:
        members = self.members[team]
        turn = day.toordinal() % len(members)
        return [members[(turn + k * 4) % len(members)] for k in range(CHAIN_LENGTH)]

    def _failed_then(self, case_id: str, chain: list[int], count: int, begin: datetime,
                     end: datetime, last: str | None) -> list[tuple]:
        """`count` chain attempts between begin and end; the last one ends `last` (None: failed)."""
        rows = []
        span = (end - begin) / count
        for k in range(count):
            seq = k + 1
            surgeon = chain[k % len(chain)]
            start = begin + span * k
            stop = start + span
            outcome = last if (k == count - 1 and last) else _pick(self.rng, FAILED_OUTCOMES)
            rows.append(self._attempt(case_id, seq, "chain", surgeon, start, stop, outcome))
        return rows

    def _attempt(self, case_id: str, seq: int, kind: str, surgeon: int | None, start: datetime,
                 stop: datetime, outcome: str) -> tuple:
        if surgeon is None:
            name, phone, role = "值班护士", NURSE_PHONE, "nurse"
        else:
            name, phone, _rank = self.surgeons[surgeon]
            role = ("primary", "backup", "attending")[(seq - 1) % CHAIN_LENGTH]
        ring = max(0, int((stop - start).total_seconds()))
        answered = outcome in ("accepted", "declined")
        return (case_id, seq, kind, surgeon, name, phone, role, start, stop, ring, answered, outcome)

    def _notes(self, case_id: str, team: str | None, outcome: str, surgeon: int | None,
               ended: datetime, out: Batch) -> None:
        rng = self.rng
        at = ended + timedelta(minutes=rng.uniform(1, 90))
        if outcome == "connected":
            assert surgeon is not None
            user = self.user_of[surgeon]
            if rng.random() < 0.65:
                referral = 0.45 if team == "referral" else 0.15
                disposition = _pick(rng, (("referral_accepted", referral),
                                          ("consultation", 0.5 * (1 - referral) / 0.85),
                                          ("advice_only", 0.2 * (1 - referral) / 0.85),
                                          ("transfer_arranged", 0.15 * (1 - referral) / 0.85)))
                out.notes.append((case_id, at, user, surgeon, disposition, "会诊意见已告知。"))
                if disposition == "referral_accepted" and rng.random() < 0.1:
                    out.notes.append((case_id, at + timedelta(hours=1), user, surgeon,
                                      "transfer_arranged", "已安排转运。"))
            elif rng.random() < 0.05 / 0.35:
                out.notes.append((case_id, at, user, surgeon, None, "已回电。"))
        elif outcome == "nurse" and rng.random() < 1 / 3:
            user = self.user_of[self.members["facial"][0]]  # the nurse desk writes as the head
            out.notes.append((case_id, at, user, None, "advice_only", "护士已给予建议。"))


def _cumulative(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _bisect(cum: list[float], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ------------------------------------------------------------------ writing


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME format, naive UTC, always with microseconds.
    if value is None:
        return None
    v = value.astimezone(UTC)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:"
            f"{v.second:02d}.{v.microsecond:06d}")


def _write_batch(engine: Engine, batch: Batch) -> None:
    tables = (("cases", CASE_COLUMNS, batch.cases), ("case_menu_events", MENU_COLUMNS, batch.menu),
              ("dial_attempts", ATTEMPT_COLUMNS, batch.attempts),
              ("case_notes", NOTE_COLUMNS, batch.notes))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            for table, columns, rows in tables:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        else:
            for table, columns, rows in tables:
                times = TIME_COLUMNS[table]
                converted = [tuple(_sqlite_time(v) if i in times else v for i, v in enumerate(row))
                             for row in rows]
                marks = ", ".join("?" for _ in columns)
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                   converted)
        raw.commit()
    finally:
        raw.close()


def analyze(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def generate(engine: Engine, cases: int, first: date, days: int, seed: int = 96608,
             progress: bool = False) -> Generated:
    """Migrate, write the reference data and `cases` cases; ANALYZE. Returns what was written."""
    began = time.perf_counter()
    migrate(engine)
    history = History(seed, first, days)
    history.write_reference(engine)
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(CaseRow)).scalar_one():
            raise SystemExit("the database already holds cases; generate into an empty one")
    stats = Generated()
    for batch in history.batches(cases, stats):
        _write_batch(engine, batch)
        stats.notes += len(batch.notes)
        if progress:
            print(f"  {stats.cases:>9,} cases written ({time.perf_counter() - began:.0f} s)",
                  file=sys.stderr, flush=True)
    analyze(engine)
    stats.seconds = time.perf_counter() - began
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="SQLite file or PostgreSQL database (it must exist)")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--first", type=date.fromisoformat, default=date(2025, 1, 1),
                        help="the first local day (default 2025-01-01)")
    parser.add_argument("--days", type=int, default=730, help="days of history (default 730)")
    parser.add_argument("--seed", type=int, default=96608)
    args = parser.parse_args(argv)
    engine = make_engine(args.db_url)
    try:
        stats = generate(engine, args.cases, args.first, args.days, args.seed, progress=True)
    finally:
        engine.dispose()
    print(f"{stats.cases:,} cases, {stats.attempts:,} dial attempts, {stats.menu_events:,} menu "
          f"events, {stats.notes:,} notes in {stats.seconds:.1f} s; outcomes {stats.outcomes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
