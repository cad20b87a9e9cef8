"""CallbackStore on SQLite and PostgreSQL: creation exactly once with the case, the
placement hand-over between console and service, results, closing, audit rows."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from cases.lifecycle import (
    end_attempt,
    mark_ended,
    open_case,
    record_menu,
    set_team,
    set_voicemail,
    start_attempt,
)
from db.callbacks import CallbackStore, Changed, UnknownCallback
from db.models import AuditRow, CallbackRow
from db.repo import CaseRepository, write_roster
from network.callbacks import (
    REQUEST_TTL,
    AlreadyPlacing,
    CallbackReason,
    CallbackStatus,
    NumberUnknown,
    PlacementOutcome,
    TaskClosed,
)
from oncall.model import Rank, Role, Shift, Surgeon, Team
from routing.callers import classify
from routing.escalation import ChainStep
from tests.support.clock import Clock
from tests.support.db_helpers import count

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(s(100))


@pytest.fixture
def seeded(engine):
    with engine.begin() as conn:
        write_roster(conn, [Team("facial", "颌面部创伤", "Facial")],
                     [Surgeon(101, "王建国", "13800000101", Rank.ATTENDING),
                      Surgeon(102, "李明", "13800000102", Rank.RESIDENT)],
                     [Shift("facial", 101, Role.PRIMARY, T0 - timedelta(hours=2),
                            T0 + timedelta(hours=2))])
    return engine


def voicemail_case(case_id="C-1", linkedid="1.1", caller="13912345678"):
    case = open_case(case_id, linkedid, classify(caller, {}), T0)
    record_menu(case, s(5), "1", "facial")
    set_team(case, s(5), "facial")
    start_attempt(case, s(6), 1, "chain", PRIMARY)
    end_attempt(case, s(31), 1, "no-answer")
    set_voicemail(case, s(40), "/rec/C-1-voicemail.wav")
    mark_ended(case, s(70), "system")
    return case


def audit(engine, task_id: int) -> list[tuple[str, str, list]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditRow).where(AuditRow.subject == "callback",
                                                   AuditRow.subject_id == str(task_id))
                            .order_by(AuditRow.id)).all()
    return [(r.actor, r.action, (json.loads(r.detail) or {}).get("status")) for r in rows]


def test_a_case_opens_its_task_exactly_once_with_owner_and_number(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    case = voicemail_case()
    for _ in range(3):
        case.revision += 1
        repo.save(case)
    assert count(seeded, CallbackRow) == 1
    task = CallbackStore(seeded, clock).for_case("C-1")
    assert (task.reason, task.status, task.due_at, task.number, task.team,
            task.owner_surgeon_id) == (CallbackReason.VOICEMAIL, CallbackStatus.OPEN, s(40),
                                       "13912345678", "facial", 101)
    assert audit(seeded, task.id) == [("service", "callback_created", None)]


def test_two_threads_saving_the_same_abandoned_case_make_one_task(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    case = open_case("C-9", "9.9", classify("13912345678", {}), T0)
    set_team(case, s(5), "facial")
    mark_ended(case, s(9), "caller")
    barrier = threading.Barrier(4)
    errors = []

    def save():
        barrier.wait()
        try:
            repo.save(case)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(seeded, CallbackRow) == 1
    task = CallbackStore(seeded, clock).for_case("C-9")
    assert task.reason is CallbackReason.ABANDONED and task.due_at == s(9) + timedelta(minutes=5)
    assert len(audit(seeded, task.id)) == 1


def test_a_callback_case_opens_no_task_and_links_back(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    repo.save(voicemail_case())
    callback = open_case("C-2", "2.2", classify("13912345678", {}), s(200), linked_case_id="C-1")
    mark_ended(callback, s(230), "caller")
    repo.save(callback)
    assert repo.get("C-2").linked_case_id == "C-1"
    store = CallbackStore(seeded, clock)
    assert store.for_case("C-2") is None and count(seeded, CallbackRow) == 1
    assert [c for c, _, _ in store.linked_cases("C-1")] == ["C-2"]


def test_placement_hand_over_from_console_to_service_and_result(seeded, clock):
    CaseRepository(seeded, clock=clock).save(voicemail_case())
    store = CallbackStore(seeded, clock)
    task = store.for_case("C-1")
    placing = store.request_placement(task.id, "user:sup")
    assert (placing.status, placing.attempts, placing.placed_by) == (CallbackStatus.PLACING, 1,
                                                                     "user:sup")
    with pytest.raises(AlreadyPlacing):  # a second click
        store.request_placement(task.id, "user:head")
    assert [t.id for t in store.requests()] == [task.id]
    taken = store.take(task.id)
    assert taken is not None and taken.surgeon_phone == "13800000101"
    assert taken.task.status is CallbackStatus.PLACED
    assert store.take(task.id) is None  # taken once only
    assert store.set_callback_case(task.id, "C-2")
    done = store.record_result(task.id, PlacementOutcome.CONNECTED, "C-2")
    assert (done.status, done.callback_case_id, done.closed_by) == (CallbackStatus.DONE, "C-2",
                                                                    "service")
    assert store.record_result(task.id, PlacementOutcome.CALLER_NO_ANSWER) is None  # settled
    assert audit(seeded, task.id) == [
        ("service", "callback_created", None),
        ("user:sup", "callback_place", ["open", "placing"]),
        ("service", "callback_originate", ["placing", "placed"]),
        ("service", "callback_case", None),
        ("service", "callback_result", ["placed", "done"]),
    ]


def test_two_simultaneous_requests_make_one_placement(seeded, clock):
    CaseRepository(seeded, clock=clock).save(voicemail_case())
    store = CallbackStore(seeded, clock)
    task_id = store.for_case("C-1").id
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def click(n: int):
        barrier.wait()
        try:
            store.request_placement(task_id, f"user:u{n}")
            outcomes.append("placing")
        except (AlreadyPlacing, Changed) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=click, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("placing") == 1 and len(outcomes) == 4
    assert store.get(task_id).attempts == 1


def test_failure_reopens_unknown_numbers_are_refused_and_closing_needs_a_note(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    repo.save(voicemail_case())
    anonymous = voicemail_case("C-3", "3.3", caller=None)
    repo.save(anonymous)
    store = CallbackStore(seeded, clock)
    task_id = store.for_case("C-1").id
    store.request_placement(task_id, "user:sup")
    store.take(task_id)
    reopened = store.record_result(task_id, PlacementOutcome.SURGEON_NO_ANSWER)
    assert reopened.status is CallbackStatus.OPEN and reopened.note.startswith("医生未接听")
    unknown = store.for_case("C-3")
    assert unknown.number is None
    with pytest.raises(NumberUnknown):
        store.request_placement(unknown.id, "user:sup")
    closed = store.close(unknown.id, "user:sup", "她在留言里留了号码，已用手机回电")
    assert closed.status is CallbackStatus.DONE and closed.closed_by == "user:sup"
    with pytest.raises(TaskClosed):
        store.close(unknown.id, "user:sup", "again")
    with pytest.raises(UnknownCallback):
        store.close(999, "user:sup", "x")
    assert audit(seeded, unknown.id)[-1] == ("user:sup", "callback_close", ["open", "done"])


def test_assign_and_the_lists(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    repo.save(voicemail_case())
    repo.save(voicemail_case("C-4", "4.4", caller="13912340000"))
    store = CallbackStore(seeded, clock)
    first, second = store.for_case("C-1"), store.for_case("C-4")
    store.assign(second.id, 102, "user:doc2")
    with pytest.raises(Exception):
        store.assign(second.id, 555, "user:doc2")  # no such surgeon
    clock.now = s(30)  # before the voicemails: nothing overdue yet
    assert store.list("overdue") == []
    clock.now = s(100)
    assert [r.task.id for r in store.list("overdue")] == [first.id, second.id]
    mine = store.list("mine", surgeon_id=102)
    assert [(r.task.id, r.owner_name, r.team_name_zh, r.caller_raw_safe) for r in mine] == [
        (second.id, "李明", "颌面部创伤", "13912340000")]
    store.close(first.id, "user:sup", "done by phone")
    assert [r.task.id for r in store.list("active")] == [second.id]
    assert [r.task.id for r in store.list("closed")] == [first.id]
    assert [r.task.id for r in store.list("all")] == [second.id, first.id]  # active first
    with pytest.raises(ValueError):
        store.list("everything")


def test_stale_requests_expire_and_interrupted_placements_are_not_resumed(seeded, clock):
    repo = CaseRepository(seeded, clock=clock)
    repo.save(voicemail_case())
    repo.save(voicemail_case("C-5", "5.5"))
    store = CallbackStore(seeded, clock)
    stale, interrupted = store.for_case("C-1").id, store.for_case("C-5").id
    store.request_placement(stale, "user:sup")
    store.request_placement(interrupted, "user:sup")
    assert store.take(interrupted) is not None
    clock.now = s(101) + REQUEST_TTL
    assert store.take(stale) is None  # too old to ring anyone now
    assert store.get(stale).status is CallbackStatus.OPEN
    assert "服务未运行" in store.get(stale).note
    assert store.settle_interrupted(keep={interrupted}) == []
    assert store.settle_interrupted() == [interrupted]
    after = store.get(interrupted)
    assert after.status is CallbackStatus.OPEN and after.note.startswith("结果未知")
    assert store.requests() == []


@pytest.mark.parametrize("phone", ["１３８00000101", "١٣٨00000101", "²²²"])
def test_a_surgeon_phone_of_non_ascii_digits_is_never_handed_to_originate(seeded, clock, phone):
    """Review of issue 6: str.isdigit() is true for full-width, Arabic-Indic and superscript
    digits; such a phone must not reach the Originate's Channel (PJSIP/<phone>@surgeons)."""
    from sqlalchemy import update

    from db.models import SurgeonRow

    with seeded.begin() as conn:
        conn.execute(update(SurgeonRow).where(SurgeonRow.id == 101).values(phone=phone))
    CaseRepository(seeded, clock=clock).save(voicemail_case())
    store = CallbackStore(seeded, clock)
    task = store.for_case("C-1")
    store.request_placement(task.id, "user:sup")
    assert store.take(task.id) is None
    assert store.get(task.id).status is CallbackStatus.OPEN
