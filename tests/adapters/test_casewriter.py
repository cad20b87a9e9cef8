"""The case writer's thread against an in-memory store, and the roster cache's last snapshot."""
from __future__ import annotations

import copy
import logging
import threading
import time
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cases import lifecycle
from cases.lifecycle import Case
from db.repo import CaseConflict
from hotline.casewriter import CaseWriter
from hotline.rostercache import RosterCache
from oncall.model import Roster, Team
from routing.callers import classify
from routing.escalation import ChainStep

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


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))


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
