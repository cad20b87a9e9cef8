"""The referral store (db.referrals) on SQLite and PostgreSQL (fixture `engine`): made from a
case, status changes with optimistic concurrency, and the referral row, its event, the audit
row and the notices written together or not at all."""
from __future__ import annotations

import json
import threading
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

import db.referrals as referrals_module
from db.models import AuditRow, NoticeRow, ReferralEventRow, ReferralRow
from db.referrals import (
    AlreadyReferred,
    CaseNotFound,
    InvalidAssignment,
    ReferralNotFound,
    ReferralStore,
    StaleReferral,
)
from network.referrals import (
    IllegalTransition,
    Patient,
    ReasonRequired,
    ReferralStatus as S,
    Sex,
    patient,
)
from tests.adapters.test_console_calls import NOW, seed_calls
from tests.support.clock import Clock
from tests.support.console import seed_people
from tests.support.db_helpers import count

UTC = timezone.utc
T0 = NOW.astimezone(UTC)


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(engine, clock):
    seed_people(engine)
    seed_calls(engine)
    return ReferralStore(engine, clock=clock)


def written(engine) -> dict[str, int]:
    """How many rows of each kind a referral change writes."""
    return {"events": count(engine, ReferralEventRow), "audit": count(engine, AuditRow),
            "notices": count(engine, NoticeRow), "referrals": count(engine, ReferralRow)}


def notices(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(NoticeRow).order_by(NoticeRow.key)))


def audit_rows(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditRow).where(AuditRow.subject == "referral")
                                 .order_by(AuditRow.id)))


def test_a_case_becomes_a_referral_from_its_hospital_and_team(store, engine):
    essentials = patient(age=45, sex="male", injury="右手示指离断",
                         injured_at=T0 - timedelta(hours=2), now=T0)
    made = store.create("C-1", actor="user:sup", patient=essentials, note="请求接收", ip="10.0.0.9")
    assert made.id is not None and made.status is S.REQUESTED and made.version == 1
    assert (made.hospital_id, made.team, made.surgeon_id) == (1, "facial", None)

    listed = store.get(made.id)
    assert listed is not None
    assert listed.hospital_name == "长春市中心医院" and listed.team_name_zh == "颌面部创伤"
    r = listed.referral
    assert r.patient == essentials and r.created_at == T0 and r.updated_at == T0
    assert [(e.status, e.actor, e.note, e.at) for e in r.events] == [
        (S.REQUESTED, "user:sup", "请求接收", T0)]
    assert store.get_by_case("C-1") == listed

    [audit] = audit_rows(engine)
    assert (audit.actor, audit.action, audit.subject_id, audit.ip) == (
        "user:sup", "referral_create", str(made.id), "10.0.0.9")
    assert json.loads(audit.detail)["case"] == "C-1"
    [desk] = notices(engine)  # no receiving surgeon yet: the duty desk only
    assert desk.key == f"referral:{made.id}:v1:desk" and desk.surgeon_id is None
    assert desk.kind == "referral_status" and desk.team == "facial" and desk.due_at == T0
    assert "长春市中心医院" in desk.text_zh and "右手示指离断" in desk.text_zh
    assert "伤后2小时00分" in desk.text_zh and "已申请" in desk.text_zh
    assert "2 h 00 min ago" in desk.text_en


def test_a_case_without_a_partner_hospital_and_an_unknown_case(store, engine):
    made = store.create("C-2", actor="user:sup")
    assert made.hospital_id is None and made.team == "replant"
    assert made.patient == Patient()
    assert "未登记医院" in notices(engine)[0].text_zh
    before = written(engine)
    with pytest.raises(CaseNotFound):
        store.create("C-404", actor="user:sup")
    assert written(engine) == before


def test_a_case_is_referred_once(store, engine):
    first = store.create("C-1", actor="user:sup")
    before = written(engine)
    with pytest.raises(AlreadyReferred) as raised:
        store.create("C-1", actor="user:head")
    assert raised.value.referral_id == first.id
    assert written(engine) == before


