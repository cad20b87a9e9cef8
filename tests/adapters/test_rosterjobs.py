"""The roster jobs on a real APScheduler BackgroundScheduler, with an in-memory outbox."""
from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES,
                                JobExecutionEvent, JobSubmissionEvent)
from apscheduler.schedulers.background import BackgroundScheduler

from hotline import rosterjobs
from hotline.notify import LogNotifier, NotifyError
from hotline.rosterjobs import (COLLECT_JOB_ID, DELIVER_JOB_ID, HANDOFF_JOB_ID, Delivery,
                                HandoffPusher, add_roster_jobs, collect_job, collect_notices,
                                deliver_job, deliver_notices, handoff_pusher)
from oncall.model import Role, Roster, Shift, Surgeon, Team
from oncall.notices import SHIFT_REMINDER, Notice
from oncall.rotation import Rotation
from tests.support.outbox import MemoryOutbox, check_outbox_contract

UTC = timezone.utc
SH = ZoneInfo("Asia/Shanghai")
P, B = Role.PRIMARY, Role.BACKUP
NOW = datetime(2026, 3, 2, 7, 40, tzinfo=SH)  # reminders for 08:00 due, digest due, a gap ahead
WAIT_S = 15.0  # generous: only a broken job waits this long


def sh(mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, tzinfo=SH)


def make_roster(rotations=(), shifts=()) -> Roster:
    return Roster(teams={"facial": Team("facial", "颌面部创伤", "Facial", department_head=9),
                         "replant": Team("replant", "断肢(指)再植", "Replant")},
                  surgeons={i: Surgeon(i, f"医生{i}", f"1380000{i:04d}") for i in range(1, 20)},
                  rotations=tuple(rotations), shifts=tuple(shifts))


ROSTER = make_roster(rotations=[
    Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
    Rotation.daily("facial", B, [3, 4], date(2026, 3, 1)),
    Rotation.daily("replant", P, [11, 12], date(2026, 3, 1), until=date(2026, 3, 5)),
    Rotation.daily("replant", B, [13, 14], date(2026, 3, 1)),
])


class RecordingNotifier:
    def __init__(self, fail: Callable[[Notice], Exception | None] = lambda n: None):
        self.fail = fail
        self.sent: list[tuple[str, int | None]] = []
        self.tries: list[str] = []
        self._lock = threading.Lock()

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        with self._lock:
            self.tries.append(notice.key)
            error = self.fail(notice)
            if error is not None:
                raise error
            assert (recipient is None) == (notice.surgeon_id is None)
            assert recipient is None or recipient.id == notice.surgeon_id
            self.sent.append((notice.key, notice.surgeon_id))


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    made: list[BackgroundScheduler] = []

    def make() -> BackgroundScheduler:
        s = BackgroundScheduler(timezone=UTC)
        made.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in made:
        if s.running:
            s.shutdown(wait=True)


