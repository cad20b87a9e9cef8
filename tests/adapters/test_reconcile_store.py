"""Reconciliation against Asterisk's own SQLite files and a real case store (SQLite and PostgreSQL).

The CDR/CEL files are rebuilt from a sample captured on the sandboxed
Asterisk 22.10 (tables exactly as cdr_sqlite3_custom/cel_sqlite3_custom create
them): call 1795636886.0 went the normal way (the service answered, the
surgeon pressed 1, MixMonitor recorded it); call 1795636900.2 came while the
service was stopped (the dialplan fell through to the static fallback, the
duty nurse's phone answered without a key, the caller left a voicemail).
"""
from __future__ import annotations

import logging
import sqlite3
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from cases import lifecycle
from cases.reconcile import Directory, parse_epoch
from db.repo import CaseRepository
from hotline import jobs
from hotline.reconcile import AsteriskRecords, ReconcileError, Reconciler, parse_when
from routing.callers import classify
from routing.escalation import CHAIN, NURSE, AttemptOutcome, ChainStep

SAMPLE_REC_DIR = "/tmp/hl-f4rfm52i/recordings/it"
CDR_SQL = r"""
CREATE TABLE cdr (AcctId INTEGER PRIMARY KEY, start_ts,answer_ts,end_ts,clid,src,dst,dcontext,channel,dstchannel,lastapp,lastdata,duration,billsec,disposition,uniqueid,linkedid,sequence);
INSERT INTO "cdr" VALUES(1,'1795636886.849938','1795636886.851952','1795636893.682513','"" <13611115001>','13611115001','s','hotline-route','PJSIP/caller-00000000','PJSIP/surgeons-00000001','Dial','PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_f','6','6','ANSWERED','1795636886.0','1795636886.0','0');
INSERT INTO "cdr" VALUES(2,'1795636900.760406','1795636900.761240','1795636922.707051','"" <13611115003>','13611115003','s','hotline-fallback','PJSIP/caller-00000002','PJSIP/surgeons-00000003','Dial','PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000002^whisper_n','21','21','FAILED','1795636900.2','1795636900.2','2');
INSERT INTO "cdr" VALUES(3,'1795636922.707543','1795636922.707543','1795636931.297154','"" <13611115003>','13611115003','s','hotline-voicemail','PJSIP/caller-00000002','','Hangup','','8','8','ANSWERED','1795636900.2','1795636900.2','4');
"""
CEL_SQL = r"""
CREATE TABLE cel (AcctId INTEGER PRIMARY KEY, eventtype,eventtime,cidname,cidnum,cidani,exten,context,channame,appname,appdata,uniqueid,linkedid,peer,extra);
INSERT INTO "cel" VALUES(1,'CHAN_START','1795636886.849938','','13611115001','','96608','hotline-callers','PJSIP/caller-00000000','','','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(2,'ANSWER','1795636886.851952','','13611115001','13611115001','s','hotline-inbound','PJSIP/caller-00000000','Answer','','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(3,'DTMF','1795636888.056049','','13611115001','13611115001','s','hotline-menu','PJSIP/caller-00000000','Read','HOTLINE_CHOICE,/tmp/hl-f4rfm52i/prompts/zh/greeting,1,,1,3','1795636886.0','1795636886.0','','{"digit":"1","duration_ms":180}');
INSERT INTO "cel" VALUES(4,'APP_START','1795636889.414168','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','MixMonitor','/tmp/hl-f4rfm52i/recordings/it/20261126-040126-8afd04.wav,b','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(5,'APP_START','1795636889.414500','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','Dial','PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261126-040126-8afd04^1)','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(6,'CHAN_START','1795636889.415664','','','','s','hotline-from-surgeons','PJSIP/surgeons-00000001','','','1795636889.1','1795636886.0','','');
INSERT INTO "cel" VALUES(7,'ANSWER','1795636889.932837','','s','','s','hotline-from-surgeons','PJSIP/surgeons-00000001','AppDial','(Outgoing Line)','1795636889.1','1795636886.0','','');
INSERT INTO "cel" VALUES(8,'DTMF','1795636891.152000','','s','','s','hotline-whisper','PJSIP/surgeons-00000001','Read','HOTLINE_KEY,/tmp/hl-f4rfm52i/prompts/zh/whisper_facial&/tmp/hl-f4rfm52i/prompts/zh/press1,1,,1,4','1795636889.1','1795636886.0','','{"digit":"1","duration_ms":180}');
INSERT INTO "cel" VALUES(9,'BRIDGE_ENTER','1795636891.170361','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000001','AppDial','(Outgoing Line)','1795636889.1','1795636886.0','','{"bridge_id":"f8c5c2fb-784c-4f77-b9d0-86ad91ea6ee0","bridge_technology":"simple_bridge"}');
INSERT INTO "cel" VALUES(10,'BRIDGE_ENTER','1795636891.171366','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','Dial','PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261126-040126-8afd04^1)','1795636886.0','1795636886.0','PJSIP/surgeons-00000001','{"bridge_id":"f8c5c2fb-784c-4f77-b9d0-86ad91ea6ee0","bridge_technology":"simple_bridge"}');
INSERT INTO "cel" VALUES(11,'BRIDGE_EXIT','1795636893.682513','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','Dial','PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-00000000^whisper_facial^^20261126-040126-8afd04^1)','1795636886.0','1795636886.0','PJSIP/surgeons-00000001','{"bridge_id":"f8c5c2fb-784c-4f77-b9d0-86ad91ea6ee0","bridge_technology":"simple_bridge"}');
INSERT INTO "cel" VALUES(12,'BRIDGE_EXIT','1795636893.689437','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000001','AppDial','(Outgoing Line)','1795636889.1','1795636886.0','','{"bridge_id":"f8c5c2fb-784c-4f77-b9d0-86ad91ea6ee0","bridge_technology":"simple_bridge"}');
INSERT INTO "cel" VALUES(13,'HANGUP','1795636893.692691','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000001','AppDial','(Outgoing Line)','1795636889.1','1795636886.0','','{"hangupcause":16,"hangupsource":"PJSIP/caller-00000000","dialstatus":""}');
INSERT INTO "cel" VALUES(14,'CHAN_END','1795636893.692691','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000001','AppDial','(Outgoing Line)','1795636889.1','1795636886.0','','');
INSERT INTO "cel" VALUES(15,'HANGUP','1795636893.696481','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','','','1795636886.0','1795636886.0','','{"hangupcause":16,"hangupsource":"PJSIP/caller-00000000","dialstatus":"ANSWER"}');
INSERT INTO "cel" VALUES(16,'CHAN_END','1795636893.696481','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','','','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(17,'LINKEDID_END','1795636893.696481','','13611115001','13611115001','s','hotline-route','PJSIP/caller-00000000','','','1795636886.0','1795636886.0','','');
INSERT INTO "cel" VALUES(18,'CHAN_START','1795636900.760406','','13611115003','','96608','hotline-callers','PJSIP/caller-00000002','','','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(19,'ANSWER','1795636900.761240','','13611115003','13611115003','s','hotline-inbound','PJSIP/caller-00000002','Answer','','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(20,'APP_START','1795636915.070310','','13611115003','13611115003','s','hotline-mirror','PJSIP/caller-00000002','MixMonitor','/tmp/hl-f4rfm52i/recordings/it/u1795636900.2.wav,b','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(21,'APP_START','1795636915.071049','','13611115003','13611115003','s','hotline-fallback','PJSIP/caller-00000002','Dial','PJSIP/13900000000@surgeons,8,mU(hotline-whisper^PJSIP/caller-00000002^whisper_nurse^^u1795636900.2^0)','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(22,'CHAN_START','1795636915.071756','','','','s','hotline-from-surgeons','PJSIP/surgeons-00000003','','','1795636915.3','1795636900.2','','');
INSERT INTO "cel" VALUES(23,'ANSWER','1795636915.588168','','s','','s','hotline-from-surgeons','PJSIP/surgeons-00000003','AppDial','(Outgoing Line)','1795636915.3','1795636900.2','','');
INSERT INTO "cel" VALUES(24,'HANGUP','1795636922.708955','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000003','AppDial','(Outgoing Line)','1795636915.3','1795636900.2','','{"hangupcause":16,"hangupsource":"","dialstatus":""}');
INSERT INTO "cel" VALUES(25,'CHAN_END','1795636922.708955','','s','','','hotline-from-surgeons','PJSIP/surgeons-00000003','AppDial','(Outgoing Line)','1795636915.3','1795636900.2','','');
INSERT INTO "cel" VALUES(26,'APP_START','1795636924.519149','','13611115003','13611115003','s','hotline-voicemail','PJSIP/caller-00000002','Record','/tmp/hl-f4rfm52i/recordings/it/u1795636900.2-voicemail.wav,3,120,k','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(27,'HANGUP','1795636931.298831','','13611115003','13611115003','s','hotline-voicemail','PJSIP/caller-00000002','','','1795636900.2','1795636900.2','','{"hangupcause":16,"hangupsource":"dialplan/builtin","dialstatus":""}');
INSERT INTO "cel" VALUES(28,'CHAN_END','1795636931.298831','','13611115003','13611115003','s','hotline-voicemail','PJSIP/caller-00000002','','','1795636900.2','1795636900.2','','');
INSERT INTO "cel" VALUES(29,'LINKEDID_END','1795636931.298831','','13611115003','13611115003','s','hotline-voicemail','PJSIP/caller-00000002','','','1795636900.2','1795636900.2','','');
"""
LIVE = "1795636886.0"  # served by the service; its case is stored
MISSED = "1795636900.2"  # served without the service
LIVE_CASE_ID = "20261126-040126-8afd04"
NOW = datetime(2026, 11, 25, 20, 15, tzinfo=timezone.utc)  # ~13 minutes after both calls
SINCE = datetime(2026, 11, 25, 20, 0, tzinfo=timezone.utc)


