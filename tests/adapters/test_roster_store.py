"""The roster in the database: rotations, overrides, leave, trades, imports and
their audit, on SQLite and on PostgreSQL (fixture `engine`)."""
from __future__ import annotations

import json
import threading
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from db.models import OverrideRow, RosterAuditRow, ShiftRow, TradeRow
from db.repo import write_roster
from db.roster_store import ImportRefused, NotFound, NotOwner, PartOfTrade, RosterStore, StaleChange
from db.session import downgrade, make_engine, migrate
from oncall import roster_ops
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from oncall.roster_import import ImportPlan, Problem
from oncall.roster_ops import TradeStatus
from oncall.rotation import Leave, Override, Rotation, on_call, shifts_between
from tests.support.db_helpers import count

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
P, B, H = Role.PRIMARY, Role.BACKUP, Role.DEPARTMENT_HEAD
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=SH)
TEAMS = (
    Team("facial", "颌面部创伤", "Facial trauma", requires_approval=True, department_head=9),
    Team("replant", "断肢(指)再植", "Replantation", tz="Europe/Berlin"),
)
SURGEONS = tuple(Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in range(1, 10))


def sh(d: int, h: int = 0, mi: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, d, h, mi, tzinfo=SH)


@pytest.fixture
def store(engine) -> RosterStore:
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, ())
    clock = iter(NOW + timedelta(seconds=n) for n in range(10_000))
    return RosterStore(engine, clock=lambda: next(clock))


def seed_rotations(store: RosterStore) -> None:
    store.add_rotation(Rotation.daily("facial", P, [1, 2, 3], date(2026, 2, 27)), actor="cli:test")
    store.add_rotation(Rotation.weekly("facial", B, [4, 5], date(2026, 2, 2)), actor="cli:test")
    store.add_rotation(Rotation("replant", P, (6, 7), date(2026, 2, 1), (time(8), time(20)),
                                layer=1, name="day/night"), actor="cli:test")


def test_a_stored_roster_loads_back_as_the_same_pure_roster(store):
    seed_rotations(store)
    leave = Leave(2, sh(3, 0), sh(5, 0), note="会议")
    cover = Override("facial", P, 3, sh(3, 8), sh(4, 8), replaces=2, note="covers leave")
    wide = Override("facial", B, 8, sh(2, 20), sh(3, 2))
    store.add_leave(leave, actor="cli:test")
    store.add_override(cover, actor="cli:test")
    store.add_override(wide, actor="cli:test")

    roster = store.load(sh(1), sh(10))
    assert roster.teams["facial"].requires_approval and roster.teams["facial"].department_head == 9
    assert roster.teams["replant"].tz == "Europe/Berlin"
    assert [r.name for r in roster.rotations] == ["", "", "day/night"]
    assert roster.rotations[2].handoff_times == (time(8), time(20))
    assert roster.overrides == (cover, wide)  # creation order: the later one wins
    assert roster.leave == (leave,)

    # The loaded roster answers exactly as the one built in memory.
    memory = Roster(teams={t.code: t for t in TEAMS}, surgeons={s.id: s for s in SURGEONS},
                    rotations=roster.rotations, overrides=(cover, wide), leave=(leave,))
    for team in ("facial", "replant"):
        assert shifts_between(roster, team, sh(1), sh(10)) == shifts_between(memory, team, sh(1), sh(10))
        for hour in range(0, 9 * 24, 5):
            at = sh(1) + timedelta(hours=hour)
            assert on_call(roster, team, at) == on_call(memory, team, at)


def test_a_window_loads_only_what_touches_it(store):
    store.add_override(Override("facial", P, 3, sh(1, 8), sh(2, 8)), actor="cli:test")
    store.add_override(Override("facial", P, 4, sh(20, 8), sh(21, 8)), actor="cli:test")
    store.add_leave(Leave(5, sh(20), sh(22)), actor="cli:test")
    roster = store.load(sh(1, 12), sh(3))
    assert [o.surgeon_id for o in roster.overrides] == [3]
    assert roster.leave == ()