def test_a_status_change_writes_the_row_event_audit_and_notices_together(store, engine, clock):
    made = store.create("C-1", actor="user:sup")
    store.assign(made.id, seen_version=1, team="replant", surgeon_id=3, actor="user:sup")
    clock.now = T0 + timedelta(minutes=7)
    before = written(engine)
    after = store.change_status(made.id, "accepted", seen_version=2, actor="user:doc3",
                                note="床位已备", by_surgeon=1)
    assert after.status is S.ACCEPTED and after.version == 3
    assert after.surgeon_id == 3  # assigned before: accepting does not take it over
    assert written(engine) == {**before, "events": before["events"] + 1,
                               "audit": before["audit"] + 1, "notices": before["notices"] + 2}
    r = store.get(made.id).referral
    assert (r.status, r.version, r.updated_at, r.team) == (S.ACCEPTED, 3, clock.now, "replant")
    assert [e.status for e in r.events] == [S.REQUESTED, S.ACCEPTED]
    assert r.events[-1].note == "床位已备" and r.events[-1].actor == "user:doc3"
    audit = audit_rows(engine)[-1]
    assert audit.action == "referral_status"
    assert json.loads(audit.detail) == {"from": "requested", "to": "accepted", "version": 3,
                                        "note": "床位已备"}
    keys = {n.key: n.surgeon_id for n in notices(engine)}
    assert keys[f"referral:{made.id}:v3:3"] == 3 and keys[f"referral:{made.id}:v3:desk"] is None
    assert "张伟" in next(n for n in notices(engine) if n.key.endswith("v3:3")).text_zh


def test_accepting_an_unassigned_referral_makes_the_surgeon_its_receiver(store, engine):
    made = store.create("C-2", actor="user:sup")
    after = store.change_status(made.id, S.ACCEPTED, seen_version=1, actor="user:doc3",
                                by_surgeon=3)
    assert after.surgeon_id == 3
    assert store.get(made.id).surgeon_name == "张伟"
    assert json.loads(audit_rows(engine)[-1].detail)["surgeon"] == 3


def test_a_stale_version_is_refused_and_nothing_is_written(store, engine):
    made = store.create("C-1", actor="user:sup")
    store.change_status(made.id, "accepted", seen_version=1, actor="user:sup")
    before = written(engine)
    with pytest.raises(StaleReferral) as raised:
        store.change_status(made.id, "declined", seen_version=1, actor="user:head", note="满床")
    assert (raised.value.seen, raised.value.current) == (1, 2)
    with pytest.raises(StaleReferral):
        store.edit_patient(made.id, Patient(30), seen_version=1, actor="user:head")
    with pytest.raises(StaleReferral):
        store.assign(made.id, seen_version=3, team=None, surgeon_id=None, actor="user:head")
    assert written(engine) == before
    assert store.get(made.id).referral.status is S.ACCEPTED


def test_illegal_changes_write_nothing(store, engine):
    made = store.create("C-1", actor="user:sup")
    before = written(engine)
    with pytest.raises(IllegalTransition):
        store.change_status(made.id, "arrived", seen_version=1, actor="user:sup")
    with pytest.raises(ReasonRequired):
        store.change_status(made.id, "declined", seen_version=1, actor="user:sup", note=" ")
    with pytest.raises(ReferralNotFound):
        store.change_status(made.id + 100, "accepted", seen_version=1, actor="user:sup")
    with pytest.raises(InvalidAssignment):
        store.assign(made.id, seen_version=1, team="nope", surgeon_id=None, actor="user:sup")
    with pytest.raises(InvalidAssignment):
        store.assign(made.id, seen_version=1, team=None, surgeon_id=777, actor="user:sup")
    assert written(engine) == before
    assert store.get(made.id).referral.version == 1


def test_a_failure_after_the_row_was_updated_rolls_everything_back(store, engine, monkeypatch):
    made = store.create("C-1", actor="user:sup")
    before = written(engine)

    def broken(*args, **kwargs):
        raise RuntimeError("the outbox is broken")

    # The notices are written last, after the row, the event and the audit row.
    monkeypatch.setattr(referrals_module, "referral_notices", broken)
    with pytest.raises(RuntimeError):
        store.change_status(made.id, "accepted", seen_version=1, actor="user:sup")
    with pytest.raises(RuntimeError):
        store.create("C-2", actor="user:sup")
    assert written(engine) == before
    r = store.get(made.id).referral
    assert (r.status, r.version, len(r.events)) == (S.REQUESTED, 1, 1)


def test_a_notice_already_in_the_outbox_is_not_sent_twice(store, engine):
    made = store.create("C-1", actor="user:sup")
    with engine.begin() as conn:  # as if a retried write had put it there already
        conn.execute(NoticeRow.__table__.insert().values(
            key=f"referral:{made.id}:v2:desk", kind="referral_status", team="facial",
            surgeon_id=None, due_at=T0, text_zh="旧", text_en="old", created_at=T0, attempts=0))
    store.change_status(made.id, "accepted", seen_version=1, actor="user:sup")
    mine = [n for n in notices(engine) if n.key == f"referral:{made.id}:v2:desk"]
    assert [n.text_en for n in mine] == ["old"]


