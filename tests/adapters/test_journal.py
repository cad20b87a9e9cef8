"""The case journal: serialising cases, the spool file, torn lines, compaction, and replay
after a service killed mid-outage (on SQLite and PostgreSQL)."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from cases import lifecycle
from cases.lifecycle import Case, DialAttempt, MenuEvent
from db.models import CallbackRow, CaseRow, DialAttemptRow, MenuEventRow
from db.repo import CaseRepository
from hotline import journal as journal_module
from hotline.casewriter import CaseWriter
from hotline.journal import (
    JOURNAL_NAME,
    Journal,
    JournalBusy,
    JournalClosed,
    JournalEntry,
    JournalFormatError,
    case_from_json,
    case_to_json,
    decode_entry,
    encode_entry,
)
from routing.callers import Caller, CallerClass, classify
from routing.escalation import AttemptOutcome, ChainStep
from tests.support.db_helpers import count, write_wav

PROJECT = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 19, 5, 12, 123456, tzinfo=SHANGHAI)
PRIMARY = ChainStep(101, "王建国", "13800000101", "primary", 25)
BACKUP = ChainStep(102, "李明", "13800000102", "backup", 25)
HOSTILE_RAW = [
    "138\x00000",
    "13800138000\r\nAction: Originate\r\n\r\n",
    '"},"revision":99,"x":{"',
    "\n" * 3 + "{}",
    "王建国 👨‍⚕️ ١٣٨ １٣８ \u202e \u2028 \u2029 \x85 \x1c",
    "back\\slash\ttab\x7f",
    "lone \udc80 surrogate \ud800",
    "",
]


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def case_id(n: int) -> str:
    return f"20261125-190512-{n:06d}"


def full_case(n: int = 1, raw: str | None = "13800138000") -> Case:
    """A connected, ended call touching every field of Case."""
    case = lifecycle.open_case(case_id(n), f"1795633620.{n}", classify(raw, {"13800138000": 7}), T0)
    lifecycle.record_menu(case, s(3), "1", "颌面部创伤 facial")
    lifecycle.set_language(case, s(3.5), "en")
    lifecycle.set_team(case, s(4), "facial")
    lifecycle.start_attempt(case, s(5), 1, "chain", PRIMARY)
    lifecycle.end_attempt(case, s(30), 1, AttemptOutcome.NO_ANSWER, answered=True, ring_s=25)
    lifecycle.start_attempt(case, s(31), 2, "chain", BACKUP)
    lifecycle.mark_connected(case, s(37), 2)
    lifecycle.mark_ended(case, s(400), "surgeon")
    lifecycle.set_recording(case, s(401), f"{case.case_id}.wav", 363)
    lifecycle.mark_fallback(case, s(402))
    return case


def voicemail_case(n: int = 2) -> Case:
    case = lifecycle.open_case(case_id(n), f"1795633620.{n}", classify(None, {}),
                               datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc))
    nurse = ChainStep(None, "值班护士", "8001", "nurse", 20)
    lifecycle.start_attempt(case, case.started_at, 1, "nurse", nurse)
    lifecycle.end_attempt(case, case.started_at + timedelta(seconds=20), 1, "busy")
    lifecycle.set_voicemail(case, case.started_at + timedelta(seconds=40), "vm/x.wav")
    lifecycle.mark_ended(case, case.started_at + timedelta(seconds=60))
    return case


@pytest.fixture
def journals() -> list[Journal]:
    made: list[Journal] = []
    yield made
    for journal in made:
        journal.close()


@pytest.fixture
def make_journal(journals, tmp_path):
    def make(directory: Path | None = None, **kwargs) -> Journal:
        journal = Journal(directory or tmp_path / "journal", **kwargs)
        journals.append(journal)
        return journal
    return make


def lines_of(journal: Journal) -> list[bytes]:
    return journal.path.read_bytes().splitlines(keepends=True)


# --- serialising a Case ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", HOSTILE_RAW + [None])
def test_a_case_round_trips_exactly(raw):
    bare = lifecycle.open_case("a", "b", classify(raw, {}), T0)
    for case in (full_case(raw=raw), voicemail_case(), bare):
        data = case_to_json(case)
        assert case_from_json(json.loads(json.dumps(data))) == case
        entry = decode_entry(encode_entry(case, final=True))
        assert entry == JournalEntry(case, True)
    assert decode_entry(encode_entry(full_case(raw=raw))).case.caller.raw == raw


@given(st.text(), st.text(), st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_any_text_and_any_offset_round_trip(raw, label, offset_min):
    at = datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(minutes=offset_min)))
    caller = Caller(None, CallerClass.INVALID, None, raw_safe=label, raw=raw)
    case = Case(case_id="x", linkedid="y", caller=caller, started_at=at, team=label,
                menu=[MenuEvent(at, "invalid", label)])
    entry = decode_entry(encode_entry(case))
    assert entry.case == case
    assert entry.case.started_at.utcoffset() == at.utcoffset()


def test_every_field_is_serialised():
    data = case_to_json(full_case())
    assert set(data) == {f.name for f in dataclasses.fields(Case)}
    assert set(data["caller"]) == {f.name for f in dataclasses.fields(Caller)}
    assert set(data["menu"][0]) == {f.name for f in dataclasses.fields(MenuEvent)}
    assert set(data["attempts"][0]) == {f.name for f in dataclasses.fields(DialAttempt)}


def test_datetimes_keep_their_offset_and_enums_go_by_value():
    data = case_to_json(full_case())
    assert data["started_at"] == "2026-11-25T19:05:12.123456+08:00"
    assert data["caller"]["caller_class"] == "partner"
    assert data["attempts"][0]["outcome"] == "no-answer"
    assert data["attempts"][1]["outcome"] == "accepted"
    loaded = case_from_json(data)
    assert loaded.started_at == T0 and loaded.started_at.utcoffset() == timedelta(hours=8)
    assert loaded.caller.caller_class is CallerClass.PARTNER
    assert loaded.attempts[0].outcome is AttemptOutcome.NO_ANSWER


@pytest.mark.parametrize("raw", HOSTILE_RAW)
def test_a_line_is_one_ascii_line_whatever_the_caller_sent(raw):
    line = encode_entry(full_case(raw=raw))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert line.isascii() and b"\x00" not in line
    assert len(line.decode("ascii").splitlines()) == 1  # not even U+2028 splits it


@pytest.mark.parametrize("line", [
    b"", b"garbage", b"\xff\xfe{}", b"[]", b'{"v":2}', b"\x00" * 40,
    encode_entry(full_case())[:-40],
    encode_entry(full_case()).replace(b'"revision":', b'"revision":1', 1),  # outer revision 1x
    encode_entry(full_case()).replace(b'"final":false', b'"final":0'),
    encode_entry(full_case()).replace(b'"caller_class":"partner"', b'"caller_class":"vip"'),
    encode_entry(full_case()).replace(b'"seq":1', b'"seq":true'),
    encode_entry(full_case()).replace(b'"kind":"chain"', b'"kind":"Dial(x)"', 1),
    encode_entry(full_case()).replace(b'"started_at":"2026', b'"started_at":"yesterday', 1),
    encode_entry(full_case()).replace(b'"menu":[{', b'"menu":[7,{'),
    encode_entry(full_case()).replace(b'"linkedid":', b'"linkedId":'),
])
def test_a_damaged_line_is_a_format_error(line):
    with pytest.raises(JournalFormatError):
        decode_entry(line)


# --- the journal file -----------------------------------------------------------------------------

def test_reopening_replays_the_newest_snapshot_of_each_case_in_first_seen_order(make_journal):
    a, b = full_case(1), voicemail_case(2)
    early = lifecycle.open_case(a.case_id, a.linkedid, a.caller, T0)
    journal = make_journal()
    assert journal.open() == []
    journal.append(early)
    journal.append(b, final=True)
    journal.append(a)
    journal.append(early)  # a stale snapshot after a newer one: the newer is still replayed
    journal.close()
    assert len(lines_of(journal)) == 4
    again = make_journal()
    assert again.open() == [JournalEntry(a, False), JournalEntry(b, True)]
    assert sorted(again.unapplied()) == [a.case_id, b.case_id]


def test_a_final_snapshot_stays_final_when_a_later_one_is_not(make_journal):
    case = full_case()
    journal = make_journal()
    journal.open()
    journal.append(case, final=True)
    later = copy.deepcopy(case)
    lifecycle.mark_ended(later, s(500), "caller")
    journal.append(later)  # hangup_by was already set: same revision, not final
    journal.close()
    assert [decode_entry(line).final for line in lines_of(journal)] == [True, True]
    assert make_journal().open() == [JournalEntry(later, True)]


def test_files_are_private_and_one_process_at_a_time(make_journal, tmp_path):
    journal = make_journal()
    journal.open()
    assert (tmp_path / "journal").stat().st_mode & 0o777 == 0o700
    assert journal.path.name == JOURNAL_NAME and journal.path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(JournalBusy):
        make_journal().open()
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalClosed):
        journal.append(full_case())
    make_journal().open()  # the lock went with the close


def test_append_returns_before_the_fsync_and_the_fsyncs_are_grouped(make_journal, monkeypatch):
    released = threading.Event()
    syncing = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd):
        syncing.set()
        assert released.wait(5)
        real_fsync(fd)

    journal = make_journal()
    journal.open()
    monkeypatch.setattr(journal_module.os, "fsync", slow_fsync)
    journal.append(full_case(1))
    assert syncing.wait(5)  # the journal thread is inside fsync ...
    for n in range(2, 102):
        journal.append(full_case(n))  # ... and appends still return
    assert journal.wait_durable(0.05) is False
    released.set()
    assert journal.wait_durable(5) is True
    assert journal.syncs <= 3  # 101 lines, one fsync for the first and one for the rest (at most)
    assert len(lines_of(journal)) == 101


def test_a_torn_last_line_is_cut_off_with_a_warning(make_journal, caplog):
    a, b = full_case(1), voicemail_case(2)
    journal = make_journal()
    journal.open()
    journal.append(a)
    journal.close()
    with open(journal.path, "ab") as f:
        f.write(encode_entry(b)[:57])  # the crash came mid-write
    again = make_journal()
    assert again.open() == [JournalEntry(a)]
    assert any("torn" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    again.append(b)  # starts on a line of its own
    again.close()
    assert make_journal().open() == [JournalEntry(a), JournalEntry(b)]


def test_a_complete_but_unterminated_last_line_is_kept(make_journal):
    a = full_case(1)
    journal = make_journal()
    journal.open()
    journal.close()
    journal.path.write_bytes(encode_entry(a)[:-1])
    again = make_journal()
    assert again.open() == [JournalEntry(a)]
    again.append(voicemail_case(2))
    again.close()
    assert len(lines_of(again)) == 2


def test_garbage_lines_anywhere_are_skipped_never_fatal(make_journal, caplog):
    a, b = full_case(1), voicemail_case(2)
    journal = make_journal()
    journal.open()
    journal.close()
    journal.path.write_bytes(
        encode_entry(a) + b"\x00" * 300 + b"\n" + b"{not json\n" + b"\n" + encode_entry(b)[:30] + b"\n"
        + encode_entry(b) + b"\xff\xff"
    )
    assert make_journal().open() == [JournalEntry(a), JournalEntry(b)]
    skipped = [r for r in caplog.records
               if r.name == "hotline.journal" and r.levelno == logging.WARNING]
    assert len(skipped) == 4  # three bad lines and the torn tail


def test_compaction_truncates_once_the_database_has_everything(make_journal):
    a, b = full_case(1), voicemail_case(2)
    journal = make_journal()
    journal.open()
    journal.append(a)
    journal.append(b)
    assert journal.compact() is None  # nothing applied yet, and small
    journal.applied(a.case_id, a.revision)
    journal.applied(b.case_id, b.revision - 1)  # an older revision does not count
    assert journal.compact() is None and journal.unapplied() == [b.case_id]
    journal.applied(b.case_id, b.revision + 1)  # a newer one does (e.g. the recording attached)
    assert journal.compact() == "truncated"
    assert journal.path.stat().st_size == 0 and journal.size == 0
    assert journal.compact() is None
    journal.append(a)  # appends go on after a truncation
    journal.close()
    assert make_journal().open() == [JournalEntry(a)]


def test_compaction_rewrites_a_big_journal_keeping_the_unwritten_cases(make_journal):
    journal = make_journal(compact_bytes=20_000)
    journal.open()
    for n in range(1, 30):
        journal.append(full_case(n), final=(n == 7))
    unwritten = voicemail_case(30)
    journal.append(unwritten)
    for n in range(1, 30):
        if n != 7:
            journal.applied(case_id(n), full_case(n).revision)
    assert journal.size > 20_000
    assert journal.compact() == "rewritten"
    assert journal.size == journal.path.stat().st_size < 20_000
    assert len(lines_of(journal)) == 2
    assert journal.wait_durable(1)
    journal.append(full_case(31))
    journal.close()
    assert make_journal().open() == [JournalEntry(full_case(7), True), JournalEntry(unwritten),
                                     JournalEntry(full_case(31))]


def test_a_rejected_snapshot_is_kept_aside_and_releases_the_journal(make_journal):
    a = full_case(1)
    journal = make_journal()
    journal.open()
    journal.append(a)
    journal.reject(a, a.revision)
    assert journal.compact() == "truncated"
    assert [decode_entry(line).case for line in journal.rejected_path.read_bytes().splitlines()] == [a]
    assert journal.rejected_path.stat().st_mode & 0o777 == 0o600


# --- replay after a crash, against the real databases ------------------------------------------

CRASHING_SERVICE = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from hotline.casewriter import CaseWriter
from hotline.journal import Journal, decode_entry

class DatabaseDown:
    def save(self, case):
        raise ConnectionRefusedError("database down")

writer = CaseWriter(DatabaseDown(), Path(sys.argv[2]), backoff_s=(0.01,),
                    recording_wait_s=0.01, journal=Journal(Path(sys.argv[1]))).start()
for line in sys.stdin.buffer:
    entry = decode_entry(line)
    writer.submit(entry.case, entry.final)
while writer.failures < 3:
    time.sleep(0.01)
print("submitted", flush=True)
time.sleep(60)
"""