def at(epoch: str) -> datetime:
    stamp = parse_epoch(epoch)
    assert stamp is not None
    return stamp


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """An instance's log dir holding Asterisk's cdr.db and cel.db from the sample."""
    log = tmp_path / "log"
    log.mkdir()
    rec = tmp_path / "recordings"
    for name, script in (("cdr.db", CDR_SQL), ("cel.db", CEL_SQL)):
        conn = sqlite3.connect(log / name)
        conn.executescript(script.replace(SAMPLE_REC_DIR, str(rec)))
        conn.commit()
        conn.close()
    return log


@pytest.fixture
def rec_dir(tmp_path: Path) -> Path:
    rec = tmp_path / "recordings"
    rec.mkdir()
    with wave.open(str(rec / f"{LIVE_CASE_ID}.wav"), "wb") as w:  # 2 s of silence
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 16000)
    return rec


@pytest.fixture
def repo(engine) -> CaseRepository:
    return CaseRepository(engine)


def live_case():
    """The case the service wrote for the live call (its writer never attached the recording)."""
    case = lifecycle.open_case(LIVE_CASE_ID, LIVE, classify("13611115001", {}), at("1795636886.851952"))
    lifecycle.record_menu(case, at("1795636888.06"), "1", "facial")
    lifecycle.set_team(case, at("1795636889.4"), "facial")
    lifecycle.start_attempt(case, at("1795636889.4145"), 1, CHAIN,
                            ChainStep(1, "甲 primary facial", "13700000101", "primary", 6))
    lifecycle.mark_connected(case, at("1795636891.19"), 1)
    lifecycle.mark_ended(case, at("1795636893.7"), "caller")
    return case


