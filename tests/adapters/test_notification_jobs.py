"""Missed-call and callback-due collection on SQLite and PostgreSQL: idempotent, with a look-back."""
from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, insert, update

from db.models import CallbackRow, CaseRow
from db.notices import NoticeRepository
from db.notification_sources import NotificationSources
from db.repo import RosterRepository
from db.seed import PartnerHospital, seed_partners, seed_roster
from hotline.networkjobs import (MISSED_LOOKBACK, NETWORK_COLLECT_JOB_ID, add_network_jobs,
                                 collect_network_notices)
from hotline.rosterjobs import deliver_notices
from oncall.model import Role, Shift, Surgeon, Team
from oncall.notices import Notice
from tests.support.outbox import MemoryOutbox

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TEAMS = (Team("facial", "颌面部创伤", "Facial trauma"), Team("replant", "断肢(指)再植", "Replantation"))
SURGEONS = (Surgeon(1, "甲", "13700000101"), Surgeon(2, "乙", "13700000102"),
            Surgeon(3, "丙", "13700000201"))
_linked = itertools.count(1)


def seed(engine: Engine) -> None:
    day = timedelta(days=1)
    seed_roster(engine, TEAMS, SURGEONS, [Shift("facial", 1, Role.PRIMARY, NOW - day, NOW + day),
                                          Shift("facial", 2, Role.BACKUP, NOW - day, NOW + day),
                                          Shift("replant", 3, Role.PRIMARY, NOW - day, NOW + day)])


def add_case(engine: Engine, case_id: str, *, outcome: str = "voicemail", team: str | None = "facial",
             ended: datetime | None = NOW - timedelta(minutes=5), number: str | None = "13812345678",
             caller_class: str = "public", hospital_id: int | None = None) -> None:
    started = (ended or NOW) - timedelta(minutes=2)
    with engine.begin() as conn:
        conn.execute(insert(CaseRow).values(
            case_id=case_id, linkedid=f"1764554400.{next(_linked)}", revision=3,
            caller_number=number, caller_class=caller_class, caller_raw=number,
            caller_raw_safe=number or "", language="zh", team=team, started_at=started,
            ended_at=ended, outcome=outcome, updated_at=ended or NOW,
            partner_hospital_id=hospital_id))


def add_callback(engine: Engine, case_id: str, due: datetime, *, owner: int | None = None,
                 team: str | None = "facial", status: str = "open", number: str | None = None) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(CallbackRow).values(
            case_id=case_id, reason="voicemail", due_at=due, status=status, created_at=due,
            number=number, team=team, owner_surgeon_id=owner).returning(CallbackRow.id)).scalar_one()


def collect(engine: Engine, outbox, now: datetime = NOW) -> list[Notice]:
    roster = RosterRepository(engine).load(now - timedelta(days=1), now + timedelta(days=1))
    return collect_network_notices(NotificationSources(engine), roster, outbox, now)


def test_missed_calls_are_collected_once_even_across_a_restart(engine: Engine):
    seed(engine)
    add_case(engine, "c-voicemail")
    seed_partners(engine, [PartnerHospital(1, "吉林市中心医院", "三级甲等", "吉林", ("043188888888",))])
    add_case(engine, "c-abandoned", outcome="abandoned", ended=NOW - timedelta(hours=3),
             caller_class="partner", number="043188888888", hospital_id=1)
    add_case(engine, "c-replant", team="replant", ended=NOW - timedelta(minutes=1))
    # Not missed calls:
    add_case(engine, "c-connected", outcome="connected")
    add_case(engine, "c-nurse", outcome="nurse", team="nurse")
    add_case(engine, "c-fallback", outcome="fallback")
    add_case(engine, "c-menu", outcome="abandoned", team=None)
    add_case(engine, "c-live", outcome="in-progress", ended=None)
    outbox = NoticeRepository(engine)
    new = collect(engine, outbox)
    assert [(n.key, n.surgeon_id) for n in new] == [
        ("missed:c-abandoned:1", 1), ("missed:c-abandoned:desk", None),
        ("missed:c-voicemail:1", 1), ("missed:c-voicemail:desk", None),
        ("missed:c-replant:3", 3), ("missed:c-replant:desk", None)]
    assert "043188888888（合作医院：吉林市中心医院）" in new[0].text_zh
    assert collect(engine, outbox) == []
    # A restart: a new outbox object on the same database, a minute later.
    assert collect(engine, NoticeRepository(engine), NOW + timedelta(minutes=1)) == []
    assert len(outbox.pending(NOW)) == 6


def test_the_look_back_catches_a_case_written_late_and_drops_stale_ones(engine: Engine):
    seed(engine)
    add_case(engine, "c-stale", ended=NOW - MISSED_LOOKBACK - timedelta(seconds=1))
    add_case(engine, "c-edge", ended=NOW - MISSED_LOOKBACK)
    outbox = NoticeRepository(engine)
    assert [n.key for n in collect(engine, outbox)] == ["missed:c-edge:1", "missed:c-edge:desk"]
    # Written (from the journal) an hour after it ended, while the service was down:
    add_case(engine, "c-late", ended=NOW - timedelta(hours=1))
    assert [n.key for n in collect(engine, outbox, NOW + timedelta(minutes=30))] == [
        "missed:c-late:1", "missed:c-late:desk"]


