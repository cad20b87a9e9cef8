"""The case writer across real database outages: SQLite locked by another connection,
PostgreSQL cut off behind a TCP proxy. Every case lands exactly once, and stop()
with the database down returns in time and leaves the journal for the next start."""
from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support.tcp_proxy import TcpProxy
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from cases import lifecycle
from cases.lifecycle import Case
from db import session
from db.models import CaseRow, DialAttemptRow, MenuEventRow
from db.repo import CaseRepository
from db.session import make_engine
from hotline.casewriter import CaseWriter
from hotline.journal import Journal
from routing.callers import classify
from routing.escalation import ChainStep
from tests.support.db_helpers import count

T0 = datetime(2026, 11, 25, 19, 5, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)
BACKUP = ChainStep(102, "李明", "13800000102", "backup", 25)
BACKOFF = (0.05, 0.1, 0.2, 0.4)
SQLITE_BUSY_MS = 200  # instead of the service's 5 s: the same code path, a faster test


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Call:
    """One call moving forward a step at a time, as the call desk would move it."""

    def __init__(self, n: int) -> None:
        self.case = lifecycle.open_case(f"20261125-190512-{n:06d}", f"1795633620.{n}",
                                        classify(f"1380013{n:04d}", {}), T0)
        self.steps = [
            lambda c: lifecycle.record_menu(c, s(3), "1", "颌面部创伤"),
            lambda c: lifecycle.set_team(c, s(4), "facial"),
            lambda c: lifecycle.start_attempt(c, s(5), 1, "chain", PRIMARY),
            lambda c: lifecycle.end_attempt(c, s(30), 1, "no-answer"),
            lambda c: lifecycle.start_attempt(c, s(31), 2, "chain", BACKUP),
            lambda c: lifecycle.end_attempt(c, s(56), 2, "busy"),
            lambda c: lifecycle.mark_ended(c, s(60), "caller"),
        ]

    def advance(self) -> bool:
        """One step further; False once the call has ended."""
        if not self.steps:
            return False
        self.steps.pop(0)(self.case)
        return True

    @property
    def ended(self) -> bool:
        return not self.steps


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def assert_stored_exactly_once(engine: Engine, cases: list[Case]) -> None:
    repo = CaseRepository(engine)
    assert count(engine, CaseRow) == len(cases)
    for case in cases:
        assert repo.get(case.case_id) == case
        assert count(engine, DialAttemptRow, case_id=case.case_id) == len(case.attempts)
        assert count(engine, MenuEventRow, case_id=case.case_id) == len(case.menu)


# --- the two outages ------------------------------------------------------------------------------

class SqliteLock:
    """Another connection holding the SQLite file's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, db_url: str) -> None:
        self.path = make_url(db_url).database
        self.writer_url = db_url
        self._conn: sqlite3.Connection | None = None

    def down(self) -> None:
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        self._conn.execute("BEGIN IMMEDIATE")

    def up(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.up()


class PostgresCut:
    """The writer reaches PostgreSQL through a TcpProxy that can be cut."""

    def __init__(self, db_url: str) -> None:
        url = make_url(db_url)
        self.proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        self.writer_url = url.set(host="127.0.0.1", port=self.proxy.port).render_as_string(
            hide_password=False)

    def down(self) -> None:
        self.proxy.cut()

    def up(self) -> None:
        self.proxy.restore()

    def close(self) -> None:
        self.proxy.close()


@pytest.fixture
def outage(engine, db_url, monkeypatch) -> Iterator[SqliteLock | PostgresCut]:
    """SQLite: a lock held by another connection. PostgreSQL: a TCP cut. `engine` stays direct."""
    if make_url(db_url).get_backend_name() == "sqlite":
        monkeypatch.setattr(session, "SQLITE_BUSY_TIMEOUT_MS", SQLITE_BUSY_MS)
        made: SqliteLock | PostgresCut = SqliteLock(db_url)
    else:
        made = PostgresCut(db_url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def make_writer(tmp_path):
    """Writers on engines built on the outage's URL; all stopped and disposed afterwards."""
    made: list[tuple[CaseWriter, Engine]] = []
    recordings = tmp_path / "recordings"
    recordings.mkdir()

    def make(url: str, journal_dir: Path) -> CaseWriter:
        writer_engine = make_engine(url)
        writer = CaseWriter(CaseRepository(writer_engine), recordings, backoff_s=BACKOFF,
                            recording_settle_s=0.01, recording_wait_s=0.05,
                            journal=Journal(journal_dir), compact_idle_s=0.05)
        made.append((writer, writer_engine))
        return writer

    yield make
    for writer, writer_engine in made:
        writer.stop(timeout_s=2)
        writer_engine.dispose()