def reconciler(log_dir: Path, repo: CaseRepository, rec_dir: Path, settle_s: float = 60) -> Reconciler:
    return Reconciler(AsteriskRecords(log_dir), repo,
                      lambda start, end: Directory(nurse_phone="13900000000"),
                      rec_dir, clock=lambda: NOW, settle_s=settle_s)


def test_reads_each_call_of_the_window_whole(log_dir):
    records = AsteriskRecords(log_dir)
    calls = records.calls(SINCE, NOW)
    assert sorted(calls) == [LIVE, MISSED]
    assert len(calls[LIVE].events) == 17 and len(calls[LIVE].cdrs) == 1
    assert len(calls[MISSED].events) == 12 and len(calls[MISSED].cdrs) == 2
    # A window holding only the missed call's last second still yields all of it.
    tail = records.calls(at("1795636931.0"), at("1795636932.0"))
    assert list(tail) == [MISSED] and len(tail[MISSED].events) == 12
    assert records.calls(NOW, NOW + timedelta(hours=1)) == {}


def test_missing_files_are_an_empty_window(tmp_path):
    assert AsteriskRecords(tmp_path / "nothing-here").calls(SINCE, NOW) == {}
    (tmp_path / "cel.db").write_bytes(b"")  # created, no table yet
    assert AsteriskRecords(tmp_path).calls(SINCE, NOW) == {}