def test_two_people_changing_the_same_version_at_once_one_wins(store, engine):
    made = store.create("C-1", actor="user:sup")
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def act(who: str, status: str, note: str) -> None:
        barrier.wait()
        try:
            results[who] = store.change_status(made.id, status, seen_version=1,
                                               actor=f"user:{who}", note=note).status
        except Exception as exc:  # noqa: BLE001 -- the test looks at what came out
            results[who] = exc

    threads = [threading.Thread(target=act, args=("sup", "accepted", "")),
               threading.Thread(target=act, args=("head", "declined", "满床"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    won = [v for v in results.values() if isinstance(v, S)]
    lost = [v for v in results.values() if isinstance(v, StaleReferral)]
    assert len(won) == 1 and len(lost) == 1, results
    r = store.get(made.id).referral
    assert r.version == 2 and r.status is won[0]
    assert [e.status for e in r.events] == [S.REQUESTED, won[0]]
    assert len([a for a in audit_rows(engine) if a.action == "referral_status"]) == 1


def test_editing_the_essentials_is_audited_with_before_and_after(store, engine, clock):
    made = store.create("C-2", actor="user:sup", patient=Patient(30, Sex.MALE, "断指", None))
    clock.now = T0 + timedelta(minutes=3)
    new = patient(age=31, sex="male", injury="左拇指离断", injured_at=T0 - timedelta(hours=1),
                  now=clock.now)
    after = store.edit_patient(made.id, new, seen_version=1, actor="user:doc3")
    assert after.version == 2 and after.patient == new
    assert store.get(made.id).referral.patient == new
    assert len(store.get(made.id).referral.events) == 1  # not a status change: no event
    detail = json.loads(audit_rows(engine)[-1].detail)
    assert detail["before"]["injury"] == "断指" and detail["after"]["injury"] == "左拇指离断"
    assert f"referral:{made.id}:v2:desk" in {n.key for n in notices(engine)}


def test_the_list_filters_and_puts_open_referrals_first(store, engine, clock):
    a = store.create("C-1", actor="user:sup")  # hospital 1, facial
    clock.now = T0 + timedelta(minutes=1)
    b = store.create("C-2", actor="user:sup")  # no hospital, replant
    clock.now = T0 + timedelta(minutes=2)
    c = store.create("C-6", actor="user:sup")  # hospital 2, facial
    clock.now = T0 + timedelta(minutes=3)
    store.change_status(c.id, "declined", seen_version=1, actor="user:sup", note="不需转诊")
    clock.now = T0 + timedelta(minutes=4)
    store.change_status(a.id, "accepted", seen_version=1, actor="user:sup")

    def ids(**filters) -> list[int]:
        return [x.referral.id for x in store.list(**filters)]

    assert ids() == [a.id, b.id, c.id]  # open (latest change first), then closed
    assert ids(open_only=True) == [a.id, b.id]
    assert ids(status=S.DECLINED) == [c.id]
    assert ids(status=[S.ACCEPTED, S.REQUESTED]) == [a.id, b.id]
    assert ids(hospital_id=1) == [a.id]
    assert ids(team="facial") == [a.id, c.id]
    assert ids(team="facial", open_only=True) == [a.id]
    assert ids(limit=1) == [a.id]


def test_a_surgeon_sees_the_referrals_of_their_cases_and_those_assigned_to_them(store):
    # Surgeon 1 took part in C-1, C-3, C-6; surgeon 3 in C-2, C-7; surgeon 2 in C-1, C-4.
    one = store.create("C-1", actor="user:sup")
    two = store.create("C-2", actor="user:sup")
    four = store.create("C-4", actor="user:sup")
    assert [x.referral.id for x in store.list(only_surgeon=1)] == [one.id]
    assert {x.referral.id for x in store.list(only_surgeon=2)} == {one.id, four.id}
    assert store.may_see(two.id, 3) and not store.may_see(two.id, 1)
    store.assign(two.id, seen_version=1, team="replant", surgeon_id=1, actor="user:sup")
    assert store.may_see(two.id, 1)
    assert {x.referral.id for x in store.list(only_surgeon=1)} == {one.id, two.id}
    assert store.list(only_surgeon=0) == []


def test_two_people_referring_the_same_case_at_once_make_one_referral(store, engine):
    before = written(engine)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def act(who: str) -> None:
        barrier.wait()
        try:
            results[who] = store.create("C-2", actor=f"user:{who}").id
        except Exception as exc:  # noqa: BLE001 -- the test looks at what came out
            results[who] = exc

    threads = [threading.Thread(target=act, args=(who,)) for who in ("sup", "head")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    made = [v for v in results.values() if isinstance(v, int)]
    refused = [v for v in results.values() if isinstance(v, AlreadyReferred)]
    assert len(made) == 1 and len(refused) == 1, results
    assert refused[0].referral_id == made[0]
    after = written(engine)
    assert {k: after[k] - before[k] for k in after} == {"events": 1, "audit": 1, "notices": 1,
                                                        "referrals": 1}
