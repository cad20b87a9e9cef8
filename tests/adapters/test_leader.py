"""The scheduler election (hotline/leader.py) on a real PostgreSQL, and on SQLite.

Two elections of one name stand in for two service instances: one leads, the
other waits; when the leader's connection ends (its process died), the other
takes over on its next poll. The lock is PostgreSQL's, database-wide, so each
test uses a name of its own.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from db.session import make_engine
from hotline.leader import SchedulerElection, current_holder, lock_key, rebase_jobs


class Duty:
    """Records what an election told its instance to do."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def elected(self) -> None:
        self.events.append("elected")

    def deposed(self) -> None:
        self.events.append("deposed")


def election(engine, name: str, holder: str, duty: Duty) -> SchedulerElection:
    return SchedulerElection(engine, name, holder, duty.elected, duty.deposed, poll_s=0.05)


def test_lock_keys_are_stable_signed_64_bit_and_differ_by_name():
    assert lock_key("ha") == lock_key("ha")
    assert lock_key("ha") != lock_key("hb")
    assert all(-2**63 <= lock_key(n) < 2**63 for n in ("ha", "demo", "x" * 300))


def test_sqlite_has_one_instance_which_leads_at_once(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    duty = Duty()
    try:
        one = election(engine, "solo", "svc-1", duty)
        one.start()
        assert one.leader and duty.events == ["elected"]
        assert current_holder(engine, "solo") is None  # nothing to ask on SQLite
        one.stop()
    finally:
        engine.dispose()


@pytest.fixture
def pg(pg_database):
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()


def test_one_of_two_leads_and_the_other_takes_over_when_its_connection_ends(pg):
    name = f"t-{secrets.token_hex(4)}"
    first, second = Duty(), Duty()
    a, b = election(pg, name, "svc-1", first), election(pg, name, "svc-2", second)
    try:
        assert a.poll_once() is True and b.poll_once() is False
        assert b.poll_once() is False  # still held
        assert current_holder(pg, name) == "svc-1"
        assert (first.events, second.events) == (["elected"], [])
        # svc-1 dies: its session ends (a killed process's socket closes).
        a._conn.invalidate()
        a._conn = None
        assert b.poll_once() is True
        assert current_holder(pg, name) == "svc-2" and second.events == ["elected"]
    finally:
        a.stop()
        b.stop()
    assert current_holder(pg, name) is None  # stopping gives the lock back


def test_a_leader_whose_connection_breaks_steps_down_before_anyone_else_leads(pg):
    name = f"t-{secrets.token_hex(4)}"
    duty = Duty()
    a = election(pg, name, "svc-1", duty)
    try:
        assert a.poll_once()
        # The server ends the session under it (a network cut, a server restart).
        backend = a._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with pg.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
            admin.commit()
        assert a.poll_once() is False
        assert duty.events == ["elected", "deposed"]
        # The next round reconnects and, the lock being free, leads again.
        assert a.poll_once() is True and duty.events == ["elected", "deposed", "elected"]
    finally:
        a.stop()


def test_the_background_thread_takes_over_within_a_few_polls(pg):
    name = f"t-{secrets.token_hex(4)}"
    first, second = Duty(), Duty()
    a, b = election(pg, name, "svc-1", first), election(pg, name, "svc-2", second)
    a.start()
    b.start()
    try:
        _until(lambda: a.leader or b.leader)
        leader, follower = (a, b) if a.leader else (b, a)
        leader.stop()
        _until(lambda: follower.leader)
        assert current_holder(pg, name) == follower.holder
    finally:
        a.stop()
        b.stop()


def _until(predicate, timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.02)


def test_a_new_leader_does_not_run_the_slots_that_fell_due_under_the_old_one():
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    now = datetime(2026, 12, 1, 12, 0, 30, tzinfo=timezone.utc)
    scheduler.start(paused=True)
    try:
        due = scheduler.add_job(print, "interval", seconds=60, id="due",
                                next_run_time=now - timedelta(seconds=20))
        later = scheduler.add_job(print, "interval", seconds=60, id="later",
                                  next_run_time=now + timedelta(seconds=5))
        assert rebase_jobs(scheduler, now) == 1
        assert scheduler.get_job("due").next_run_time > now
        assert scheduler.get_job("later").next_run_time == now + timedelta(seconds=5)
        assert due.id and later.id
    finally:
        scheduler.shutdown(wait=False)