class Runs:
    """Runs a job now and waits for that run (not one that was already on its way)."""

    def __init__(self, scheduler: BackgroundScheduler):
        self.scheduler = scheduler
        self.runs: list[JobExecutionEvent] = []
        self.skipped: list[JobSubmissionEvent] = []
        self._cond = threading.Condition()
        scheduler.add_listener(self._on_event,
                               EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)

    def _on_event(self, event) -> None:
        with self._cond:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                self.skipped.append(event)
            else:
                self.runs.append(event)
            self._cond.notify_all()

    @property
    def errors(self) -> list[JobExecutionEvent]:
        return [e for e in self.runs if e.exception is not None]

    def count(self, job_id: str) -> int:
        return sum(e.job_id == job_id for e in self.runs)

    def wait(self, job_id: str, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.count(job_id) >= count, WAIT_S), (
                f"{job_id} ran {self.count(job_id)} times, not {count}")

    def run_now(self, job_id: str) -> None:
        """Run the job once, now, and wait for that run; asked again if it was skipped
        because the job's interval run was still going."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            asked = datetime.now(UTC)
            self.scheduler.modify_job(job_id, next_run_time=asked)

            def seen() -> str | None:
                if any(e.job_id == job_id and e.scheduled_run_time >= asked for e in self.runs):
                    return "ran"
                if any(e.job_id == job_id and min(e.scheduled_run_times) >= asked
                       for e in self.skipped):
                    return "skipped"
                return None

            with self._cond:
                outcome = self._cond.wait_for(seen, max(0.0, deadline - time.monotonic()))
            if outcome == "ran":
                return
        raise AssertionError(f"{job_id} did not run")


def start(scheduler: BackgroundScheduler, outbox, notifier, clock, roster=ROSTER,
          push=lambda: None) -> Runs:
    add_roster_jobs(scheduler, roster=lambda: roster, outbox=outbox, notifier=notifier,
                    push_chains=push, clock=clock, teams=["facial", "replant"])
    runs = Runs(scheduler)
    scheduler.start()
    runs.wait(COLLECT_JOB_ID, 1)  # collection runs at start
    return runs


# --------------------------------------------------------------------------- the outbox


def test_the_memory_outbox_keeps_the_contract():
    check_outbox_contract(MemoryOutbox())


# --------------------------------------------------------------------------- wiring


def test_the_jobs_are_added_once_each_one_run_at_a_time(scheduler):
    s = scheduler()
    s.start(paused=True)
    kw = dict(roster=lambda: ROSTER, outbox=MemoryOutbox(), notifier=LogNotifier(),
              push_chains=lambda: None, clock=lambda: NOW, teams=["facial"])
    add_roster_jobs(s, **kw)
    jobs = add_roster_jobs(s, **kw)
    assert sorted(j.id for j in s.get_jobs()) == sorted([COLLECT_JOB_ID, DELIVER_JOB_ID, HANDOFF_JOB_ID])
    collect, deliver, handoff = jobs
    assert [j.id for j in jobs] == [COLLECT_JOB_ID, DELIVER_JOB_ID, HANDOFF_JOB_ID]
    assert all(j.max_instances == 1 and j.coalesce for j in jobs)
    assert collect.trigger.interval == timedelta(minutes=1) and collect.misfire_grace_time == 60
    assert deliver.trigger.interval == timedelta(seconds=30) and deliver.misfire_grace_time == 30
    assert handoff.misfire_grace_time is None  # a late push is still a push
    pusher = handoff_pusher(jobs)
    assert isinstance(pusher, HandoffPusher) and pusher.teams == ("facial",)
    assert pusher.handoff == sh(3, 2, 8)  # 20 minutes after the (fixed) clock's now
    with pytest.raises(LookupError):
        handoff_pusher(jobs[:2])


# --------------------------------------------------------------------------- collect and deliver


def test_each_notice_is_sent_once_across_runs_and_a_restart(scheduler):
    outbox, notifier, clock = MemoryOutbox(), RecordingNotifier(), Clock(NOW)
    runs = start(scheduler(), outbox, notifier, clock)
    runs.run_now(DELIVER_JOB_ID)
    first = list(notifier.sent)
    got = {key for key, _ in first}
    assert {"remind:facial:primary:2:20260302T000000Z", "remind:facial:backup:4:20260302T000000Z",
            "remind:replant:primary:12:20260302T000000Z", "remind:replant:backup:14:20260302T000000Z",
            "digest:facial:2026-03-02:9", "digest:replant:2026-03-02:desk"} <= got
    # replant's primary rotation ends on the 5th: head (none) -> the desk only
    assert "gap:gap:replant:-:20260305T000000Z:open:desk" in got
    assert len(first) == len(got) == len(outbox.keys())

    # a second run of each, a few minutes on: nothing new, nothing again
    clock.now = NOW + timedelta(minutes=5)
    runs.run_now(COLLECT_JOB_ID)
    runs.run_now(DELIVER_JOB_ID)
    assert notifier.sent == first

    # a restart: a new scheduler, the same (durable) outbox, later still
    clock.now = NOW + timedelta(minutes=25)
    runs.scheduler.shutdown(wait=True)
    runs = start(scheduler(), outbox, notifier, clock)
    runs.run_now(DELIVER_JOB_ID)
    assert notifier.sent == first
    assert not runs.errors

    # what is new after the restart is sent, once
    clock.now = NOW + timedelta(hours=4, minutes=20)  # 12:00: nothing starts; 3rd's digest not yet
    later = make_roster(rotations=ROSTER.rotations,
                        shifts=[Shift("facial", 5, Role.ATTENDING, sh(3, 2, 12, 30), sh(3, 2, 18))])
    runs.scheduler.shutdown(wait=True)
    runs = start(scheduler(), outbox, notifier, clock, roster=later)
    runs.run_now(DELIVER_JOB_ID)
    runs.run_now(DELIVER_JOB_ID)
    assert notifier.sent[len(first):] == [("remind:facial:attending:5:20260302T043000Z", 5)]


def test_a_failing_notifier_is_retried_with_backoff_then_given_up(scheduler, caplog):
    r = make_roster(shifts=[Shift("facial", 5, P, sh(3, 2, 8), sh(3, 2, 20))])
    outbox, clock = MemoryOutbox(), Clock(sh(3, 2, 7, 40))
    notifier = RecordingNotifier(fail=lambda n: NotifyError("WeChat Work says 503\r\nforged line")
                                 if n.kind == SHIFT_REMINDER else None)
    key = "remind:facial:primary:5:20260302T000000Z"
    with caplog.at_level(logging.INFO, logger="hotline.rosterjobs"):
        runs = start(scheduler(), outbox, notifier, clock, roster=r)
        # (minutes after the first attempt, attempts made by then): 1, 2, 4, 8 minutes apart
        steps = [(0, 1), (0.5, 1), (1, 2), (2.5, 2), (3, 3), (6.9, 3), (7, 4), (14.9, 4),
                 (15, 5), (60, 5), (600, 5)]
        tried = []
        for minutes, _ in steps:
            clock.now = sh(3, 2, 7, 40) + timedelta(minutes=minutes)
            runs.run_now(DELIVER_JOB_ID)
            tried.append((minutes, notifier.tries.count(key)))
        assert tried == steps
    row = outbox.row(key)
    assert (row.attempts, row.gave_up, row.sent_at) == (5, True, None)
    assert row.error == "NotifyError: WeChat Work says 503 forged line"
    gave_up = [rec for rec in caplog.records if "GAVE UP" in rec.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR
    assert key in gave_up[0].getMessage() and "\n" not in gave_up[0].getMessage()
    # the other notices went out the first time
    assert notifier.sent and all(k != key for k, _ in notifier.sent)


def test_backoff_doubles_from_a_minute():
    assert [rosterjobs.retry_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 8)]


def test_an_unlisted_recipient_and_a_crashing_notifier_are_failures_to_retry(caplog):
    outbox, t0 = MemoryOutbox(), sh(3, 2, 7, 40)
    a = Notice("remind:x:primary:77:1", SHIFT_REMINDER, "facial", 77, t0, "提醒", "reminder")
    b = Notice("remind:x:primary:1:1", SHIFT_REMINDER, "facial", 1, t0, "提醒", "reminder")
    outbox.add([a, b])
    notifier = RecordingNotifier(fail=lambda n: RuntimeError("bug") if n is b else None)
    with caplog.at_level(logging.WARNING, logger="hotline.rosterjobs"):
        got = deliver_notices(outbox, notifier, ROSTER.surgeons, t0)
    assert got == Delivery(sent=0, failed=2, gave_up=0)
    assert outbox.row(a.key).error == "NotifyError: surgeon 77 is not in the roster"
    assert outbox.row(b.key).error == "RuntimeError: bug"
    assert "notifier crashed on notice remind:x:primary:1:1" in caplog.text
    # max_attempts=1: the first failure gives up
    c = Notice("gap:c:desk", "roster_gap", "facial", None, t0, "预警", "alert")
    outbox.add([c])
    notifier.fail = lambda n: NotifyError("down")
    assert deliver_notices(outbox, notifier, ROSTER.surgeons, t0, max_attempts=1).gave_up == 1


class BrokenOutbox(MemoryOutbox):
    def add(self, notices):
        raise OSError("database is locked")

    def pending(self, now, limit=100):
        raise OSError("database is locked")


def test_the_jobs_log_and_return_instead_of_raising(caplog):
    def no_roster() -> Roster:
        raise RuntimeError("cache not loaded")

    with caplog.at_level(logging.ERROR, logger="hotline.rosterjobs"):
        assert collect_job(no_roster, MemoryOutbox(), lambda: NOW) == []
        assert deliver_job(MemoryOutbox(), LogNotifier(), no_roster, lambda: NOW) == Delivery()
        assert collect_notices(ROSTER, BrokenOutbox(), NOW) == []
        assert deliver_notices(BrokenOutbox(), LogNotifier(), ROSTER.surgeons, NOW) == Delivery()
    assert "no roster" in caplog.text and "storing" in caplog.text
    assert "reading the notice outbox failed" in caplog.text


def test_a_failing_producer_does_not_stop_the_others(monkeypatch, caplog):
    def broken(*args, **kw):
        raise ValueError("bug")

    monkeypatch.setattr(rosterjobs, "gap_alerts", broken)
    outbox = MemoryOutbox()
    with caplog.at_level(logging.ERROR, logger="hotline.rosterjobs"):
        new = collect_notices(ROSTER, outbox, NOW)
    assert {n.kind for n in new} == {"shift_reminder", "roster_digest"}
    assert "making roster alerts failed" in caplog.text


def test_the_log_notifier_writes_one_line_per_notice(caplog):
    notice = Notice("digest:facial:2026-03-02:desk", "roster_digest", "facial", None, NOW,
                    "【96608排班日报】\n一线：张三\r\n伪造", "digest")
    with caplog.at_level(logging.INFO, logger="hotline.notify"):
        LogNotifier().send(notice, None)
        LogNotifier().send(notice, Surgeon(3, "李\n四", "13800000003"))
    first, second = [rec.getMessage() for rec in caplog.records]
    assert first == ("notice digest:facial:2026-03-02:desk roster_digest to duty desk: "
                     "【96608排班日报】\\n一线：张三\\r\\n伪造")
    assert "to surgeon 3 李\\n四:" in second and "\n" not in second
    assert caplog.records[0].args  # %-style arguments, formatted by logging


# --------------------------------------------------------------------------- handoffs


def test_the_chains_are_pushed_at_the_handoff_and_the_push_is_rescheduled(scheduler):
    now = datetime.now(UTC).replace(microsecond=0)
    handoff, after = now + timedelta(seconds=2), now + timedelta(hours=1)
    r = make_roster(shifts=[Shift("facial", 1, P, now - timedelta(hours=1), handoff),
                            Shift("facial", 2, P, handoff, after)])
    pushed = threading.Event()
    pushes: list[datetime] = []

    def push() -> None:
        pushes.append(datetime.now(UTC))
        pushed.set()

    s = scheduler()
    jobs = add_roster_jobs(s, roster=lambda: r, outbox=MemoryOutbox(), notifier=LogNotifier(),
                           push_chains=push, teams=["facial"])
    pusher = handoff_pusher(jobs)
    assert pusher.handoff == handoff
    runs = Runs(s)
    s.start()
    assert pushed.wait(WAIT_S)
    runs.wait(HANDOFF_JOB_ID, 1)
    assert pushes[0] >= handoff  # pushed after the handoff, not before
    # rescheduled for the next one: the end of 2's shift
    assert pusher.handoff == after
    job = s.get_job(HANDOFF_JOB_ID)
    assert job is not None and job.next_run_time == after + rosterjobs.HANDOFF_MARGIN
    assert not runs.errors


def test_a_roster_write_reschedules_and_no_handoff_means_a_recheck_in_an_hour(scheduler):
    clock = Clock(sh(3, 2, 7, 40))
    current = {"roster": make_roster()}
    s = scheduler()
    s.start(paused=True)
    pusher = HandoffPusher(s, lambda: None, lambda: current["roster"], ["facial"], clock=clock,
                           wall=clock)
    job = pusher.reschedule()
    assert pusher.handoff is None and job.next_run_time == sh(3, 2, 8, 40)  # recheck
    current["roster"] = make_roster(shifts=[Shift("facial", 1, P, sh(3, 2, 7, 50), sh(3, 2, 20))])
    job = pusher.reschedule()
    assert pusher.handoff == sh(3, 2, 7, 50)
    assert job.next_run_time == sh(3, 2, 7, 50) + timedelta(seconds=1)
    assert [j.id for j in s.get_jobs()] == [HANDOFF_JOB_ID]
    # a handoff further off than the recheck: wake for the recheck first
    current["roster"] = make_roster(shifts=[Shift("facial", 1, P, sh(3, 2, 10), sh(3, 2, 20))])
    assert pusher.reschedule().next_run_time == sh(3, 2, 8, 40) and pusher.handoff is None


def test_a_failed_push_is_retried_soon_and_a_standing_clock_does_not_spin(scheduler, caplog):
    clock = Clock(sh(3, 2, 7, 40))
    r = make_roster(shifts=[Shift("facial", 1, P, sh(3, 2, 7, 50), sh(3, 2, 20))])
    calls = []

    def push():
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("AMI did not answer")

    s = scheduler()
    s.start(paused=True)
    pusher = HandoffPusher(s, push, lambda: r, ["facial"], clock=clock, wall=clock)
    pusher.reschedule()
    with caplog.at_level(logging.WARNING, logger="hotline.rosterjobs"):
        pusher.run()  # as the scheduler would, at 07:50:01 -- but the clock stands still
    assert "pushing the chains to the chain mirror failed (TimeoutError: AMI did not answer)" in caplog.text
    assert s.get_job(HANDOFF_JOB_ID).next_run_time == sh(3, 2, 7, 40) + timedelta(seconds=30)
    pusher.run()  # the retry succeeds; the handoff is still ahead
    assert pusher.handoff == sh(3, 2, 7, 50)
    pusher.run()  # the push for 07:50
    # The clock still says 07:40, yet the next wake is for what comes after 07:50:
    # the 20:00 handoff is beyond the hourly recheck, so the recheck it is.
    for _ in range(3):
        assert pusher.handoff is None
        assert s.get_job(HANDOFF_JOB_ID).next_run_time == sh(3, 2, 8, 40)
        pusher.run()
    assert len(calls) == 6
