"""Repositories and migrations, on SQLite and on PostgreSQL (fixture `db_url`)."""
from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from cases.lifecycle import (
    Case,
    end_attempt,
    mark_connected,
    mark_ended,
    open_case,
    record_menu,
    set_recording,
    set_team,
    set_voicemail,
    start_attempt,
)
from db.models import Base, CallbackRow, CaseRow, DialAttemptRow, MenuEventRow, ShiftRow, UTCDateTime
from db.repo import CaseConflict, CaseRepository, RosterRepository
from db.seed import (
    DEMO_HOSPITALS,
    DEMO_PARTNER_HOSPITAL_ID,
    DEMO_PARTNER_NUMBER,
    DEMO_SURGEONS,
    DEMO_TEAMS,
    demo_chain_phones,
    demo_roster,
    seed_demo,
    seed_roster,
)
from db.session import make_engine, migrate
from oncall.lookup import on_call
from oncall.model import Rank, Role, Shift, Surgeon, Team
from routing.callers import CallerClass, classify
from routing.escalation import AttemptOutcome, ChainStep
from tests.support.db_helpers import count

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 2, 14, 0, 0, 123456, tzinfo=SHANGHAI)
NOW = datetime(2026, 3, 2, 6, 30, tzinfo=timezone.utc)  # 14:30 in Shanghai
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)
BACKUP = ChainStep(102, "李明", "13800000102", "backup", 25)
TABLES = {"teams", "surgeons", "shifts", "partner_hospitals", "hospital_phones", "cases",
          "case_menu_events", "dial_attempts", "callbacks", "rotations", "trades", "overrides",
          "leave", "roster_audit", "notices", "api_tokens", "users", "audit_log", "case_notes",
          "console_sessions", "hospital_contacts", "referrals", "referral_events", "incidents",
          "blocked_numbers", "upload_links", "case_photos"}


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_case(case_id: str = "C-1", linkedid: str = "1772431200.1", raw: str | None = "13800000001") -> Case:
    case = open_case(case_id, linkedid, classify(raw, {}), T0)
    record_menu(case, s(3), "1", "颌面部创伤")
    set_team(case, s(3), "facial")
    start_attempt(case, s(4), 1, "chain", PRIMARY)
    return case


def connected_case(case_id: str = "C-1", linkedid: str = "1772431200.1") -> Case:
    case = new_case(case_id, linkedid)
    end_attempt(case, s(29), 1, AttemptOutcome.NO_ANSWER)
    start_attempt(case, s(30), 2, "chain", BACKUP)
    mark_connected(case, s(37), 2)
    set_recording(case, s(37), "2026/03/02/C-1.wav")
    mark_ended(case, s(400), "surgeon")
    set_recording(case, s(401), "2026/03/02/C-1.wav", 363)
    return case


# -- migrations ---------------------------------------------------------------

def test_migrate_an_empty_database(db_url):
    migrate(db_url)
    migrate(db_url)  # at head already: nothing to do
    engine = make_engine(db_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0008"
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 5000
    finally:
        engine.dispose()


def test_the_migration_matches_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_naive_datetimes_are_refused(engine):
    with pytest.raises(ValueError):
        UTCDateTime().process_bind_param(datetime(2026, 3, 2, 14), engine.dialect)


# -- cases --------------------------------------------------------------------

def test_round_trip_keeps_aware_times(engine):
    repo = CaseRepository(engine)
    case = connected_case()
    assert repo.save(case) is True
    loaded = repo.get("C-1")
    assert loaded == case
    assert loaded.outcome == "connected"
    for value in (loaded.started_at, loaded.connected_at, loaded.ended_at,
                  loaded.menu[0].at, loaded.attempts[1].started_at, loaded.attempts[0].ended_at):
        assert value.utcoffset() == timedelta(0)
    assert loaded.started_at == T0 and loaded.started_at.microsecond == 123456
    assert repo.get_by_linkedid("1772431200.1") == case
    assert repo.get("nope") is None and repo.get_by_linkedid("nope") is None
    with engine.connect() as conn:
        assert conn.execute(select(CaseRow.outcome)).scalar_one() == "connected"


def test_saving_the_same_case_twice_adds_nothing(engine):
    repo = CaseRepository(engine)
    case = connected_case()
    repo.save(case)
    repo.save(case)
    repo.save(copy.deepcopy(case))
    assert count(engine, CaseRow) == 1
    assert count(engine, MenuEventRow) == 1
    assert count(engine, DialAttemptRow) == 2
    assert repo.get("C-1") == case


def test_a_newer_snapshot_updates_in_place(engine):
    repo = CaseRepository(engine)
    case = new_case()
    repo.save(case)
    end_attempt(case, s(29), 1, "busy")
    start_attempt(case, s(30), 2, "chain", BACKUP)
    end_attempt(case, s(55), 2, "no-answer")
    set_voicemail(case, s(60), "vm/C-1.wav")
    mark_ended(case, s(90), "caller")
    repo.save(case)
    assert count(engine, CaseRow) == 1 and count(engine, DialAttemptRow) == 2
    loaded = repo.get("C-1")
    assert loaded == case and loaded.outcome == "voicemail"
    assert loaded.attempts[0].outcome is AttemptOutcome.BUSY


def test_a_stale_snapshot_does_not_overwrite(engine):
    repo = CaseRepository(engine)
    old = new_case()
    newer = copy.deepcopy(old)
    end_attempt(newer, s(29), 1, "no-answer")
    mark_ended(newer, s(30), "caller")
    assert repo.save(newer) is True
    assert repo.save(old) is False
    assert repo.get("C-1") == newer


def test_concurrent_saves_make_one_row(engine):
    repo = CaseRepository(engine)
    rounds = 15
    errors: list[BaseException] = []
    for n in range(rounds):
        case = connected_case(f"C-{n}", f"1772431200.{n}")
        snapshots = [copy.deepcopy(case), copy.deepcopy(case)]
        snapshots[1].revision += 1  # one thread writes a newer snapshot
        barrier = threading.Barrier(2)

        def save(snapshot: Case, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=10)
                repo.save(snapshot)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(snap,)) for snap in snapshots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors, errors
        assert repo.get(f"C-{n}").revision == case.revision + 1
    assert count(engine, CaseRow) == rounds
    assert count(engine, DialAttemptRow) == 2 * rounds
    assert count(engine, MenuEventRow) == rounds