def test_a_file_that_is_not_sqlite_is_an_error(tmp_path):
    (tmp_path / "cel.db").write_text("not a database, just text " * 100)
    with pytest.raises(ReconcileError):
        AsteriskRecords(tmp_path).calls(SINCE, NOW)


def test_reconcile_fills_in_and_a_second_run_changes_nothing(log_dir, rec_dir, repo):
    assert repo.save(live_case())
    report = reconciler(log_dir, repo, rec_dir).run(SINCE, NOW)
    assert (report.count("created"), report.count("updated"), report.errors) == (1, 1, [])

    missed = repo.get_by_linkedid(MISSED)
    assert missed is not None and missed.case_id == f"r-{MISSED}"
    assert missed.fallback and missed.outcome == "fallback"
    assert missed.caller.number == "13611115003"
    assert missed.team == "nurse" and missed.hangup_by == "system"
    assert [(a.kind, a.phone, a.outcome, a.answered) for a in missed.attempts] == [
        (NURSE, "13900000000", AttemptOutcome.NO_ANSWER, True)]
    assert missed.voicemail_path == str(rec_dir / f"u{MISSED}-voicemail.wav")
    assert missed.started_at == at("1795636900.760406")
    assert missed.ended_at == at("1795636931.298831")
    assert len(repo.callbacks()) == 1  # the voicemail opens a callback task, as for any case

    live = repo.get(LIVE_CASE_ID)
    assert live.recording_path == str(rec_dir / f"{LIVE_CASE_ID}.wav") and live.recording_s == 2
    assert not live.fallback and live.attempts[0].outcome is AttemptOutcome.ACCEPTED

    again = reconciler(log_dir, repo, rec_dir).run(SINCE, NOW)
    assert again.count("unchanged") == 2 and not again.changed and again.errors == []
    assert repo.get(f"r-{MISSED}").revision == missed.revision


def test_dry_run_saves_nothing(log_dir, rec_dir, repo):
    report = reconciler(log_dir, repo, rec_dir).run(SINCE, NOW, dry_run=True)
    assert report.count("created") == 2
    assert repo.get_by_linkedid(MISSED) is None and repo.get_by_linkedid(LIVE) is None
    text = "\n".join(report.lines())
    assert "dry run" in text and "changes found, none saved" in text and f"case r-{MISSED} (created)" in text


def test_calls_that_just_ended_wait_for_the_service(log_dir, rec_dir, repo):
    report = reconciler(log_dir, repo, rec_dir, settle_s=3600).run(SINCE, NOW)
    assert report.count("in-progress") == 2 and not report.changed
    assert repo.get_by_linkedid(MISSED) is None


