"""The case writer's thread against an in-memory store (with and without its journal),
and the roster cache's last snapshot."""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cases import lifecycle
from cases.lifecycle import Case
from db.repo import CaseConflict
from hotline.casewriter import CaseWriter
from hotline.journal import Journal, JournalEntry, decode_entry
from hotline.rostercache import RosterCache
from oncall.model import Roster, Team
from routing.callers import classify
from routing.escalation import ChainStep
from tests.support.db_helpers import write_wav

T0 = datetime(2026, 11, 25, 19, 5, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
SURGEON = ChainStep(1, "甲", "13700000101", "primary", 20)
TINY = (0.001,)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_case(case_id: str = "20261125-190512-abc123", linkedid: str = "1795633620.0") -> Case:
    return lifecycle.open_case(case_id, linkedid, classify("13800138000", {}), T0)


def connected_case(case_id: str = "20261125-190512-abc123") -> Case:
    case = new_case(case_id)
    lifecycle.set_team(case, s(5), "facial")
    lifecycle.start_attempt(case, s(6), 1, "chain", SURGEON)
    lifecycle.mark_connected(case, s(12), 1)
    lifecycle.mark_ended(case, s(100), "caller")
    return case


class MemoryStore:
    """A CaseStore that keeps what it was given; it can fail, conflict or block on demand."""

    def __init__(self, fail: int = 0, error: Exception | None = None,
                 gate: threading.Event | None = None) -> None:
        self.fail = fail
        self.error = error or RuntimeError("database is locked")
        self.gate = gate
        self.saved: list[Case] = []
        self.calls = 0
        self.threads: set[str] = set()

    def save(self, case: Case) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(5), "test never opened the gate"
        if self.fail:
            self.fail -= 1
            raise self.error
        self.saved.append(copy.deepcopy(case))


@pytest.fixture
def recordings(tmp_path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


@pytest.fixture
def writers() -> Iterator[list[CaseWriter]]:
    """Every writer a test makes is stopped afterwards, whatever happened."""
    made: list[CaseWriter] = []
    yield made
    for writer in made:
        writer.stop(timeout_s=5)
        assert not writer._thread.is_alive()


@pytest.fixture
def make_writer(writers, recordings):
    def make(store: MemoryStore, **kwargs) -> CaseWriter:
        kwargs.setdefault("backoff_s", TINY)
        kwargs.setdefault("recording_settle_s", 0.01)
        kwargs.setdefault("recording_wait_s", 0.2)
        kwargs.setdefault("compact_idle_s", 0.01)
        writer = CaseWriter(store, recordings, **kwargs)
        writers.append(writer)
        return writer
    return make


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


# --- CaseWriter ----------------------------------------------------------------------------------

def test_many_submits_of_one_case_write_only_the_last_snapshot(make_writer):
    store = MemoryStore()
    writer = make_writer(store)
    case = new_case()
    other = new_case("20261125-190513-def456", "1795633621.0")
    writer.submit(case)
    writer.submit(other)
    for i in range(10):
        lifecycle.record_menu(case, s(i), "timeout", "timeout")
        writer.submit(case)
    writer.start()
    assert writer.flush(5)
    assert [(c.case_id, c.revision, len(c.menu)) for c in store.saved] == [
        (case.case_id, case.revision, 10), (other.case_id, 1, 0)]  # first-submitted first
    assert writer.written == 2 and writer.failures == 0
    assert store.threads == {"case-writer"}


def test_submit_takes_a_copy(make_writer):
    store = MemoryStore()
    writer = make_writer(store)
    case = new_case()
    writer.submit(case)
    lifecycle.set_team(case, s(1), "burns")  # changed after the submit, never submitted again
    writer.start()
    writer.flush(5)
    assert store.saved[0].team is None and store.saved[0].revision == 1
    assert store.saved[0] is not case


def test_a_failing_store_is_retried_until_it_succeeds(make_writer, caplog):
    store = MemoryStore(fail=2, error=RuntimeError("password=hunter2 could not connect"))
    writer = make_writer(store).start()
    case = new_case()
    writer.submit(case)
    assert writer.flush(5)
    assert store.calls == 3 and [c.revision for c in store.saved] == [1]
    assert (writer.written, writer.failures) == (1, 2)
    retries = [r for r in caplog.records if r.name == "hotline.casewriter" and r.levelno == logging.WARNING]
    assert len(retries) == 2 and all("hunter2" not in r.getMessage() for r in retries)


def test_a_newer_snapshot_replaces_one_that_keeps_failing(make_writer):
    class FailsOnRevision1(MemoryStore):
        def save(self, case):
            if case.revision == 1:
                self.calls += 1
                raise RuntimeError("down")
            super().save(case)

    store = FailsOnRevision1()
    writer = make_writer(store).start()
    case = new_case()
    writer.submit(case)
    wait_for(lambda: store.calls >= 2)
    lifecycle.set_team(case, s(2), "facial")
    writer.submit(case)
    assert writer.flush(5)
    assert [c.revision for c in store.saved] == [2]


def test_a_conflict_is_not_retried_and_the_writer_goes_on(make_writer, caplog):
    store = MemoryStore(fail=1, error=CaseConflict("linkedid 1795633620.0 belongs to another case"))
    writer = make_writer(store).start()
    writer.submit(new_case())
    assert writer.flush(5)
    assert store.calls == 1 and store.saved == []
    assert (writer.written, writer.failures) == (0, 1)
    assert any(r.levelno == logging.ERROR for r in caplog.records if r.name == "hotline.casewriter")
    writer.submit(new_case("20261125-190513-def456", "1795633621.0"))
    assert writer.flush(5)
    assert [c.case_id for c in store.saved] == ["20261125-190513-def456"]


def test_final_snapshot_of_a_connected_call_gets_its_recording(make_writer, recordings):
    store = MemoryStore()
    writer = make_writer(store).start()
    case = connected_case()
    path = recordings / f"{case.case_id}.wav"
    write_wav(path, 3.0)
    writer.submit(case, final=True)
    assert writer.flush(5)
    (saved,) = store.saved
    assert (saved.recording_path, saved.recording_s) == (str(path), 3)
    assert saved.revision == case.revision + 1
    assert case.recording_path is None  # the desk's case is not touched from the writer's thread


def test_a_recording_still_missing_does_not_hold_back_other_cases(make_writer, recordings):
    # The final snapshot of a connected call whose recording is not there waits
    # (up to recording_wait_s) beside the queue, not in front of it.
    store = MemoryStore()
    writer = make_writer(store, recording_settle_s=0.05, recording_wait_s=1.0).start()
    waiting = connected_case("20261125-190512-aaaaaa")
    other = new_case("20261125-190513-bbbbbb", linkedid="1795633621.0")
    writer.submit(waiting, final=True)
    writer.submit(other)
    wait_for(lambda: any(c.case_id == other.case_id for c in store.saved), 0.5)
    assert [c.case_id for c in store.saved] == [other.case_id]
    # Its recording appears meanwhile: attached once it has stopped growing.
    write_wav(recordings / f"{waiting.case_id}.wav", 2.0)
    assert writer.flush(5)
    saved = [c for c in store.saved if c.case_id == waiting.case_id]
    assert len(saved) == 1 and saved[0].recording_s == 2


def test_a_recording_that_never_comes_is_given_up_after_the_wait(make_writer, recordings, caplog):
    store = MemoryStore()
    writer = make_writer(store, recording_settle_s=0.02, recording_wait_s=0.3).start()
    case = connected_case()
    began = time.monotonic()
    writer.submit(case, final=True)
    assert writer.flush(5)
    assert time.monotonic() - began >= 0.3
    (saved,) = store.saved
    assert saved.recording_path is None and saved.ended_at is not None
    assert "has no recording" in caplog.text


def test_with_a_vault_the_recording_and_voicemail_are_sealed_after_measuring(make_writer,
                                                                             recordings, tmp_path):
    from vault import MAGIC, Vault, new_key, read_recording

    vault = Vault([new_key()])
    store = MemoryStore()
    writer = make_writer(store, vault=vault).start()
    case = connected_case()
    path = recordings / f"{case.case_id}.wav"
    write_wav(path, 3.0)
    plain = path.read_bytes()
    writer.submit(case, final=True)
    assert writer.flush(5)
    (saved,) = store.saved
    assert (saved.recording_path, saved.recording_s) == (str(path), 3)  # measured first
    assert path.read_bytes().startswith(MAGIC) and read_recording(path, vault) == plain
    # A path outside the recordings dir is never touched.
    outside = tmp_path / "outside.wav"
    write_wav(outside, 1.0)
    other = connected_case("20261125-190600-def456")
    other.recording_path, other.recording_s = str(outside), 1
    writer.submit(other, final=True)
    assert writer.flush(5)
    assert not outside.read_bytes().startswith(MAGIC)


def test_final_flag_survives_coalescing_with_a_later_snapshot(make_writer, recordings):
    store = MemoryStore()
    writer = make_writer(store)
    case = connected_case()
    write_wav(recordings / f"{case.case_id}.wav", 1.0)
    writer.submit(case, final=True)
    writer.submit(case)  # e.g. a late AMI event on the same case
    writer.start()
    assert writer.flush(5)
    assert store.saved[0].recording_s == 1


@pytest.mark.parametrize("final", [False, True])
def test_no_recording_unless_final_and_connected(make_writer, recordings, final):
    store = MemoryStore()
    writer = make_writer(store).start()
    connected, abandoned = connected_case(), new_case("20261125-190513-def456", "1795633621.0")
    lifecycle.mark_ended(abandoned, s(30), "caller")
    for case in (connected, abandoned):
        write_wav(recordings / f"{case.case_id}.wav", 2.0)
    writer.submit(connected, final=final)
    writer.submit(abandoned, final=True)
    assert writer.flush(5)
    by_id = {c.case_id: c for c in store.saved}
    assert by_id[abandoned.case_id].recording_path is None
    assert (by_id[connected.case_id].recording_path is not None) is final


@pytest.mark.parametrize("content", [None, b"", b"RIFF\x00\x00\x00\x00WAVE", b"not a wav at all" * 10])
def test_connected_call_without_a_usable_recording_is_saved_without_one(make_writer, recordings, content, caplog):
    store = MemoryStore()
    writer = make_writer(store, recording_wait_s=0.05).start()
    case = connected_case()
    if content is not None:
        (recordings / f"{case.case_id}.wav").write_bytes(content)
    writer.submit(case, final=True)
    assert writer.flush(5)
    (saved,) = store.saved
    assert saved.recording_path is None and saved.outcome == "connected"
    assert any("no recording" in r.getMessage() for r in caplog.records)


def test_flush_waits_for_the_write_in_progress(make_writer):
    gate = threading.Event()
    store = MemoryStore(gate=gate)
    writer = make_writer(store).start()
    writer.submit(new_case())
    wait_for(lambda: store.calls == 1)
    assert writer.flush(timeout_s=0.05) is False  # still inside save()
    assert store.saved == []
    gate.set()
    assert writer.flush(timeout_s=5) is True
    assert len(store.saved) == 1


def test_stop_writes_what_was_submitted(make_writer):
    store = MemoryStore()
    writer = make_writer(store).start()
    for i in range(5):
        writer.submit(new_case(f"20261125-190512-abc12{i}", f"1795633620.{i}"))
    writer.stop(timeout_s=5)
    assert len(store.saved) == 5 and not writer._thread.is_alive()


def test_stop_gives_up_at_its_timeout_while_the_store_keeps_failing(make_writer, caplog):
    store = MemoryStore(fail=10**9, error=ConnectionRefusedError("down"))
    writer = make_writer(store, backoff_s=(0.05,)).start()
    for i in range(3):
        writer.submit(new_case(f"20261125-190512-abc12{i}", f"1795633620.{i}"))
    wait_for(lambda: store.calls >= 2)
    began = time.monotonic()
    writer.stop(timeout_s=0.3)
    assert time.monotonic() - began < 0.3 + 0.2
    assert not writer._thread.is_alive()
    calls = store.calls
    time.sleep(0.15)
    assert store.calls == calls  # no retrying after stop
    assert writer.flush(5) is False  # at once: nobody is left to write
    lost = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hotline.casewriter"]
    assert len(lost) == 1 and "3 case(s)" in lost[0].getMessage() and "lost" in lost[0].getMessage()


def test_failed_saves_back_off_instead_of_spinning(make_writer):
    store = MemoryStore(fail=10**9)
    writer = make_writer(store, backoff_s=(0.01, 0.05, 0.1)).start()
    writer.submit(new_case())
    time.sleep(0.5)
    writer.stop(timeout_s=0.05)
    assert 3 <= store.calls <= 10  # tries at 0, 0.01, 0.06, 0.16, 0.26, ...: never a busy loop


def test_a_case_that_keeps_failing_does_not_hold_back_the_others(make_writer):
    class OneBadCase(MemoryStore):
        def save(self, case):
            if case.case_id.endswith("bad"):
                self.calls += 1
                raise ValueError("this row cannot be stored")
            super().save(case)

    store = OneBadCase()
    writer = make_writer(store, backoff_s=(0.01,)).start()
    writer.submit(new_case("20261125-190512-bad", "1795633620.9"))
    for i in range(3):
        writer.submit(new_case(f"20261125-190512-abc12{i}", f"1795633620.{i}"))
    wait_for(lambda: len(store.saved) == 3)
    assert writer.flush(0.05) is False  # the bad one is still being retried
    writer.stop(timeout_s=0.05)


def test_a_failed_final_snapshot_passes_its_recording_to_a_newer_one(make_writer, recordings):
    gate_open = threading.Event()

    class SlowFirstSave(MemoryStore):
        def save(self, case):
            if self.calls == 0:
                self.calls += 1
                assert gate_open.wait(5)
                raise RuntimeError("database is locked")
            super().save(case)

    store = SlowFirstSave()
    writer = make_writer(store).start()
    case = connected_case()
    write_wav(recordings / f"{case.case_id}.wav", 2.0)
    writer.submit(case, final=True)
    wait_for(lambda: store.calls == 1)
    lifecycle.mark_fallback(case, s(200))  # e.g. a late report, after the call ended
    writer.submit(case)
    gate_open.set()
    assert writer.flush(5)
    (saved,) = store.saved
    assert saved.fallback and saved.recording_s == 2


# --- CaseWriter with a journal ---------------------------------------------------------------------

@pytest.fixture
def journal_dir(tmp_path) -> Path:
    return tmp_path / "journal"


def journaled(journal_dir: Path) -> list[JournalEntry]:
    return [decode_entry(line) for line in (journal_dir / "cases.jsonl").read_bytes().splitlines()]


def test_a_snapshot_is_journaled_before_the_store_sees_it(make_writer, journal_dir):
    seen: list[int] = []

    class ChecksTheJournal(MemoryStore):
        def save(self, case):
            seen.append(sum(e.case.revision == case.revision for e in journaled(journal_dir)))
            super().save(case)

    writer = make_writer(ChecksTheJournal(), journal=Journal(journal_dir)).start()
    case = new_case()
    writer.submit(case)
    assert writer.flush(5)
    assert seen == [1]


def test_the_journal_is_emptied_once_the_store_has_everything(make_writer, journal_dir):
    store = MemoryStore(fail=3)
    journal = Journal(journal_dir)
    writer = make_writer(store, journal=journal).start()
    case = new_case()
    writer.submit(case)
    lifecycle.set_team(case, s(1), "facial")
    writer.submit(case)
    assert writer.flush(5)
    wait_for(lambda: journal.size == 0)
    writer.stop(5)
    assert (journal_dir / "cases.jsonl").read_bytes() == b""


def test_start_replays_the_journal_but_never_over_a_newer_submit(make_writer, journal_dir, recordings):
    old = connected_case()
    other = new_case("20261125-190513-def456", "1795633621.0")
    journal = Journal(journal_dir)
    journal.open()
    journal.append(old, final=True)
    journal.append(other)
    journal.close()
    newer = copy.deepcopy(old)
    lifecycle.set_recording(newer, s(101), "elsewhere.wav", 9)
    store = MemoryStore()
    writer = make_writer(store, journal=Journal(journal_dir))
    writer.submit(newer)  # before start: the journal opens here, and is replayed
    writer.start()
    assert writer.flush(5)
    assert writer.replayed == 2
    assert [(c.case_id, c.revision, c.recording_path) for c in store.saved] == [
        (old.case_id, newer.revision, "elsewhere.wav"), (other.case_id, other.revision, None)]


def test_the_journal_is_compacted_only_once_the_writer_has_been_idle_a_while(make_writer, journal_dir):
    journal = Journal(journal_dir)
    writer = make_writer(MemoryStore(), journal=journal, compact_idle_s=0.3).start()
    # Taken before the submit: the writer's idle time starts after its write,
    # which is later, so the bound below holds however the threads are scheduled.
    submitted_at = time.monotonic()
    writer.submit(new_case())
    assert writer.flush(5)
    time.sleep(0.1)
    assert journal.size > 0 and journal.unapplied() == []
    wait_for(lambda: journal.size == 0)
    assert time.monotonic() - submitted_at >= 0.3


def test_a_conflicting_snapshot_is_kept_aside_and_does_not_hold_the_journal(make_writer, journal_dir):
    store = MemoryStore(fail=1, error=CaseConflict("linkedid belongs to another case"))
    journal = Journal(journal_dir)
    writer = make_writer(store, journal=journal).start()
    case = new_case()
    writer.submit(case)
    assert writer.flush(5)
    wait_for(lambda: journal.size == 0)
    rejected = (journal_dir / "rejected.jsonl").read_bytes().splitlines()
    assert [decode_entry(line).case for line in rejected] == [case]


def test_stop_leaves_unwritten_snapshots_in_the_journal_for_the_next_start(
        make_writer, journal_dir, caplog):
    down = MemoryStore(fail=10**9)
    first = make_writer(down, backoff_s=(0.02,), journal=Journal(journal_dir)).start()
    cases = [new_case(f"20261125-190512-abc12{i}", f"1795633620.{i}") for i in range(3)]
    for case in cases:
        first.submit(case)
    lifecycle.set_team(cases[0], s(1), "burns")
    first.submit(cases[0])
    wait_for(lambda: down.calls >= 2)
    first.stop(timeout_s=0.2)
    assert any("3 case(s)" in r.getMessage() and "stay in the journal" in r.getMessage()
               for r in caplog.records)
    assert len(journaled(journal_dir)) == 4

    up = MemoryStore()
    second = make_writer(up, journal=Journal(journal_dir)).start()
    assert second.flush(5)
    assert sorted((c.case_id, c.revision) for c in up.saved) == sorted(
        (c.case_id, c.revision) for c in cases)


def test_a_failing_journal_does_not_fail_submit(make_writer, journal_dir, caplog, monkeypatch):
    store = MemoryStore()
    journal = Journal(journal_dir)
    writer = make_writer(store, journal=journal).start()

    def broken(case, final=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "append", broken)
    writer.submit(new_case())
    assert writer.flush(5)
    assert len(store.saved) == 1 and writer.journal_errors == 1
    assert any("queued in memory only" in r.getMessage() for r in caplog.records)


# --- RosterCache ---------------------------------------------------------------------------------

def roster(name: str) -> Roster:
    return Roster(teams={name: Team(name, name, name)})


class Loader:
    def __init__(self) -> None:
        self.rosters: list[Roster | Exception] = []
        self.partners: list[dict[str, int] | Exception] = []
        self.windows: list[tuple[datetime, datetime]] = []

    def load_roster(self, start: datetime, end: datetime) -> Roster:
        self.windows.append((start, end))
        item = self.rosters.pop(0) if len(self.rosters) > 1 else self.rosters[0]
        if isinstance(item, Exception):
            raise item
        return item

    def load_partners(self) -> dict[str, int]:
        item = self.partners.pop(0) if len(self.partners) > 1 else self.partners[0]
        if isinstance(item, Exception):
            raise item
        return item


def test_roster_cache_keeps_the_last_snapshot_when_a_load_fails(caplog):
    now = [T0]
    loader = Loader()
    loader.rosters = [roster("facial"), RuntimeError("password=hunter2 refused"), roster("burns"), roster("replant")]
    # partners are read only after the roster loaded: the 2nd read is the 3rd refresh
    loader.partners = [{"043188888888": 7}, RuntimeError("down"), {"01088888888": 8}]
    cache = RosterCache(loader.load_roster, loader.load_partners, lambda: now[0])

    assert cache.refresh() is True
    assert set(cache.roster().teams) == {"facial"} and cache.partner_numbers() == {"043188888888": 7}
    assert cache.loaded_at == T0 and loader.windows == [(T0 - timedelta(days=2), T0 + timedelta(days=2))]

    now[0] = s(30)
    assert cache.refresh() is False  # the roster query fails
    assert set(cache.roster().teams) == {"facial"} and cache.loaded_at == T0
    assert all("hunter2" not in r.getMessage() for r in caplog.records)

    now[0] = s(60)
    assert cache.refresh() is False  # the roster loads but the partners fail: nothing half-replaced
    assert set(cache.roster().teams) == {"facial"} and cache.partner_numbers() == {"043188888888": 7}

    now[0] = s(90)
    assert cache.refresh() is True
    assert set(cache.roster().teams) == {"replant"} and cache.partner_numbers() == {"01088888888": 8}
    assert cache.loaded_at == s(90)


def test_roster_cache_serves_an_empty_roster_if_the_first_load_fails():
    loader = Loader()
    loader.rosters = [RuntimeError("no database")]
    loader.partners = [{}]
    cache = RosterCache(loader.load_roster, loader.load_partners, lambda: T0, refresh_s=60)
    cache.start()
    try:
        assert cache.roster() == Roster() and cache.partner_numbers() == {} and cache.loaded_at is None
    finally:
        cache.stop()


def test_roster_cache_refreshes_on_its_thread_until_stopped():
    loader = Loader()
    loader.rosters = [roster("facial")]
    loader.partners = [{}]
    cache = RosterCache(loader.load_roster, loader.load_partners, lambda: T0, refresh_s=0.005)
    cache.start()
    try:
        wait_for(lambda: len(loader.windows) >= 3)
    finally:
        cache.stop()
    assert not cache._thread.is_alive()
    count = len(loader.windows)
    time.sleep(0.03)
    assert len(loader.windows) == count


def test_a_second_case_for_a_running_call_is_merged_into_the_stored_one(engine, tmp_path):
    """After a restart the new service opens a case at the hang-up of a call the old one
    had stored: the writer folds that end into the stored case (one case per call)."""
    from datetime import datetime, timedelta, timezone

    from cases import lifecycle
    from db.repo import CaseRepository
    from hotline.casewriter import CaseWriter
    from routing.callers import classify

    repo = CaseRepository(engine)
    t0 = datetime(2026, 11, 25, 19, 0, tzinfo=timezone.utc)
    caller = classify("13800138000", {})
    stored = lifecycle.open_case("C-old", "1795633620.0", caller, t0)
    repo.save(stored)
    late = lifecycle.open_case("C-new", "1795633620.0", caller, t0 + timedelta(seconds=60))
    lifecycle.mark_ended(late, t0 + timedelta(seconds=60), "caller")
    writer = CaseWriter(repo, tmp_path).start()
    writer.submit(late, final=True)
    assert writer.flush(10)
    writer.stop()
    merged = repo.get_by_linkedid("1795633620.0")
    assert merged.case_id == "C-old" and merged.ended_at == t0 + timedelta(seconds=60)
    assert repo.get("C-new") is None