def call_snapshots(n: int) -> list[tuple[Case, bool]]:
    """Every snapshot a call desk submits for one call, in order (final last)."""
    raw = HOSTILE_RAW[n % len(HOSTILE_RAW)] if n % 2 else f"1380013800{n}"
    case = lifecycle.open_case(case_id(n), f"1795633620.{n}", classify(raw, {}), T0)
    out = [(copy.deepcopy(case), False)]
    steps = [
        lambda: lifecycle.record_menu(case, s(3), "1", "颌面部创伤"),
        lambda: lifecycle.set_team(case, s(4), "facial"),
        lambda: lifecycle.start_attempt(case, s(5), 1, "chain", PRIMARY),
        lambda: lifecycle.end_attempt(case, s(30), 1, "no-answer"),
        lambda: lifecycle.start_attempt(case, s(31), 2, "chain", BACKUP),
        lambda: lifecycle.mark_connected(case, s(37), 2),
        lambda: lifecycle.mark_ended(case, s(90 + n), "caller"),
    ]
    for step in steps[:3 + n % 5]:
        step()
        out.append((copy.deepcopy(case), False))
    if n % 3 == 0:
        lifecycle.mark_ended(case, s(200), "caller")
    if case.ended_at is not None:
        out.append((copy.deepcopy(case), True))
    return out


