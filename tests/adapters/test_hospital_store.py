"""The hospital directory and block list on SQLite and PostgreSQL: import, atomicity, refusals,
audit rows, the routing version, per-hospital figures."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from db.blocklist import (
    AlreadyBlocked,
    BadReason,
    BlockList,
    NotANumber,
    NotBlocked,
    NumberRegistered,
)
from db.hospitals import HospitalStore, NumberTaken, PlanRefused, UnknownHospital
from db.models import (
    AuditRow,
    BlockedNumberRow,
    CaseRow,
    HospitalContactRow,
    PartnerHospitalRow,
    ReferralRow,
)
from db.repo import RosterRepository
from db.seed import DEMO_HOSPITALS, seed_partners
from network.hospitals import Contact, Hospital, HospitalError, HospitalPlan
from tests.support.db_helpers import count

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)

IMPORT = (
    "编号,名称,等级,城市,电话,联系医生\n"
    "2,吉林市中心医院,三级乙等,吉林市,043288888802;043288888812,孙红 主任 13900000002\n"
    ",梅河口市中心医院,二甲,梅河口市,0435-8888 8806,刘芳 副主任医师\n"
).encode("gb18030")


@pytest.fixture
def store(engine: Engine) -> HospitalStore:
    seed_partners(engine, DEMO_HOSPITALS)
    return HospitalStore(engine, clock=lambda: T0)


def audits(engine: Engine, subject: str) -> list[AuditRow]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditRow).where(AuditRow.subject == subject)
                                 .order_by(AuditRow.id)).all())


def test_the_seeded_directory_reads_back(store):
    hospitals = store.all()
    assert [h.id for h in hospitals] == [1, 2, 3, 4, 5]
    assert hospitals[0].numbers == ("043188888801", "043188888888")
    assert store.get(5).level == "二级甲等"
    assert store.get(99) is None
    assert store.owner_of("043288888802").id == 2


def test_an_import_adds_and_changes_in_one_transaction_with_one_audit_row(store, engine):
    plan = store.plan_import(IMPORT)
    assert plan.ok, plan.report()
    assert plan.summary() == {"added": 1, "changed": 1, "unchanged": 0, "removed": 0}
    rosters = RosterRepository(engine)
    before = rosters.version()
    assert store.apply(plan, "cli:test") == plan.summary()
    jilin = store.get(2)
    assert jilin.level == "三级乙等" and jilin.numbers == ("043288888802", "043288888812")
    assert jilin.contacts == (Contact("孙红", "主任", "13900000002"),)
    assert store.get(6) == Hospital(6, "梅河口市中心医院", "二级甲等", "梅河口市", ("043588888806",),
                                    (Contact("刘芳", "副主任医师"),))
    assert store.get(1).numbers == ("043188888801", "043188888888")  # not in the file: untouched
    (row,) = audits(engine, "hospital")
    assert (row.actor, row.action, row.subject_id) == ("cli:test", "import", "directory")
    assert json.loads(row.detail)["added_ids"] == [6]
    # The routing cache's probe sees it, and the new numbers route as partner calls.
    assert rosters.version() != before
    assert rosters.partner_numbers()["043288888812"] == 2
    assert rosters.partner_numbers()["043588888806"] == 6
    # The same file again changes nothing.
    again = store.plan_import(IMPORT)
    assert again.ok and not again.writes and len(again.unchanged) == 2


def test_a_plan_with_errors_is_refused_and_writes_nothing(store, engine):
    bad = store.plan_import("名称,电话\n新医院,043288888802\n".encode())
    assert not bad.ok
    with pytest.raises(PlanRefused):
        store.apply(bad, "cli:test")
    assert count(engine, PartnerHospitalRow) == 5 and audits(engine, "hospital") == []


def test_a_plan_that_no_longer_fits_is_refused_whole(store, engine):
    plan = store.plan_import(IMPORT)
    store.add_number(3, "043588888806", "cli:other")  # the new hospital's number, taken meanwhile
    with pytest.raises(PlanRefused) as refused:
        store.apply(plan, "cli:test")
    assert "043588888806" in refused.value.message and refused.value.message_zh
    assert store.get(6) is None and store.get(2).level == "三级甲等"
    assert [a.action for a in audits(engine, "hospital")] == ["add_number"]

    plan = store.plan_import(IMPORT.replace(b"0435-8888 8806", b"0435-8888 8807"))
    BlockList(engine).add("043588888807", "abusive", "cli:other")
    with pytest.raises(PlanRefused):
        store.apply(plan, "cli:test")

    plan = store.plan_import(IMPORT.replace(b"0435-8888 8806", b"0435-8888 8808"))
    store.add_number(2, "043288888899", "cli:other")  # hospital 2 changed since the preview
    with pytest.raises(PlanRefused):
        store.apply(plan, "cli:test")
    assert store.get(6) is None and store.get(2).contacts == tuple(Contact(*c) for c in DEMO_HOSPITALS[1].contacts)


def test_a_failure_inside_the_write_rolls_everything_back(store, engine):
    # A plan no parser would make: two new hospitals sharing a number. The
    # unique index fails on the second insert; the first must not stay.
    plan = HospitalPlan(added=(Hospital(7, "甲医院", "一级", "", ("13900000077",)),
                               Hospital(8, "乙医院", "一级", "", ("13900000077",))))
    with pytest.raises(IntegrityError):
        store.apply(plan, "cli:test")
    assert store.get(7) is None and store.get(8) is None
    assert audits(engine, "hospital") == []


def test_removing_missing_hospitals_keeps_those_with_history(store, engine):
    with engine.begin() as conn:
        conn.execute(insert(CaseRow).values(
            case_id="C1", linkedid="L1", revision=1, caller_number="043388888803", caller_class="partner",
            caller_raw_safe="043388888803", partner_hospital_id=3, language="zh", started_at=T0,
            outcome="connected", updated_at=T0))
    plan = store.plan_import("编号,名称,等级,城市,电话\n1,长春市中心医院,三级甲等,长春市,043188888888\n".encode(),
                             remove_missing=True)
    assert plan.ok and [h.id for h in plan.removed] == [2, 3, 4, 5]
    store.apply(plan, "cli:test")
    assert [h.id for h in store.all()] == [1, 3]  # 3 has a case: kept for its name
    assert store.get(3).numbers == ()
    assert "043388888803" not in RosterRepository(engine).partner_numbers()
    assert json.loads(audits(engine, "hospital")[-1].detail)["kept_for_history"] == [3]


def test_add_and_remove_a_number(store, engine):
    assert store.add_number(4, "+86 434 8888 8814", "user:sup") == "043488888814"
    assert store.get(4).numbers == ("043488888804", "043488888814")
    with pytest.raises(NumberTaken):
        store.add_number(5, "043488888814", "user:sup")
    with pytest.raises(UnknownHospital):
        store.add_number(99, "043488888815", "user:sup")
    with pytest.raises(HospitalError):
        store.add_number(4, "12345; DROP TABLE", "user:sup")
    assert store.remove_number("0434-8888 8814", "user:sup") == 4
    with pytest.raises(UnknownHospital):
        store.remove_number("043488888814", "user:sup")
    assert [(a.action, a.subject_id, json.loads(a.detail)) for a in audits(engine, "hospital")] == [
        ("add_number", "4", {"number": "043488888814"}), ("remove_number", "4", {"number": "043488888814"})]


# --------------------------------------------------------------------------- block list


def test_the_block_list_refuses_a_hospital_number_in_both_languages(store, engine):
    blocks = BlockList(engine, clock=lambda: T0)
    with pytest.raises(NumberRegistered) as refused:
        blocks.add("0431-8888 8888", "prank calls", "user:sup")
    assert refused.value.hospital_id == 1
    assert "长春市中心医院" in refused.value.message and "合作医院" in refused.value.message_zh
    assert blocks.active() == frozenset() and audits(engine, "blocklist") == []


def test_block_add_remove_history_audit_and_version(store, engine):
    blocks = BlockList(engine, clock=lambda: T0)
    rosters = RosterRepository(engine)
    v0, r0 = blocks.version(), rosters.version()
    entry = blocks.add("+86 139-1234-5678", "  abusive\tcalls ", "user:sup")
    assert (entry.number, entry.reason, entry.added_by) == ("13912345678", "abusive calls", "user:sup")
    assert blocks.active() == frozenset({"13912345678"})
    v1 = blocks.version()
    assert v1 != v0 and rosters.version() != r0
    with pytest.raises(AlreadyBlocked):
        blocks.add("13912345678", "again", "user:sup")
    with pytest.raises(NumberTaken):  # the directory refuses it in turn
        store.add_number(1, "13912345678", "user:sup")
    removed = blocks.remove("139 1234 5678", "user:admin", at=T0 + timedelta(hours=1))
    assert removed.removed_by == "user:admin" and not removed.active
    assert blocks.active() == frozenset() and blocks.version() != v1
    with pytest.raises(NotBlocked):
        blocks.remove("13912345678", "user:admin")
    assert blocks.entries() == []
    (kept,) = blocks.entries(include_removed=True)  # the row stays: the trail
    assert kept.removed_at == T0 + timedelta(hours=1) and kept.reason == "abusive calls"
    blocks.add("13912345678", "back again", "user:sup")
    assert count(engine, BlockedNumberRow) == 2
    assert [(a.action, a.subject_id, a.actor) for a in audits(engine, "blocklist")] == [
        ("block", "13912345678", "user:sup"), ("unblock", "13912345678", "user:admin"),
        ("block", "13912345678", "user:sup")]


@pytest.mark.parametrize("number", ["", "abc", "1'; DROP TABLE blocked_numbers;--", "+0123", "1" * 60,
                                    "1390000\r\n0000"])
def test_block_refuses_junk_numbers(store, engine, number):
    with pytest.raises(NotANumber):
        BlockList(engine).add(number, "junk", "user:sup")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "nul\x00", "bidi\u202e"])
def test_block_needs_a_one_line_reason(store, engine, reason):
    with pytest.raises(BadReason):
        BlockList(engine).add("13912345678", reason, "user:sup")
    assert count(engine, BlockedNumberRow) == 0


def test_a_reason_over_several_lines_is_kept_as_one(store, engine):
    entry = BlockList(engine).add("13912345678", "threats\r\nfake: log line", "user:sup")
    assert entry.reason == "threats fake: log line"


# --------------------------------------------------------------------------- figures


def _case(case_id: str, started: datetime, outcome: str, hospital: int | None, delay_s: float | None = None):
    return {"case_id": case_id, "linkedid": "L" + case_id, "revision": 1, "caller_number": "043188888888",
            "caller_class": "partner" if hospital else "public", "caller_raw_safe": "x",
            "partner_hospital_id": hospital, "language": "zh", "team": "referral", "started_at": started,
            "connected_at": started + timedelta(seconds=delay_s) if delay_s is not None else None,
            "connected_seq": 1 if delay_s is not None else None, "connected_surgeon_id": 401 if delay_s else None,
            "outcome": outcome, "updated_at": started}


def test_per_hospital_figures_and_recent_cases(store, engine):
    day = datetime(2026, 3, 10, 9, 0, tzinfo=SH)
    rows = [_case("H1", day, "connected", 1, 10.0), _case("H2", day + timedelta(hours=1), "connected", 1, 30.0),
            _case("H3", day + timedelta(hours=2), "connected", 1, 20.0),
            _case("H4", day + timedelta(hours=3), "abandoned", 1),
            _case("H5", day, "connected", 2, 99.0),  # another hospital
            _case("H6", day + timedelta(days=30), "abandoned", 1)]  # after the range: the last call
    with engine.begin() as conn:
        conn.execute(insert(CaseRow), rows)
        conn.execute(insert(ReferralRow), [
            {"case_id": "H1", "hospital_id": 1, "status": "requested", "created_at": day, "updated_at": day},
            {"case_id": "H2", "hospital_id": 1, "status": "accepted", "created_at": day, "updated_at": day},
            {"case_id": "H6", "hospital_id": 1, "status": "requested", "created_at": day + timedelta(days=30),
             "updated_at": day}])
    report = store.figures(1, date(2026, 3, 1), date(2026, 3, 31))
    assert (report.calls, report.connected, report.referrals) == (4, 3, 2)
    assert report.connected_share == 0.75
    assert report.median_s == pytest.approx(20.0) and report.p90_s == pytest.approx(28.0)
    assert report.last_call_at == day + timedelta(days=30)
    empty = store.figures(4, date(2026, 3, 1), date(2026, 3, 31))
    assert (empty.calls, empty.connected_share, empty.median_s, empty.last_call_at) == (0, None, None, None)
    assert [c.case_id for c in store.recent_cases(1, limit=3)] == ["H6", "H4", "H3"]
    month = store.summaries(datetime(2026, 3, 1, tzinfo=SH), datetime(2026, 4, 1, tzinfo=SH))
    assert [(s.id, s.calls) for s in month] == [(1, 4), (2, 1), (3, 0), (4, 0), (5, 0)]
    assert month[0].numbers == ("043188888801", "043188888888")


def test_the_demo_directory_has_valid_contacts_and_reseeding_keeps_one_copy(store, engine):
    seed_partners(engine, DEMO_HOSPITALS)  # a second time
    assert count(engine, HospitalContactRow) == sum(len(h.contacts) for h in DEMO_HOSPITALS) > 5
    assert store.get(1).contacts[0] == Contact("王立军", "急诊科主任", "13910000101")
    # What the demo wrote is what the import's rules accept: exported and read back, unchanged.
    from network.hospitals import export_csv
    plan = store.plan_import(export_csv(store.all()).encode())
    assert plan.ok and not plan.writes and len(plan.unchanged) == 5


def test_the_routing_version_grows_on_every_change_of_numbers_or_blocks(store, engine):
    rosters, blocks = RosterRepository(engine), BlockList(engine)
    seen, block_versions = [rosters.version()], [blocks.version()]

    def changed() -> None:
        seen.append(rosters.version())
        block_versions.append(blocks.version())

    store.add_number(4, "043488888814", "t")
    changed()
    store.remove_number("043488888814", "t")  # the same numbers as at first, yet a new version
    changed()
    blocks.add("13900000099", "abuse", "t")
    changed()
    blocks.remove("13900000099", "t")
    changed()
    with engine.begin() as conn:  # other audit rows (sign-ins ...) do not move it
        conn.execute(insert(AuditRow).values(at=T0, actor="x", action="sign_in", subject="user",
                                             subject_id="x", ip=""))
    changed()
    assert seen[:5] == sorted(seen[:5]) and len(set(seen[:5])) == 5 and seen[5] == seen[4]
    assert block_versions[0] == block_versions[1] == block_versions[2] < block_versions[3] < block_versions[4]
    assert block_versions[5] == block_versions[4]