def test_report_lines_are_printable(log_dir, rec_dir, repo):
    lines = reconciler(log_dir, repo, rec_dir).run(SINCE, NOW).lines()
    assert lines[0] == "reconciled 2026-11-25T20:00:00Z .. 2026-11-25T20:15:00Z"
    assert lines[1].startswith("2 calls: 2 new cases, 0 completed")
    assert all(line.isprintable() for line in lines)


class _FailingStore:
    def get_by_linkedid(self, linkedid):
        return None

    def save(self, case):
        raise RuntimeError("database away\r\nforged line")


def test_a_failed_save_is_reported_and_the_run_goes_on(log_dir, rec_dir):
    report = reconciler(log_dir, _FailingStore(), rec_dir).run(SINCE, NOW)  # type: ignore[arg-type]
    assert len(report.errors) == 2 and all("\n" not in e for e in report.errors)


def test_recordings_outside_the_recordings_dir_are_not_attached(log_dir, tmp_path, repo):
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert repo.save(live_case())
    reconciler(log_dir, repo, other).run(SINCE, NOW)
    assert repo.get(LIVE_CASE_ID).recording_path is None


# -- --since / --until -----------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("now", NOW),
    ("30m", NOW - timedelta(minutes=30)),
    ("2h", NOW - timedelta(hours=2)),
    ("1d", NOW - timedelta(days=1)),
    ("90s", NOW - timedelta(seconds=90)),
    ("2026-11-25T12:00:00+00:00", datetime(2026, 11, 25, 12, tzinfo=timezone.utc)),
    ("2026-11-25 20:00", datetime(2026, 11, 25, 12, tzinfo=timezone.utc)),  # Asia/Shanghai
])
def test_since_and_until(text, expected):
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "2 hours", "-2h", "yesterday", "2h\n", "1e3s"])
def test_bad_since_is_refused(text):
    if text == "2h\n":  # surrounding whitespace is fine
        assert parse_when(text, NOW) == NOW - timedelta(hours=2)
        return
    with pytest.raises(ValueError):
        parse_when(text, NOW)


# -- the scheduled job -------------------------------------------------------------------
class _FakeReconciler:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.windows: list[tuple[datetime, datetime]] = []

    def run(self, since, until, dry_run=False):
        self.windows.append((since, until))
        if self.fail:
            raise ReconcileError("cel.db is locked")
        from hotline.reconcile import ReconcileReport

        return ReconcileReport(since, until, dry_run)


def test_the_job_is_added_once_with_one_run_at_a_time():
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.start(paused=True)
    try:
        fake = _FakeReconciler()
        job = jobs.add_reconcile_job(scheduler, fake, clock=lambda: NOW)  # type: ignore[arg-type]
        job = jobs.add_reconcile_job(scheduler, fake, clock=lambda: NOW)  # type: ignore[arg-type]
        assert [j.id for j in scheduler.get_jobs()] == [jobs.RECONCILE_JOB_ID]
    finally:
        scheduler.shutdown(wait=False)
    assert job.max_instances == 1 and job.coalesce is True
    assert job.trigger.interval == timedelta(minutes=5)
    assert job.args[1] == timedelta(hours=1)
    job.func(*job.args)
    assert fake.windows == [(NOW - timedelta(hours=1), NOW)]


def test_a_failing_run_is_logged_not_raised(caplog):
    fake = _FakeReconciler(fail=True)
    with caplog.at_level(logging.ERROR, logger="hotline.jobs"):
        assert jobs.reconcile_job(fake, clock=lambda: NOW) is None  # type: ignore[arg-type]
    assert "reconcile job failed" in caplog.text


def test_a_window_shorter_than_the_interval_is_refused():
    with pytest.raises(ValueError):
        jobs.add_reconcile_job(BackgroundScheduler(), _FakeReconciler(),  # type: ignore[arg-type]
                               every=timedelta(hours=2))