def test_a_linkedid_belongs_to_one_case(engine):
    repo = CaseRepository(engine)
    repo.save(new_case("C-1", "1772431200.1"))
    with pytest.raises(CaseConflict):
        repo.save(new_case("C-2", "1772431200.1"))
    with pytest.raises(CaseConflict):
        repo.save(new_case("C-1", "1772431200.9"))
    assert count(engine, CaseRow) == 1


HOSTILE_RAW = [
    "1380000'; DROP TABLE cases;--",
    "\" OR 1=1 --",
    "500&PJSIP/trunk/0014165551212",
    "13800000001\r\nInjected: header",
    "%s %(x)s {0} $1 ? :name",
    "x" * 1024,
    "王建国 👨‍⚕️ ١٣٨ １３８ \u202e",
    "back\\slash\ttab",
]


@pytest.mark.parametrize("raw", HOSTILE_RAW)
def test_hostile_caller_ids_are_stored_intact(engine, raw):
    repo = CaseRepository(engine)
    case = new_case(raw=raw)
    repo.save(case)
    loaded = repo.get("C-1")
    assert loaded.caller == case.caller
    assert loaded.caller.raw == raw
    assert loaded.caller.caller_class is CallerClass.INVALID
    assert count(engine, CaseRow) == 1


def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(engine):
    repo = CaseRepository(engine)
    case = new_case(raw="138\x00000\udc80")
    repo.save(case)
    loaded = repo.get("C-1")
    assert loaded.caller.raw == "138\ufffd000\ufffd"
    assert loaded.caller.raw_safe == case.caller.raw_safe == "138\\x00000\\udc80"


def test_recent_lists_newest_first(engine):
    repo = CaseRepository(engine)
    for n in range(5):
        case = open_case(f"C-{n}", f"1.{n}", classify(None, {}), T0 + timedelta(minutes=n))
        repo.save(case)
    assert [c.case_id for c in repo.recent(3)] == ["C-4", "C-3", "C-2"]
    assert len(repo.recent()) == 5
    with pytest.raises(ValueError):
        repo.recent(0)


def test_a_voicemail_creates_one_callback(engine):
    repo = CaseRepository(engine)
    case = new_case()
    end_attempt(case, s(29), 1, "no-answer")
    repo.save(case)
    assert repo.callbacks() == []
    set_voicemail(case, s(40), "vm/C-1.wav")
    repo.save(case)
    repo.save(case)
    mark_ended(case, s(70), "caller")
    repo.save(case)
    callbacks = repo.callbacks()
    assert len(callbacks) == 1 and count(engine, CallbackRow) == 1
    assert (callbacks[0].case_id, callbacks[0].reason, callbacks[0].status) == ("C-1", "voicemail", "open")
    assert callbacks[0].due_at == s(40)
    repo.save(connected_case("C-2", "1.2"))
    assert count(engine, CallbackRow) == 1


