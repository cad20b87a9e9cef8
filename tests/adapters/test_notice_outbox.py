"""The database notice outbox keeps the NoticeOutbox contract, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from datetime import timedelta

from db.models import NoticeRow
from db.notices import NoticeRepository
from oncall.notices import SHIFT_REMINDER, Notice
from tests.support.db_helpers import count
from tests.support.outbox import T0, check_outbox_contract


def test_the_database_outbox_keeps_the_contract(engine):
    check_outbox_contract(NoticeRepository(engine, clock=lambda: T0))


def test_two_threads_adding_the_same_notices_store_each_once(engine):
    outbox = NoticeRepository(engine, clock=lambda: T0)
    notices = [Notice(f"remind:{n}", SHIFT_REMINDER, "facial", n, T0, "提醒", "reminder")
               for n in range(40)]
    got: list[list[Notice]] = []

    def add() -> None:
        got.append(outbox.add(notices))

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(n.key for batch in got for n in batch) == sorted(n.key for n in notices)
    assert count(engine, NoticeRow) == 40


def test_a_restart_reads_what_the_last_process_stored(engine):
    first = NoticeRepository(engine, clock=lambda: T0)
    note = Notice("digest:facial:2026-03-02:9", "roster_digest", "facial", 9, T0, "今日排班", "today")
    assert first.add([note]) == [note]
    second = NoticeRepository(engine, clock=lambda: T0)  # a new process, same database
    assert second.add([note]) == []
    assert [p.notice for p in second.pending(T0)] == [note]
    second.mark_sent(note.key, T0)
    assert first.pending(T0 + timedelta(days=1)) == []


def test_old_notices_are_pruned(engine):
    outbox = NoticeRepository(engine, clock=lambda: T0)
    outbox.add([Notice("remind:old", SHIFT_REMINDER, "facial", 1, T0 - timedelta(days=100), "x", "x"),
                Notice("remind:new", SHIFT_REMINDER, "facial", 1, T0, "x", "x")])
    assert outbox.prune(T0) == 1
    assert count(engine, NoticeRow) == 1