def test_callbacks_due_are_collected_once_and_again_when_moved(engine: Engine):
    seed(engine)
    for case_id in ("c1", "c2", "c3", "c4", "c5"):
        add_case(engine, case_id, outcome="connected")
    owned = add_callback(engine, "c1", NOW - timedelta(minutes=10), owner=2)
    unowned = add_callback(engine, "c2", NOW - timedelta(minutes=1))
    later = add_callback(engine, "c3", NOW + timedelta(minutes=1))  # not due yet
    add_callback(engine, "c4", NOW - timedelta(minutes=5), status="done")
    add_callback(engine, "c5", NOW - timedelta(days=2))  # older than the look-back
    outbox = NoticeRepository(engine)
    new = collect(engine, outbox)
    assert [(n.key, n.surgeon_id) for n in new] == [
        (f"callback-due:{owned}:20261201T015000Z:2", 2),
        (f"callback-due:{owned}:20261201T015000Z:desk", None),
        (f"callback-due:{unowned}:20261201T015900Z:1", 1),
        (f"callback-due:{unowned}:20261201T015900Z:desk", None)]
    assert "回拨 13812345678" in new[0].text_zh  # the case's number, the task having none
    assert collect(engine, outbox, NOW + timedelta(seconds=30)) == []
    # Moved to later: announced again once that time comes.
    with engine.begin() as conn:
        conn.execute(update(CallbackRow).where(CallbackRow.id == owned)
                     .values(due_at=NOW + timedelta(minutes=30)))
    assert [n.key for n in collect(engine, outbox, NOW + timedelta(minutes=29))] == [
        f"callback-due:{later}:20261201T020100Z:1", f"callback-due:{later}:20261201T020100Z:desk"]
    assert [n.key for n in collect(engine, outbox, NOW + timedelta(minutes=30))] == [
        f"callback-due:{owned}:20261201T023000Z:2", f"callback-due:{owned}:20261201T023000Z:desk"]


def test_collected_notices_are_delivered_by_the_roster_deliver_step(engine: Engine):
    seed(engine)
    add_case(engine, "c1")
    outbox = NoticeRepository(engine)
    collect(engine, outbox)
    sent: list[tuple[str, int | None]] = []

    class Recorder:
        def send(self, notice, recipient):
            sent.append((notice.key, None if recipient is None else recipient.id))

    surgeons = {s.id: s for s in SURGEONS}
    assert deliver_notices(outbox, Recorder(), surgeons, NOW).sent == 2
    assert sent == [("missed:c1:1", 1), ("missed:c1:desk", None)]
    assert deliver_notices(outbox, Recorder(), surgeons, NOW + timedelta(minutes=1)).sent == 0


def test_a_failing_source_is_logged_and_the_other_producer_still_runs(engine: Engine, caplog):
    seed(engine)
    add_case(engine, "c1", outcome="connected")
    add_callback(engine, "c1", NOW - timedelta(minutes=1))

    class HalfBroken(NotificationSources):
        def missed_calls(self, since, until):
            raise OSError("cases table away")

    roster = RosterRepository(engine).load(NOW - timedelta(days=1), NOW + timedelta(days=1))
    new = collect_network_notices(HalfBroken(engine), roster, MemoryOutbox(), NOW)
    assert [n.kind for n in new] == ["callback_due", "callback_due"]
    assert any("missed-call notices failed" in r.getMessage() for r in caplog.records)


def test_the_scheduled_job_runs_at_once_on_a_real_scheduler(engine: Engine):
    seed(engine)
    add_case(engine, "c1")
    outbox = MemoryOutbox()
    done = threading.Event()

    class Signalling(MemoryOutbox):
        def add(self, notices):
            new = outbox.add(notices)
            done.set()
            return new

    roster = RosterRepository(engine)
    scheduler = BackgroundScheduler(timezone=UTC)
    job = add_network_jobs(scheduler, source=NotificationSources(engine),
                           roster=lambda: roster.load(NOW - timedelta(days=1), NOW + timedelta(days=1)),
                           outbox=Signalling(), clock=lambda: NOW)
    assert job.id == NETWORK_COLLECT_JOB_ID
    scheduler.start()
    try:
        assert done.wait(30), "the collect job never ran"
    finally:
        scheduler.shutdown(wait=True)
    assert outbox.keys() == {"missed:c1:1", "missed:c1:desk"}


def test_a_window_with_more_missed_calls_than_one_read_misses_none(engine: Engine, monkeypatch):
    # A mass-casualty hour: more missed calls than one batch, some ending at the
    # same instant (the keyset must not skip or repeat across a page boundary).
    import db.notification_sources as sources

    monkeypatch.setattr(sources, "BATCH", 4)
    seed(engine)
    ended = [NOW - timedelta(minutes=30) + timedelta(seconds=(i // 3)) for i in range(11)]
    for i, at in enumerate(ended):
        add_case(engine, f"c-flood-{i:02d}", ended=at)
    calls = NotificationSources(engine).missed_calls(NOW - timedelta(hours=1), NOW)
    assert [c.case_id for c in calls] == [f"c-flood-{i:02d}" for i in range(11)]
    for i in range(3):
        add_callback(engine, f"c-flood-{i:02d}", NOW - timedelta(minutes=10))
    for i in range(3, 9):
        add_callback(engine, f"c-flood-{i:02d}", NOW - timedelta(minutes=9))
    due = NotificationSources(engine).due_callbacks(NOW - timedelta(hours=1), NOW)
    assert len(due) == 9 and len({d.id for d in due}) == 9
    assert [d.due_at for d in due] == sorted(d.due_at for d in due)