def test_a_swap_with_approval_is_stored_step_by_step_and_audited(store):
    seed_rotations(store)
    # Surgeon 1 holds facial primary on Mar 2 (08:00 -> Mar 3 08:00), surgeon 2 on Mar 3.
    roster = store.for_operation(NOW, sh(4, 8))
    assert [m.surgeon.id for m in on_call(roster, "facial", sh(2, 9))][0] == 1
    requested = store.apply_change(roster_ops.request_swap(
        roster, by=1, team="facial", role=P, start=sh(2, 8), end=sh(3, 8), with_surgeon=2,
        their_start=sh(3, 8), their_end=sh(4, 8), at=NOW, note="家中有事"))
    assert requested.status is TradeStatus.REQUESTED

    roster = store.for_operation(NOW, sh(4, 8))
    taken = store.apply_change(roster_ops.take(roster, requested.id, by=2, at=NOW + timedelta(hours=1)))
    assert taken.status is TradeStatus.TAKEN
    assert on_call(store.load(sh(2), sh(4)), "facial", sh(2, 9))[0].surgeon.id == 1  # not yet

    roster = store.for_operation(NOW, sh(4, 8))
    approved = store.apply_change(roster_ops.approve(roster, requested.id, by=9,
                                                     at=NOW + timedelta(hours=2)))
    assert approved.status is TradeStatus.APPROVED and approved.decided_by == 9
    after = store.load(sh(2), sh(4))
    assert on_call(after, "facial", sh(2, 9))[0].surgeon.id == 2
    assert on_call(after, "facial", sh(3, 9))[0].surgeon.id == 1
    assert store.trade(requested.id).overrides == approved.overrides

    audit = store.audit(subject="trade", subject_id=str(requested.id))
    assert [a.action for a in audit] == ["approve", "take", "request_swap"]
    assert [a.surgeon_id for a in audit] == [9, 2, 1]
    assert audit[2].before is None
    assert json.loads(audit[0].before)["status"] == "taken"
    assert json.loads(audit[0].after)["status"] == "approved"
    assert json.loads(audit[2].after)["note"] == "家中有事"


def test_a_decision_on_a_stale_snapshot_is_refused_and_writes_nothing(store, engine):
    seed_rotations(store)
    roster = store.for_operation(NOW, sh(3, 8))
    offered = store.apply_change(roster_ops.offer_shift(
        roster, by=1, team="facial", role=P, start=sh(2, 8), end=sh(3, 8), at=NOW))
    snapshot = store.for_operation(NOW, sh(3, 8))
    first = roster_ops.take(snapshot, offered.id, by=4, at=NOW + timedelta(minutes=1))
    second = roster_ops.take(snapshot, offered.id, by=5, at=NOW + timedelta(minutes=2))
    store.apply_change(first)
    audit_before = count(engine, RosterAuditRow)
    with pytest.raises(StaleChange):
        store.apply_change(second)
    assert store.trade(offered.id).taker == 4
    assert count(engine, RosterAuditRow) == audit_before


def test_new_trades_get_fresh_ids_even_from_a_narrow_snapshot(store):
    seed_rotations(store)
    old = store.apply_change(roster_ops.offer_shift(
        store.for_operation(NOW, sh(3, 8)), by=1, team="facial", role=P, start=sh(2, 8),
        end=sh(3, 8), at=NOW))
    store.apply_change(roster_ops.decline(store.for_operation(NOW), old.id, by=9, at=NOW))
    # A snapshot far away does not see trade `old`: its proposal reuses id 1.
    far = store.for_operation(sh(20, 8), sh(21, 8))
    assert all(t.id != old.id for t in far.trades)
    change = roster_ops.offer_shift(far, by=1, team="facial", role=P, start=sh(20, 8),
                                    end=sh(21, 8), at=NOW)
    assert change.audit.after.id == old.id
    assert store.apply_change(change).id == old.id + 1