def stored(case: Case) -> Case:
    """What the database keeps of `case` (NUL and lone surrogates become U+FFFD)."""
    raw = case.caller.raw
    if raw is not None:
        raw = "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in raw)
    return dataclasses.replace(case, caller=dataclasses.replace(case.caller, raw=raw))


def table_rows(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of the case tables, `updated_at` left out (a rewrite stamps it)."""
    tables = {}
    with engine.connect() as conn:
        for row_class in (CaseRow, MenuEventRow, DialAttemptRow, CallbackRow):
            table = row_class.__table__
            columns = [c for c in table.c if c.name != "updated_at"]
            tables[table.name] = sorted(
                tuple(map(repr, row)) for row in conn.execute(select(*columns)))
    return tables


def test_a_killed_service_loses_no_case_and_replaying_twice_adds_nothing(engine, tmp_path):
    calls = [call_snapshots(n) for n in range(1, 13)]
    newest = {snaps[-1][0].case_id: snaps[-1] for snaps in calls}
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    connected = [case for case, final in newest.values() if final and case.connected_seq]
    assert connected and any(not final for _, final in newest.values())
    write_wav(recordings / f"{connected[0].case_id}.wav", 2.0)
    journal_dir = tmp_path / "journal"

    # Writer A: the database is down the whole time; the process is killed (no stop()).
    feed = b"".join(encode_entry(case, final) for snaps in calls for case, final in snaps)
    log = tmp_path / "service-a.log"
    with open(log, "wb") as stderr:  # a file: a full pipe would block its logging
        service_a = subprocess.Popen(
            [sys.executable, "-c", CRASHING_SERVICE, str(journal_dir), str(recordings), str(PROJECT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
    try:
        service_a.stdin.write(feed)
        service_a.stdin.close()
        assert service_a.stdout.readline() == b"submitted\n", log.read_text(errors="replace")
    finally:
        service_a.send_signal(signal.SIGKILL)
        service_a.wait(10)
        service_a.stdout.close()
    assert b"ConnectionRefusedError" in log.read_bytes()
    assert count(engine, CaseRow) == 0
    crashed_journal = tmp_path / "journal-as-left"
    shutil.copytree(journal_dir, crashed_journal)

    # Writer B: same journal, working database: writes every case, newest snapshot.
    repo = CaseRepository(engine)
    writer_b = CaseWriter(repo, recordings, backoff_s=(0.01,), recording_settle_s=0.01,
                          recording_wait_s=0.2, journal=Journal(journal_dir), compact_idle_s=0.05)
    try:
        writer_b.start()
        assert writer_b.replayed == len(calls)
        assert writer_b.flush(20)
        deadline = time.monotonic() + 5
        while writer_b.journal.size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer_b.journal.size == 0  # compacted once everything was in
    finally:
        writer_b.stop(5)
    assert (writer_b.written, writer_b.failures) == (len(calls), 0)

    assert count(engine, CaseRow) == len(calls)
    for case, final in newest.values():
        expected = stored(case)
        if case is connected[0]:
            lifecycle.set_recording(expected, case.ended_at, str(recordings / f"{case.case_id}.wav"), 2)
        assert repo.get(case.case_id) == expected
        assert count(engine, DialAttemptRow, case_id=case.case_id) == len(case.attempts)
        assert count(engine, MenuEventRow, case_id=case.case_id) == len(case.menu)
    before = table_rows(engine)

    # Writer C on the same journal: nothing left to replay.
    writer_c = CaseWriter(repo, recordings, journal=Journal(journal_dir)).start()
    writer_c.stop(5)
    assert (writer_c.replayed, writer_c.written) == (0, 0)

    # Writer D on the journal as the crash left it: replays everything, changes nothing.
    writer_d = CaseWriter(repo, recordings, backoff_s=(0.01,), recording_settle_s=0.01,
                          recording_wait_s=0.2, journal=Journal(crashed_journal)).start()
    try:
        assert writer_d.flush(20)
    finally:
        writer_d.stop(5)
    assert writer_d.replayed == len(calls)
    assert table_rows(engine) == before
    assert count(engine, CaseRow) == len(calls)