def test_a_partner_case_refers_to_its_hospital(engine):
    seed_demo(engine, NOW)
    numbers = RosterRepository(engine).partner_numbers()
    caller = classify("+86 431 8888 8888", numbers)
    assert (caller.caller_class, caller.hospital_id) == (CallerClass.PARTNER, DEMO_PARTNER_HOSPITAL_ID)
    repo = CaseRepository(engine)
    case = open_case("C-1", "1.1", caller, T0)
    repo.save(case)
    assert repo.get("C-1").caller == caller


# -- roster and seed ----------------------------------------------------------

def test_seed_demo_is_idempotent(engine):
    seed_demo(engine, NOW)
    counts = [count(engine, row) for row in (CaseRow, ShiftRow)]
    with engine.connect() as conn:
        tables = {name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                  for name in ("teams", "surgeons", "shifts", "partner_hospitals", "hospital_phones")}
    seed_demo(engine, NOW)
    with engine.connect() as conn:
        again = {name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() for name in tables}
    assert again == tables
    assert tables == {"teams": 4, "surgeons": 16, "shifts": len(demo_roster(NOW).shifts),
                      "partner_hospitals": 5, "hospital_phones": sum(len(h.numbers) for h in DEMO_HOSPITALS)}
    assert counts[1] == 4 * 4 * 16  # 4 teams x 4 roles x 16 days (now-1d .. now+14d)
    # Seeding a day later adds that day and changes no existing shift.
    before = RosterRepository(engine).load(NOW - timedelta(days=2), NOW + timedelta(days=20)).shifts
    seed_demo(engine, NOW + timedelta(days=1))
    after = RosterRepository(engine).load(NOW - timedelta(days=2), NOW + timedelta(days=20)).shifts
    assert set(before) < set(after) and len(after) == len(before) + 16


def test_demo_numbers_are_fixed():
    phones = [surgeon.phone for surgeon in DEMO_SURGEONS]
    assert len(set(phones)) == 16 and all(p.startswith("1380000") and len(p) == 11 for p in phones)
    assert DEMO_PARTNER_NUMBER == "043188888888"
    assert DEMO_PARTNER_NUMBER in DEMO_HOSPITALS[DEMO_PARTNER_HOSPITAL_ID - 1].numbers
    assert {team.code for team in DEMO_TEAMS} == {"facial", "replant", "burns", "referral"}
    chains = demo_chain_phones(NOW)
    assert all(len(phones) == 4 for phones in chains.values())
    assert demo_chain_phones(NOW) == chains


def test_roster_repository_and_on_call_agree(engine):
    seed_demo(engine, NOW)
    repo = RosterRepository(engine)
    expected = demo_roster(NOW)
    for at in (NOW, NOW + timedelta(hours=5), NOW + timedelta(days=3, hours=1), NOW - timedelta(hours=20)):
        roster = repo.load(at - timedelta(hours=1), at + timedelta(hours=1))
        for team in DEMO_TEAMS:
            assert on_call(roster, team.code, at) == on_call(expected, team.code, at)
    roster = repo.load(NOW, NOW + timedelta(minutes=1))
    assert {code: [m.surgeon.phone for m in on_call(roster, code, NOW)] for code in roster.teams} == (
        demo_chain_phones(NOW))


def test_seed_roster_round_trip(engine):
    day = datetime(2026, 3, 2, 8, tzinfo=SHANGHAI)
    teams = [Team("facial", "颌面部创伤", "Facial", ring_s=20, repeats=2)]
    surgeons = [Surgeon(1, "甲", "13800000001", Rank.CHIEF), Surgeon(2, "乙", "13800000002", Rank.RESIDENT)]
    shifts = [
        Shift("facial", 2, Role.PRIMARY, day, day + timedelta(hours=12)),
        Shift("facial", 1, Role.BACKUP, day, day + timedelta(days=1)),
        Shift("facial", 2, Role.PRIMARY, day + timedelta(days=3), day + timedelta(days=4)),
    ]
    seed_roster(engine, teams, surgeons, shifts)
    seed_roster(engine, teams, surgeons, shifts)
    roster = RosterRepository(engine).load(day, day + timedelta(days=1))
    assert dict(roster.teams) == {"facial": teams[0]}
    assert dict(roster.surgeons) == {1: surgeons[0], 2: surgeons[1]}
    assert set(roster.shifts) == set(shifts[:2])  # the shift three days on is outside the window
    assert [m.surgeon.id for m in on_call(roster, "facial", day + timedelta(hours=1))] == [2, 1]
    assert [m.surgeon.id for m in on_call(roster, "facial", day + timedelta(hours=13))] == [1]
    with pytest.raises(ValueError):
        RosterRepository(engine).load(datetime(2026, 3, 2), datetime(2026, 3, 3))