# --- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_proxy_passes_cuts_and_restores(engine, db_url):
    cut = PostgresCut(db_url)
    proxied = make_engine(cut.writer_url)
    try:
        assert count(proxied, CaseRow) == 0
        cut.down()
        with pytest.raises(Exception) as failed:
            count(proxied, CaseRow)
        assert "OperationalError" in type(failed.value).__name__
        cut.up()
        assert count(proxied, CaseRow) == 0  # pool_pre_ping replaced the dead connection
        assert cut.proxy.accepted >= 2
    finally:
        proxied.dispose()
        cut.close()


def test_every_case_lands_exactly_once_after_the_database_comes_back(
        engine, outage, make_writer, tmp_path, caplog):
    writer = make_writer(outage.writer_url, tmp_path / "journal").start()
    calls = [Call(n) for n in range(1, 4)]
    for call in calls:
        call.advance()
        writer.submit(call.case)
    assert writer.flush(10)
    assert_stored_exactly_once(engine, [copy.deepcopy(c.case) for c in calls])

    outage.down()
    failures = writer.failures
    calls += [Call(n) for n in range(4, 7)]
    for call in calls:
        writer.submit(call.case)  # the new calls' first snapshots
    wait_for(lambda: writer.failures >= failures + 2)
    cut_at = time.monotonic()
    while time.monotonic() - cut_at < 2.0:  # the calls go on while the database is away
        for call in calls:
            if call.advance():
                writer.submit(call.case, final=call.ended)
        time.sleep(0.15)
    assert count(engine, CaseRow) == 3  # nothing got through
    tries_while_down = writer.failures - failures
    assert 2 <= tries_while_down <= 30  # backing off, not spinning

    outage.up()
    assert writer.flush(20)
    assert all(call.ended for call in calls)
    assert_stored_exactly_once(engine, [c.case for c in calls])
    wait_for(lambda: writer.journal.size == 0)  # compacted once all were in
    assert any("retrying" in r.getMessage() for r in caplog.records if r.name == "hotline.casewriter")


def test_stop_with_the_database_down_returns_in_time_and_the_next_start_writes_the_rest(
        engine, outage, make_writer, tmp_path, caplog):
    journal_dir = tmp_path / "journal"
    first = make_writer(outage.writer_url, journal_dir).start()
    calls = [Call(n) for n in range(1, 5)]
    outage.down()
    for call in calls:
        while call.advance():
            first.submit(call.case)
        first.submit(call.case, final=True)
    wait_for(lambda: first.failures >= 2)

    began = time.monotonic()
    first.stop(timeout_s=1.0)
    took = time.monotonic() - began
    assert took < 1.0 + 0.5, took  # SQLite may be inside its busy wait at the deadline
    assert not first._thread.is_alive()
    assert not first.journal.is_open
    assert any("stay in the journal" in r.getMessage() for r in caplog.records)
    assert count(engine, CaseRow) == 0

    outage.up()
    second = make_writer(outage.writer_url, journal_dir).start()
    assert second.replayed == len(calls)
    assert second.flush(20)
    assert_stored_exactly_once(engine, [c.case for c in calls])
    wait_for(lambda: second.journal.size == 0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_locked_sqlite_database_is_waited_out(engine, outage, make_writer, tmp_path, caplog):
    writer = make_writer(outage.writer_url, tmp_path / "journal").start()
    call = Call(1)
    writer.submit(call.case)
    assert writer.flush(10)
    outage.down()
    held_at = time.monotonic()
    while call.advance():
        writer.submit(call.case, final=call.ended)
    wait_for(lambda: writer.failures >= 2)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - held_at)))  # held well past the busy timeout
    assert writer.flush(0.01) is False
    outage.up()
    assert writer.flush(10)
    assert_stored_exactly_once(engine, [call.case])
    locked = [r for r in caplog.records if r.name == "hotline.casewriter"
              and "OperationalError" in r.getMessage()]
    assert locked