def test_concurrent_new_trades_all_get_distinct_ids(engine, store):
    seed_rotations(store)
    errors: list[BaseException] = []
    stored: list[int] = []

    def offer(surgeon: int, day: int) -> None:
        try:
            own = RosterStore(engine)
            roster = own.for_operation(NOW, sh(day + 1, 8))
            change = roster_ops.offer_shift(roster, by=surgeon, team="facial", role=P,
                                            start=sh(day, 8), end=sh(day + 1, 8), at=NOW)
            stored.append(own.apply_change(change).id)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    # Mar 2 -> surgeon 1, Mar 3 -> 2, Mar 4 -> 3, Mar 5 -> 1 ...
    threads = [threading.Thread(target=offer, args=((d - 2) % 3 + 1, d)) for d in range(2, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(stored) == list(range(1, 7))


def test_trade_covers_cannot_be_removed_alone_but_plain_overrides_can(store, engine):
    seed_rotations(store)
    offered = store.apply_change(roster_ops.offer_shift(
        store.for_operation(NOW, sh(3, 8)), by=1, team="facial", role=P, start=sh(2, 8),
        end=sh(3, 8), at=NOW))
    # facial requires approval: take, then approve by the department head (9).
    store.apply_change(roster_ops.take(store.for_operation(NOW, sh(3, 8)), offered.id, by=8, at=NOW))
    store.apply_change(roster_ops.approve(store.for_operation(NOW, sh(3, 8)), offered.id, by=9, at=NOW))
    with engine.connect() as conn:
        cover_id = conn.execute(select(OverrideRow.id).where(OverrideRow.trade_id == offered.id)).scalar_one()
    with pytest.raises(PartOfTrade, match="belongs to trade"):
        store.remove_override(cover_id, actor="cli:test")

    plain = store.add_override(Override("facial", B, 8, sh(5, 8), sh(6, 8)), actor="cli:test")
    gone = store.remove_override(plain, actor="cli:test", surgeon_id=9)
    assert gone.surgeon_id == 8
    with pytest.raises(NotFound):
        store.remove_override(plain, actor="cli:test")
    entries = store.audit(subject="override", subject_id=str(plain))
    assert [e.action for e in entries] == ["remove_override", "add_override"]
    assert entries[0].surgeon_id == 9 and entries[0].after is None


def shift(team: str, sid: int, start: datetime, hours: int = 24, role: Role = P) -> Shift:
    return Shift(team, sid, role, start, start + timedelta(hours=hours))


def march(team: str = "facial") -> dict[str, tuple[datetime, datetime]]:
    return {team: (sh(1).astimezone(UTC), sh(1, month=4).astimezone(UTC))}


def test_an_import_replaces_the_month_and_nothing_else(store, engine):
    with engine.begin() as conn:
        write_roster(conn, (), (), (
            shift("facial", 1, sh(28, 8, month=2)),  # Feb 28 -> Mar 1: February's, stays
            shift("facial", 2, sh(10, 8)),  # replaced
            shift("replant", 6, sh(10, 8)),  # another team: stays
        ))
    plan = ImportPlan(shifts=(shift("facial", 3, sh(1, 8)), shift("facial", 4, sh(2, 8))),
                      replace=march(), lines=(2, 3))
    result = store.apply_import(plan, actor="cli:test", source="march.csv")
    assert (result.removed, result.written) == (1, 2)
    with engine.connect() as conn:
        rows = conn.execute(select(ShiftRow.team, ShiftRow.surgeon_id).order_by(ShiftRow.id)).all()
    assert sorted(rows) == [("facial", 1), ("facial", 3), ("facial", 4), ("replant", 6)]
    (entry,) = store.audit(subject="shifts")
    assert entry.actor == "cli:test" and entry.action == "import"
    assert [s["surgeon_id"] for s in json.loads(entry.before)] == [2]
    assert json.loads(entry.after)["source"] == "march.csv"


def test_an_import_with_errors_changes_nothing(store, engine):
    with engine.begin() as conn:
        write_roster(conn, (), (), (shift("facial", 2, sh(10, 8)),))
    bad = ImportPlan(shifts=(shift("facial", 3, sh(1, 8)),), replace=march(),
                     problems=(Problem(4, "unknown surgeon 'X'", "未知医生 'X'", "surgeon"),))
    with pytest.raises(ImportRefused) as refused:
        store.apply_import(bad, actor="cli:test")
    assert refused.value.problems[0].line == 4
    assert count(engine, ShiftRow) == 1 and count(engine, RosterAuditRow) == 0


def test_an_import_failing_in_the_database_rolls_back_every_team(store, engine):
    with engine.begin() as conn:
        write_roster(conn, (), (), (shift("facial", 2, sh(10, 8)), shift("replant", 6, sh(10, 8))))
    replace = {**march("facial"), **march("replant")}
    # Surgeon 99 does not exist: the foreign key fails on the second team's rows,
    # after the first team's shifts were already deleted in the transaction.
    plan = ImportPlan(shifts=(shift("facial", 3, sh(1, 8)), shift("replant", 99, sh(1, 8))),
                      replace=replace)
    with pytest.raises(Exception):
        store.apply_import(plan, actor="cli:test")
    with engine.connect() as conn:
        rows = sorted(conn.execute(select(ShiftRow.team, ShiftRow.surgeon_id)).all())
    assert rows == [("facial", 2), ("replant", 6)]
    assert count(engine, RosterAuditRow) == 0


def test_a_plan_shift_outside_its_window_is_refused(store, engine):
    plan = ImportPlan(shifts=(shift("facial", 3, sh(1, 8, month=4)),), replace=march())
    with pytest.raises(ValueError, match="outside"):
        store.apply_import(plan, actor="cli:test")
    assert count(engine, ShiftRow) == 0


def test_team_policy_changes_are_audited(store):
    store.set_team_policy("replant", actor="cli:test", requires_approval=True, department_head=7)
    team = store.load(NOW, NOW + timedelta(hours=1)).teams["replant"]
    assert team.requires_approval and team.department_head == 7
    with pytest.raises(NotFound):
        store.set_team_policy("replant", actor="cli:test", department_head=404)
    (entry,) = store.audit(subject="team")
    assert json.loads(entry.before) == {"department_head": None, "requires_approval": False}


def test_ending_a_rotation_keeps_the_past(store):
    seed_rotations(store)
    (first_id, _), *_ = store.rotations("facial")
    store.end_rotation(first_id, date(2026, 3, 5), actor="cli:test")
    roster = store.load(sh(1), sh(10))
    assert on_call(roster, "facial", sh(4, 9))[0].role is P
    assert [m.role for m in on_call(roster, "facial", sh(6, 9))] == [B]


def test_the_roster_migration_downgrades_and_upgrades_with_data(db_url):
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            write_roster(conn, TEAMS, SURGEONS, ())
        downgrade(db_url, "0001")
        migrate(db_url)
        with engine.connect() as conn:
            assert conn.execute(select(TradeRow)).all() == []
        team = RosterStore(engine).load(NOW, NOW + timedelta(hours=1)).teams["replant"]
        # The new columns come back with their defaults after a downgrade dropped them.
        assert team.tz == "Asia/Shanghai" and not team.requires_approval
    finally:
        engine.dispose()


def test_the_routing_cache_sees_a_roster_write_at_the_next_probe(store, engine):
    from db.repo import RosterRepository
    from hotline.rostercache import RosterCache

    seed_rotations(store)
    rosters = RosterRepository(engine)
    refreshed = threading.Event()
    cache = RosterCache(rosters.load, rosters.partner_numbers, lambda: sh(2, 9), refresh_s=3600,
                        version=rosters.version, poll_s=0.05, on_refresh=refreshed.set)
    cache.start()
    try:
        assert on_call(cache.roster(), "facial", sh(2, 9))[0].surgeon.id == 1
        assert not cache.changed()
        refreshed.clear()
        store.add_override(Override("facial", P, 8, sh(2, 8), sh(3, 8)), actor="cli:test")
        # The full reload is an hour away: only the version probe can bring this in.
        assert refreshed.wait(30)
        assert on_call(cache.roster(), "facial", sh(2, 9))[0].surgeon.id == 8
    finally:
        cache.stop()


def test_a_surgeon_removes_only_their_own_leave(store):
    mine = store.add_leave(Leave(2, sh(3), sh(4)), actor="api:s2", surgeon_id=2)
    theirs = store.add_leave(Leave(3, sh(3), sh(4)), actor="api:s3", surgeon_id=3)
    with pytest.raises(NotOwner):
        store.remove_leave(theirs, actor="api:s2", surgeon_id=2, owner=2)
    with pytest.raises(NotOwner):  # unknown and someone else's look the same
        store.remove_leave(999, actor="api:s2", surgeon_id=2, owner=2)
    assert store.remove_leave(mine, actor="api:s2", surgeon_id=2, owner=2).surgeon_id == 2
    assert [i for i, _ in store.leave(sh(1), sh(10))] == [theirs]
