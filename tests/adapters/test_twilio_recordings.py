"""Twilio recordings fetched home: a local HTTP server plays Twilio's REST API.

Real sockets and a real HTTP client; the case record is read back from the
database (SQLite and PostgreSQL) and the file from the recordings dir.
"""
from __future__ import annotations

import base64
import json
import io
import secrets
import wave
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from carrier.twilio_recordings import (FETCHED, NOT_DELETED, RecordingFetcher, remote_recordings)
from cases import lifecycle
from cases.lifecycle import CaseError
from db.models import AuditRow
from db.repo import CaseRepository
from ivr.calls import open_call_case
from tests.support.notify_server import Answer, StubServer, refused_port

ACCOUNT = "AC" + "1" * 32
OTHER_ACCOUNT = "AC" + "2" * 32
TOKEN = "rec-token-" + "0" * 22
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def wav_bytes(seconds: float = 2.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return buffer.getvalue()


def recording_url(account: str = ACCOUNT) -> tuple[str, str]:
    sid = "RE" + secrets.token_hex(16)
    return sid, f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}"


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


def saved_case(engine, *, call_url: str | None = None, voicemail_url: str | None = None,
               started: datetime = T0):
    case, _ = open_call_case(f"20261201-1000{secrets.token_hex(1)}-{secrets.token_hex(3)}",
                             "CA" + secrets.token_hex(16), "13912345678", {}, frozenset(),
                             started, "zh")
    if voicemail_url:
        lifecycle.set_voicemail(case, started + timedelta(seconds=40), voicemail_url)
    if call_url:
        lifecycle.set_recording(case, started + timedelta(seconds=90), call_url, 60)
    CaseRepository(engine).save(case)
    return case


class Twilio:
    """Twilio's recording resources: GET .wav (basic auth), DELETE .json."""

    def __init__(self, media: bytes | None = None) -> None:
        self.media = wav_bytes() if media is None else media
        self.get_answer: Answer | None = None
        self.delete_answer = Answer(204, b"", "text/plain")
        self.server = StubServer(respond=self._respond)

    def _respond(self, request):
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return Answer(401, b'{"code":20003}')
        if request.method == "GET" and request.path.endswith(".wav"):
            return self.get_answer or Answer(200, self.media, "audio/x-wav")
        if request.method == "DELETE" and request.path.endswith(".json"):
            return self.delete_answer
        return Answer(404, b'{"code":20404}')

    def seen(self, method: str) -> list[str]:
        return [r.path for r in self.server.requests if r.method == method]


@pytest.fixture
def twilio():
    fake = Twilio()
    yield fake
    fake.server.close()


@pytest.fixture
def fetcher_for(engine, tmp_path, twilio):
    def build(**kwargs) -> RecordingFetcher:
        options = dict(base_url=twilio.server.url, clock=Clock(), token=TOKEN)
        options.update(kwargs)
        token = options.pop("token")
        return RecordingFetcher(engine, tmp_path / "recordings", ACCOUNT, token, **options)
    return build


def audit(engine, action: str) -> list[AuditRow]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditRow).where(AuditRow.action == action)))


