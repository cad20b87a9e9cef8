"""The incident store on SQLite and PostgreSQL: switches, refusals, and the audit entry and the
department heads' alerts written in the same transaction as the switch."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from db.incidents import IncidentStore
from db.models import AuditRow, IncidentRow, NoticeRow
from db.notices import NoticeRepository
from db.repo import write_roster
from network.incidents import IncidentError
from oncall.model import Rank, Role, Shift, Surgeon, Team
from oncall.notices import MAJOR_INCIDENT

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
TEAMS = (Team("facial", "颌面部创伤", "Facial", department_head=9),
         Team("replant", "断肢(指)再植", "Replantation"),  # no configured head: the shift's
         Team("burns", "烧伤", "Burns"))  # no head at all
SURGEONS = (Surgeon(1, "甲", "13700000101", Rank.ATTENDING), Surgeon(7, "庚主任", "13700000107", Rank.CHIEF),
            Surgeon(9, "赵主任", "13800000009", Rank.CHIEF))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(engine):
    shifts = (Shift("replant", 7, Role.DEPARTMENT_HEAD, T0 - timedelta(days=1), T0 + timedelta(days=1)),)
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, shifts)
    clock = Clock()
    return IncidentStore(engine, clock), clock, engine


def notices(engine):
    with engine.connect() as conn:
        return list(conn.execute(select(NoticeRow).order_by(NoticeRow.key)))


def audit(engine):
    with engine.connect() as conn:
        return list(conn.execute(select(AuditRow).where(AuditRow.subject == "incident")
                                 .order_by(AuditRow.id)))


def test_switch_on_writes_the_incident_its_audit_entry_and_the_alerts_together(store):
    incidents, clock, engine = store
    incident = incidents.switch_on("facial", "user:sup", "highway pile-up\r\nfake line", ip="10.0.0.5")
    assert (incident.team, incident.started_at, incident.started_by) == ("facial", T0, "user:sup")
    assert incident.note == "highway pile-up fake line"  # one line, whatever was typed
    assert [i.id for i in incidents.active()] == [incident.id]
    [entry] = audit(engine)
    assert (entry.actor, entry.action, entry.subject_id, entry.ip) == (
        "user:sup", "incident_on", str(incident.id), "10.0.0.5")
    assert json.loads(entry.detail) == {"team": "facial", "note": incident.note}
    rows = notices(engine)
    assert [(n.key, n.kind, n.team, n.surgeon_id) for n in rows] == [
        (f"major_incident:{incident.id}:on:9", MAJOR_INCIDENT, "facial", 9),
        (f"major_incident:{incident.id}:on:desk", MAJOR_INCIDENT, "facial", None)]
    assert "重大突发事件" in rows[0].text_zh and "facial" in rows[0].text_en
    # the outbox delivers them like any other notice
    pending = NoticeRepository(engine, clock).pending(T0)
    assert {p.notice.key for p in pending} == {n.key for n in rows}


def test_all_teams_alerts_every_department_head_once_and_the_desk(store):
    incidents, clock, engine = store
    incident = incidents.switch_on(None, "api:ops", "mine collapse")
    assert incident.team is None
    assert {(n.surgeon_id, n.team) for n in notices(engine)} == {(9, "facial"), (7, "replant"),
                                                                 (None, None)}


def test_switch_off_ends_it_audited_and_alerted(store):
    incidents, clock, engine = store
    started = incidents.switch_on("replant", "user:sup")
    clock.now = T0 + timedelta(hours=2)
    ended = incidents.switch_off("replant", "cli:root")
    assert (ended.id, ended.ended_at, ended.ended_by) == (started.id, clock.now, "cli:root")
    assert incidents.active() == []
    assert [e.action for e in audit(engine)] == ["incident_on", "incident_off"]
    assert sorted(n.key for n in notices(engine)) == sorted(
        f"major_incident:{started.id}:{s}:{r}" for s in ("on", "off") for r in ("7", "desk"))
    assert "恢复逐个呼叫" in [n for n in notices(engine) if ":off:" in n.key][0].text_zh


def test_refusals_write_nothing(store):
    incidents, clock, engine = store
    incidents.switch_on(None, "user:sup")
    before = (len(audit(engine)), len(notices(engine)))
    with pytest.raises(IncidentError, match="covered by the all-teams"):
        incidents.switch_on("facial", "user:sup")
    with pytest.raises(IncidentError, match="already on for all"):
        incidents.switch_on(None, "user:sup")
    with pytest.raises(IncidentError, match="only through the all-teams"):
        incidents.switch_off("facial", "user:sup")
    with pytest.raises(IncidentError, match="unknown team"):
        incidents.switch_on("nope", "user:sup")
    with pytest.raises(IncidentError):
        incidents.switch_on("facial'; DROP TABLE incidents; --", "user:sup")
    assert (len(audit(engine)), len(notices(engine))) == before
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(IncidentRow)).scalar() == 1


def test_version_moves_on_every_switch_and_history_keeps_them(store):
    incidents, clock, engine = store
    seen = [incidents.version()]
    incidents.switch_on("facial", "user:sup")
    seen.append(incidents.version())
    clock.now += timedelta(minutes=1)
    incidents.switch_off("facial", "user:sup")
    seen.append(incidents.version())
    clock.now += timedelta(minutes=1)
    incidents.switch_on("facial", "user:sup")
    seen.append(incidents.version())
    assert len(set(seen)) == 4
    assert [(i.team, i.ended_at is None) for i in incidents.history()] == [("facial", True),
                                                                           ("facial", False)]


def test_two_switches_at_once_give_one_incident_and_one_refusal(store):
    incidents, clock, engine = store
    results: list[object] = []
    barrier = threading.Barrier(4)

    def switch() -> None:
        barrier.wait()
        try:
            results.append(incidents.switch_on("burns", "user:sup"))
        except IncidentError as exc:
            results.append(exc)

    threads = [threading.Thread(target=switch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(not isinstance(r, IncidentError) for r in results) == 1
    assert len(results) == 4
    assert len(incidents.active()) == 1
    assert len(audit(engine)) == 1