def test_call_and_voicemail_fetched_attached_deleted_once(engine, tmp_path, twilio, fetcher_for):
    call_sid, call_url = recording_url()
    connected = saved_case(engine, call_url=call_url)
    vm_sid, vm_url = recording_url()
    missed = saved_case(engine, voicemail_url=vm_url, started=T0 + timedelta(minutes=5))
    fetcher = fetcher_for()

    summary = fetcher.run_once()

    assert (summary.fetched, summary.deleted, summary.failed) == (2, 2, 0)
    cases = CaseRepository(engine)
    home = (tmp_path / "recordings").resolve()
    got = cases.get(connected.case_id)
    assert got.recording_path == str(home / f"twilio-{connected.case_id}-call-{call_sid}.wav")
    assert got.recording_s == 60  # Twilio's own length, kept
    assert (home / f"twilio-{connected.case_id}-call-{call_sid}.wav").read_bytes() == twilio.media
    vm = cases.get(missed.case_id)
    assert vm.voicemail_path == str(home / f"twilio-{missed.case_id}-voicemail-{vm_sid}.wav")
    assert sorted(twilio.seen("GET")) == sorted(
        [f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{call_sid}.wav",
         f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{vm_sid}.wav"])
    assert sorted(twilio.seen("DELETE")) == sorted(
        [f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{call_sid}.json",
         f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{vm_sid}.json"])
    assert {row.subject_id for row in audit(engine, FETCHED)} == {connected.case_id, missed.case_id}
    assert not list(home.glob("*.part"))

    # A second round (or a second process) finds nothing left to do.
    again = fetcher_for().run_once()
    assert (again.fetched, again.failed) == (0, 0)
    assert len(twilio.server.requests) == 4


def test_server_error_leaves_case_unchanged_then_backs_off_then_succeeds(engine, tmp_path,
                                                                        twilio, fetcher_for):
    _, url = recording_url()
    case = saved_case(engine, call_url=url)
    ticks = [0.0]
    fetcher = fetcher_for(monotonic=lambda: ticks[0])
    twilio.get_answer = Answer(500, b"oops", "text/plain")

    first = fetcher.run_once()
    assert (first.fetched, first.failed) == (0, 1)
    assert CaseRepository(engine).get(case.case_id).recording_path == url
    assert not list((tmp_path / "recordings").glob("*"))

    twilio.get_answer = None
    assert fetcher.run_once().skipped == 1  # backing off: not asked again yet
    assert len(twilio.seen("GET")) == 1
    ticks[0] += 31
    assert fetcher.run_once().fetched == 1
    assert CaseRepository(engine).get(case.case_id).recording_path.endswith(".wav")


@pytest.mark.parametrize("answer, why", [
    (Answer(200, b"<html>login</html>", "text/html"), "not a WAV"),
    (Answer(200, b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/x-wav"), "a WAV header with no audio"),
    (Answer(302, b"", "text/plain"), "a redirect is not followed"),
    (Answer(drop=True), "connection dropped"),
])
def test_bad_answers_change_nothing(engine, tmp_path, twilio, fetcher_for, answer, why):
    _, url = recording_url()
    case = saved_case(engine, call_url=url)
    twilio.get_answer = answer
    summary = fetcher_for().run_once()
    assert (summary.fetched, summary.failed) == (0, 1), why
    assert CaseRepository(engine).get(case.case_id).recording_path == url
    assert not list((tmp_path / "recordings").glob("*")), why
    assert twilio.seen("DELETE") == []


def test_oversize_download_is_cut_off_and_leaves_no_file(engine, tmp_path, twilio, fetcher_for):
    _, url = recording_url()
    case = saved_case(engine, call_url=url)
    twilio.media = wav_bytes(seconds=30)  # ~480 kB
    summary = fetcher_for(max_bytes=100_000).run_once()
    assert summary.failed == 1
    assert CaseRepository(engine).get(case.case_id).recording_path == url
    assert not list((tmp_path / "recordings").glob("*"))


def test_wrong_token_is_refused_by_twilio_and_nothing_changes(engine, twilio, fetcher_for):
    _, url = recording_url()
    case = saved_case(engine, call_url=url)
    assert fetcher_for(token="wrong").run_once().failed == 1
    assert CaseRepository(engine).get(case.case_id).recording_path == url


def test_another_accounts_recording_is_never_requested(engine, twilio, fetcher_for):
    _, url = recording_url(OTHER_ACCOUNT)
    case = saved_case(engine, call_url=url)
    assert fetcher_for().run_once().failed == 1
    assert twilio.server.requests == []  # our credentials went nowhere
    assert CaseRepository(engine).get(case.case_id).recording_path == url


def test_delete_refused_is_audited_and_the_local_copy_kept(engine, tmp_path, twilio, fetcher_for):
    sid, url = recording_url()
    case = saved_case(engine, call_url=url)
    twilio.delete_answer = Answer(500, b"", "text/plain")
    summary = fetcher_for().run_once()
    assert (summary.fetched, summary.not_deleted) == (1, 1)
    assert CaseRepository(engine).get(case.case_id).recording_path.endswith(f"{sid}.wav")
    rows = audit(engine, NOT_DELETED)
    assert [(r.subject_id, json.loads(r.detail)["recording_sid"]) for r in rows] == [(case.case_id, sid)]


def test_keep_at_twilio_sends_no_delete(engine, twilio, fetcher_for):
    _, url = recording_url()
    saved_case(engine, call_url=url)
    summary = fetcher_for(delete_at_twilio=False).run_once()
    assert (summary.fetched, summary.deleted, summary.not_deleted) == (1, 0, 0)
    assert twilio.seen("DELETE") == []


def test_unreachable_twilio_is_a_failure_not_a_crash(engine, fetcher_for):
    _, url = recording_url()
    case = saved_case(engine, call_url=url)
    fetcher = fetcher_for(base_url=f"http://127.0.0.1:{refused_port()}")
    assert fetcher.run_once().failed == 1
    assert CaseRepository(engine).get(case.case_id).recording_path == url


def test_cases_outside_the_window_wait_for_a_wider_sweep(engine, twilio, fetcher_for):
    _, url = recording_url()
    old = saved_case(engine, call_url=url, started=T0 - timedelta(days=30))
    fetcher = fetcher_for()
    assert fetcher.pending_case_ids() == []
    assert fetcher.pending_case_ids(since=T0 - timedelta(days=31)) == [old.case_id]


def test_failing_recordings_do_not_hide_newer_ones(engine, twilio, fetcher_for):
    """More stuck recordings than one page still leave the newest reachable."""
    stuck = [saved_case(engine, call_url=recording_url()[1], started=T0 + timedelta(seconds=i))
             for i in range(5)]
    newest = saved_case(engine, call_url=recording_url()[1], started=T0 + timedelta(minutes=9))
    fetcher = fetcher_for()
    assert fetcher.pending_case_ids(limit=2) == [c.case_id for c in stuck] + [newest.case_id]


def test_remote_recordings_reads_only_twilio_urls():
    sid, url = recording_url()
    case, _ = open_call_case("20261201-100000-abcdef", "CA" + "0" * 32, "13912345678", {},
                             frozenset(), T0, "zh")
    lifecycle.set_recording(case, T0, "/var/recordings/x.wav")
    assert remote_recordings(case) == []
    lifecycle.set_voicemail(case, T0, url + "?x=../../etc")  # not a plain Twilio URL
    assert remote_recordings(case) == []


def test_relocate_recording_moves_only_the_path_the_case_holds():
    _, url = recording_url()
    case, _ = open_call_case("20261201-100000-abcdef", "CA" + "0" * 32, "13912345678", {},
                             frozenset(), T0, "zh")
    lifecycle.set_recording(case, T0, url, 10)
    revision = case.revision
    lifecycle.relocate_recording(case, T0, "call", url, "/rec/a.wav")
    assert case.recording_path == "/rec/a.wav" and case.revision == revision + 1
    lifecycle.relocate_recording(case, T0, "call", url, "/rec/a.wav")  # again: no change
    assert case.revision == revision + 1
    with pytest.raises(CaseError):
        lifecycle.relocate_recording(case, T0, "call", url, "/rec/b.wav")
    with pytest.raises(CaseError):
        lifecycle.relocate_recording(case, T0, "fax", url, "/rec/b.wav")
