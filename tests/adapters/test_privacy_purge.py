"""The retention purge (db.retention) on SQLite and PostgreSQL, with real files in a tmp dir."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, create_engine, event, insert, select

from db.models import (AuditRow, Base, BlockedNumberRow, CallbackRow, CaseNoteRow, CaseRow,
                       ConsoleSessionRow, DialAttemptRow, MenuEventRow, NoticeRow,
                       ReferralEventRow, ReferralRow, RosterAuditRow, UserRow)
from db.retention import held_back, purge
from hotline import cli_privacy
from hotline.config import HotlineConfig
from privacy.jobs import RETENTION_JOB_ID, add_retention_job, retention_job
from privacy.retention import DataKind, RetentionPolicy
from tests.support.db_helpers import count, write_wav

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
POLICY = RetentionPolicy()  # cases 5475 d, recordings 1095 d, audit 1095 d, notices 90 d ...
PATIENT = "13912345678"


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


# -- seeding (shared with test_privacy_export) -------------------------------------------


def add_user(engine: Engine, username: str = "dr-li") -> int:
    with engine.begin() as conn:
        return conn.execute(insert(UserRow).values(
            username=username, password_hash="x", role="surgeon", created_at=NOW)
            .returning(UserRow.id)).scalar_one()


def add_case(engine: Engine, case_id: str, started_at: datetime, *, number: str | None = PATIENT,
             recording: Path | str | None = None, voicemail: Path | str | None = None,
             linked: str | None = None, user_id: int | None = None, full: bool = True,
             callback_number: str | None = None, note: str = "左手示指离断, 已建议冷藏断指") -> None:
    """A case row and, with `full`, every kind of child: menu events, attempts, a note (if
    `user_id`), a callback task, a referral with two events, and a sent missed-call notice."""
    with engine.begin() as conn:
        conn.execute(insert(CaseRow).values(
            case_id=case_id, linkedid=f"L-{case_id}", revision=1, caller_number=number,
            caller_class="public" if number else "anonymous", caller_raw=number,
            caller_raw_safe=number or "", language="zh", team="replant", started_at=started_at,
            ended_at=started_at + timedelta(minutes=4), outcome="completed",
            recording_path=str(recording) if recording is not None else None,
            recording_s=42 if recording is not None else None,
            voicemail_path=str(voicemail) if voicemail is not None else None,
            voicemail_at=started_at + timedelta(minutes=3) if voicemail is not None else None,
            updated_at=started_at, linked_case_id=linked))
        if not full:
            return
        conn.execute(insert(MenuEventRow), [
            dict(case_id=case_id, seq=1, at=started_at, choice="2", label="replantation"),
            dict(case_id=case_id, seq=2, at=started_at + timedelta(seconds=5), choice="1",
                 label="confirm")])
        conn.execute(insert(DialAttemptRow), [
            dict(case_id=case_id, seq=seq, kind="surgeon", surgeon_id=100 + seq,
                 name=f"Dr {seq}", phone=f"1380013800{seq}", role="primary",
                 started_at=started_at + timedelta(seconds=10 * seq), ring_s=20,
                 answered=seq == 2, outcome="accepted" if seq == 2 else "no-answer")
            for seq in (1, 2)])
        if user_id is not None:
            conn.execute(insert(CaseNoteRow).values(
                case_id=case_id, at=started_at + timedelta(minutes=5), user_id=user_id,
                surgeon_id=102, disposition="consultation", text=note))
        callback_id = conn.execute(insert(CallbackRow).values(
            case_id=case_id, reason="requested", due_at=started_at + timedelta(minutes=30),
            status="done", created_at=started_at, number=callback_number or number, team="replant")
            .returning(CallbackRow.id)).scalar_one()
        referral_id = conn.execute(insert(ReferralRow).values(
            case_id=case_id, hospital_id=None, status="admitted", team="replant",
            patient_age=34, patient_sex="M", injury="digit amputation", created_at=started_at,
            updated_at=started_at + timedelta(hours=3)).returning(ReferralRow.id)).scalar_one()
        conn.execute(insert(ReferralEventRow), [
            dict(referral_id=referral_id, at=started_at + timedelta(hours=h), status=s,
                 actor="user:dr-li", note=f"{s} note") for h, s in ((1, "en_route"), (3, "admitted"))])
        conn.execute(insert(NoticeRow).values(
            key=f"missed:{case_id}:s101", kind="missed_call", team="replant", surgeon_id=101,
            due_at=started_at, text_zh=f"未接来电 {number}", text_en=f"missed call {number}",
            created_at=started_at, sent_at=started_at + timedelta(seconds=30)))
        conn.execute(insert(NoticeRow).values(
            key=f"callback-due:{callback_id}:x:s101", kind="callback_due", team="replant",
            surgeon_id=101, due_at=started_at, text_zh="回拨到期", text_en="callback due",
            created_at=started_at, sent_at=started_at + timedelta(seconds=30)))


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order."""
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def files_in(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def retention_audits(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditRow).where(AuditRow.action == "retention_purge")
                            .order_by(AuditRow.id)).all()
    assert all(r.actor == "retention" and r.subject == "retention" for r in rows)
    return {r.subject_id: json.loads(r.detail) for r in rows}


def case_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(CaseRow.case_id)).scalars())


def case_row(engine: Engine, case_id: str):
    with engine.connect() as conn:
        return conn.execute(select(CaseRow).where(CaseRow.case_id == case_id)).one()


@pytest.fixture
def rec_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


def seed_world(engine: Engine, rec_dir: Path) -> dict[str, Path]:
    """Old and young data of every kind; the files by name."""
    files = {}
    for name in ("a-call", "a-vm", "b-call", "c-call", "d-call"):
        files[name] = rec_dir / f"{name}.wav"
        write_wav(files[name], 0.2)
    user = add_user(engine)
    # A: older than 15 years -> gone with every child and both files.
    add_case(engine, "case-a", ago(5475 + 300), recording=files["a-call"],
             voicemail=files["a-vm"], user_id=user)
    # B: 5 years -> the row stays, its recording file goes.
    add_case(engine, "case-b", ago(5 * 365), recording=files["b-call"], user_id=user)
    # C: 1 year -> untouched.
    add_case(engine, "case-c", ago(365), recording=files["c-call"], user_id=user)
    # D: a day short of 15 years -> the row stays (its recording goes).
    add_case(engine, "case-d", ago(5475 - 1), recording=files["d-call"], user_id=user)
    with engine.begin() as conn:
        conn.execute(insert(NoticeRow), [
            dict(key=k, kind="roster", due_at=at, text_zh="x", text_en="x", created_at=at,
                 sent_at=sent, gave_up_at=gave)
            for k, at, sent, gave in (
                ("n-old-sent", ago(100), ago(100), None), ("n-young-sent", ago(10), ago(10), None),
                ("n-old-unsent", ago(200), None, None), ("n-old-gave-up", ago(100), None, ago(100)))])
        conn.execute(insert(ConsoleSessionRow), [
            dict(sid="s-old", user_id=user, created_at=ago(40), revoked_at=ago(39), ip="10.0.0.1"),
            dict(sid="s-young", user_id=user, created_at=ago(10), revoked_at=None, ip="10.0.0.2")])
        conn.execute(insert(BlockedNumberRow), [
            dict(number="13000000001", added_at=ago(500), added_by="u", removed_at=ago(400),
                 removed_by="u"),
            dict(number="13000000002", added_at=ago(500), added_by="u", removed_at=ago(100),
                 removed_by="u"),
            dict(number="13000000003", added_at=ago(5 * 365), added_by="u", removed_at=None,
                 removed_by=None)])
        conn.execute(insert(AuditRow), [
            dict(at=ago(4 * 365), actor="user:x", action="sign_in"),
            dict(at=ago(2 * 365), actor="user:x", action="sign_in")])
        conn.execute(insert(RosterAuditRow), [
            dict(at=at, actor="cli:x", action="create", subject="shift", subject_id="1")
            for at in (ago(4 * 365), ago(10))])
    return files


def test_purge_removes_exactly_the_old_rows_and_files(engine, rec_dir):
    files = seed_world(engine, rec_dir)
    before = snapshot(engine)
    report = purge(engine, POLICY, NOW, rec_dir)

    assert case_ids(engine) == {"case-b", "case-c", "case-d"}
    for table in (MenuEventRow, DialAttemptRow, CaseNoteRow, CallbackRow, ReferralRow):
        assert count(engine, table, case_id="case-a") == 0
        for kept in ("case-b", "case-c", "case-d"):
            assert count(engine, table, case_id=kept) >= 1
    assert count(engine, ReferralEventRow) == 6  # two per kept case, none orphaned
    assert sorted(p.name for p in rec_dir.iterdir()) == ["c-call.wav"]

    b = case_row(engine, "case-b")
    assert b.recording_path is None and b.recording_s == 42 and b.revision == 2
    assert b.updated_at == NOW
    c = case_row(engine, "case-c")
    assert c.recording_path == str(files["c-call"]) and c.revision == 1
    after = snapshot(engine)
    # The young case and everything of it is exactly as it was.
    for table in ("cases", "case_menu_events", "dial_attempts", "case_notes", "callbacks",
                  "referrals"):
        pick = lambda rows: [r for r in rows if "case-c" in r]  # noqa: E731
        assert pick(after[table]) == pick(before[table]), table

    with engine.connect() as conn:
        assert set(conn.execute(select(NoticeRow.key).where(
            NoticeRow.key.startswith("n-"))).scalars()) == {"n-young-sent", "n-old-unsent"}
        assert set(conn.execute(select(ConsoleSessionRow.sid)).scalars()) == {"s-young"}
        assert set(conn.execute(select(BlockedNumberRow.number)).scalars()) == {
            "13000000002", "13000000003"}
        assert conn.execute(select(RosterAuditRow.at)).scalars().all() == [ago(10)]
        # The old sign-in is gone; the young one and the purge's own rows stay.
        assert [r.at for r in conn.execute(select(AuditRow).where(
            AuditRow.action == "sign_in"))] == [ago(2 * 365)]

    audits = retention_audits(engine)
    assert set(audits) == {k.value for k in DataKind}  # one row per kind
    assert audits["recordings"]["files_deleted"] == 4  # a-call, a-vm, b-call, d-call
    assert audits["recordings"]["cases_touched"] == 3
    assert audits["recordings"]["days"] == 1095
    assert audits["cases"]["cases"] == 1 and audits["cases"]["referral_events"] == 2
    assert audits["cases"]["notes"] == 1 and audits["cases"]["attempts"] == 2
    assert audits["notices"]["notices"] == 2 + 2 * 4  # and the two each case got, sent long ago
    assert audits["sessions"] == {"days": 30, "cutoff": ago(30).isoformat(), "sessions": 1}
    assert audits["blocklist"]["entries"] == 1
    assert audits["audit"]["audit_log"] == 1 and audits["audit"]["roster_audit"] == 1
    assert report.kinds[DataKind.CASES].counts["cases"] == 1
    assert any("cases" in line and "deleted" in line for line in report.lines())


def test_dry_run_changes_nothing_and_counts_what_a_run_deletes(engine, rec_dir):
    seed_world(engine, rec_dir)
    before, files_before = snapshot(engine), files_in(rec_dir)
    dry = purge(engine, POLICY, NOW, rec_dir, dry_run=True)
    assert snapshot(engine) == before
    assert files_in(rec_dir) == files_before
    assert retention_audits(engine) == {}
    real = purge(engine, POLICY, NOW, rec_dir)
    assert {k: r.counts for k, r in dry.kinds.items()} == {k: r.counts for k, r in real.kinds.items()}
    assert any("would delete" in line for line in dry.lines())


def test_a_second_run_deletes_nothing_more_and_is_audited_again(engine, rec_dir):
    seed_world(engine, rec_dir)
    purge(engine, POLICY, NOW, rec_dir)
    before = snapshot(engine)
    again = purge(engine, POLICY, NOW, rec_dir)
    assert all(not r.counts for r in again.kinds.values())
    after = snapshot(engine)
    assert {t: rows for t, rows in after.items() if t != "audit_log"} == \
        {t: rows for t, rows in before.items() if t != "audit_log"}
    assert len(after["audit_log"]) == len(before["audit_log"]) + len(DataKind)


def test_purge_is_batch_safe(engine, rec_dir):
    """More old cases, notices and files than one batch: each batch its own transaction."""
    for i in range(23):
        path = rec_dir / f"old-{i}.wav"
        write_wav(path, 0.05)
        add_case(engine, f"old-{i:02d}", ago(5475 + 1 + i), recording=path if i % 2 else None,
                 full=i % 3 == 0)
    for i in range(4):
        add_case(engine, f"young-{i}", ago(100 + i))
    with engine.begin() as conn:
        conn.execute(insert(NoticeRow), [
            dict(key=f"bulk-{i}", kind="roster", due_at=ago(200), text_zh="x", text_en="x",
                 created_at=ago(200), sent_at=ago(200)) for i in range(30)])
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    report = purge(engine, POLICY, NOW, rec_dir, batch=7)
    assert case_ids(engine) == {f"young-{i}" for i in range(4)}
    assert report.kinds[DataKind.CASES].counts["cases"] == 23
    assert report.kinds[DataKind.RECORDINGS].counts["files_deleted"] == 11
    # The bulk, and two per full case (old and young alike: all sent 100+ days ago).
    assert report.kinds[DataKind.NOTICES].counts["notices"] == 30 + 2 * 8 + 2 * 4
    # The odd cases' files went; the even ones' were never a case's, so they stay.
    assert {p.name for p in rec_dir.iterdir()} == {f"old-{i}.wav" for i in range(0, 23, 2)}
    # 23 cases in batches of 7 = 4 case transactions, 2 for the recordings, 7 for notices,
    # plus one audit row per kind: far more than one transaction.
    assert len(commits) >= 4 + 2 + 7 + len(DataKind)
    assert count(engine, CallbackRow) == 4 and count(engine, MenuEventRow) == 8


def test_a_bigger_purge_over_several_batches(engine, rec_dir):
    """2,500 bare old cases with batch 1000: three transactions, nothing young touched."""
    rows = [dict(case_id=f"bulk-{i:05d}", linkedid=f"L-{i}", revision=1, caller_number=PATIENT,
                 caller_class="public", caller_raw_safe=PATIENT, language="zh",
                 started_at=ago(5475 + 1 + i % 50), outcome="completed", updated_at=NOW)
            for i in range(2500)]
    with engine.begin() as conn:
        conn.execute(insert(CaseRow), rows)
    add_case(engine, "young", ago(1))
    report = purge(engine, POLICY, NOW, rec_dir, batch=1000)
    assert report.kinds[DataKind.CASES].counts == {"cases": 2500}
    assert case_ids(engine) == {"young"}


def test_linked_cases_are_held_back_until_the_whole_chain_is_old(engine, rec_dir):
    old, older = ago(5475 + 10), ago(5475 + 20)
    # X is old, but Y (a callback placed back to it, still young) names it: X stays.
    add_case(engine, "x", older)
    add_case(engine, "y", ago(5475 - 5), linked="x")
    # A chain: P <- Q (old) <- R (young): P and Q stay.
    add_case(engine, "p", older)
    add_case(engine, "q", old, linked="p")
    add_case(engine, "r", ago(10), linked="q")
    # S <- T, both old: both go.
    add_case(engine, "s", older)
    add_case(engine, "t", old, linked="s")
    # X2 is held by young Y2; an old callback call Z of X2 goes, and X2's task forgets it.
    add_case(engine, "x2", older)
    add_case(engine, "y2", ago(100), linked="x2")
    add_case(engine, "z", old, linked="x2")
    with engine.begin() as conn:
        conn.execute(CallbackRow.__table__.update().where(CallbackRow.case_id == "x2")
                     .values(callback_case_id="z"))
        conn.execute(CallbackRow.__table__.update().where(CallbackRow.case_id == "p")
                     .values(callback_case_id="q"))
    assert held_back(engine, ago(5475)) == {"x", "p", "q", "x2"}
    report = purge(engine, POLICY, NOW, rec_dir)
    assert case_ids(engine) == {"x", "y", "p", "q", "r", "x2", "y2"}
    assert report.kinds[DataKind.CASES].counts["held_back"] == 4
    assert report.kinds[DataKind.CASES].counts["cases"] == 3
    with engine.connect() as conn:
        tasks = dict(conn.execute(select(CallbackRow.case_id, CallbackRow.callback_case_id)).all())
        kept = case_ids(engine)
        linked = set(conn.execute(select(CaseRow.linked_case_id)).scalars()) - {None}
    assert tasks["x2"] is None and tasks["p"] == "q"
    assert linked <= kept  # no kept case names a deleted one
    assert {v for v in tasks.values() if v} <= kept
    assert set(tasks) <= kept


def test_recording_paths_outside_the_dir_are_refused(engine, rec_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secrets = {name: outside / f"{name}.wav" for name in ("dotdot", "link", "abs", "old")}
    for path in secrets.values():
        write_wav(path, 0.05)
    inside = rec_dir / "inside.wav"
    write_wav(inside, 0.05)
    (rec_dir / "link.wav").symlink_to(secrets["link"])
    (rec_dir / "inner-link.wav").symlink_to(inside)
    five_years = ago(5 * 365)
    add_case(engine, "e", five_years, recording=f"{rec_dir}/../outside/dotdot.wav", full=False)
    add_case(engine, "f", five_years, recording=rec_dir / "link.wav", full=False)
    add_case(engine, "g", five_years, recording=secrets["abs"], full=False)
    add_case(engine, "h", five_years, recording="https://api.twilio.com/2010-04-01/Recordings/RE1",
             full=False)
    add_case(engine, "i", five_years, voicemail=rec_dir / "inner-link.wav", full=False)
    add_case(engine, "j", five_years, recording="../outside/dotdot.wav", full=False)  # relative
    add_case(engine, "k", five_years, recording=rec_dir, full=False)  # the dir itself
    add_case(engine, "old", ago(5475 + 1), recording=secrets["old"], full=False)
    report = purge(engine, POLICY, NOW, rec_dir)
    for path in secrets.values():
        assert path.is_file(), path  # nothing outside the dir is ever deleted
    assert inside.is_file() and (rec_dir / "link.wav").is_symlink()
    for case_id in "efghijk":
        row = case_row(engine, case_id)
        assert (row.recording_path or row.voicemail_path) is not None, case_id
    counts = report.kinds[DataKind.RECORDINGS].counts
    assert counts["files_refused"] == 7 and counts["files_remote"] == 1
    assert "files_deleted" not in counts
    # The 16-year-old case goes (its row), its file outside stays.
    assert "old" not in case_ids(engine)
    assert report.kinds[DataKind.CASES].counts["files_refused"] == 1


def test_a_missing_file_clears_its_path(engine, rec_dir):
    add_case(engine, "gone", ago(4 * 365), recording=rec_dir / "never-written.wav", full=False)
    report = purge(engine, POLICY, NOW, rec_dir)
    assert report.kinds[DataKind.RECORDINGS].counts == {"files_missing": 1, "cases_touched": 1}
    assert case_row(engine, "gone").recording_path is None


def test_shorter_periods_from_a_policy(engine, rec_dir):
    path = rec_dir / "two-years.wav"
    write_wav(path, 0.05)
    add_case(engine, "two-years", ago(2 * 365), recording=path, full=False)
    purge(engine, RetentionPolicy(recordings_days=365), NOW, rec_dir)
    assert not path.exists() and case_row(engine, "two-years").recording_path is None


def test_a_failing_kind_is_audited_and_raises(engine, rec_dir, monkeypatch):
    import db.retention as retention

    seed_world(engine, rec_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(retention, "held_back", broken)
    with pytest.raises(RuntimeError):
        purge(engine, POLICY, NOW, rec_dir)
    audits = retention_audits(engine)
    assert audits["recordings"]["files_deleted"] == 4
    assert audits["cases"]["error"] == "RuntimeError"
    assert "notices" not in audits


# -- the job and the CLI -----------------------------------------------------------


def test_the_job_runs_daily_at_0330_shanghai(engine, rec_dir):
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)  # replace_existing applies to a started scheduler's store
    try:
        job = add_retention_job(scheduler, engine, POLICY, rec_dir, clock=lambda: NOW)
        again = add_retention_job(scheduler, engine, POLICY, rec_dir, clock=lambda: NOW)
        assert job.id == again.id == RETENTION_JOB_ID and len(scheduler.get_jobs()) == 1
        local = job.next_run_time.astimezone(ZoneInfo("Asia/Shanghai"))
        assert (local.hour, local.minute) == (3, 30)
    finally:
        scheduler.shutdown(wait=False)
    assert job.max_instances == 1 and job.coalesce is True
    fire = job.trigger.get_next_fire_time(None, datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    assert fire.astimezone(UTC) == datetime(2026, 12, 1, 19, 30, tzinfo=UTC)  # 03:30 +08:00
    seed_world(engine, rec_dir)
    report = job.func(*job.args)
    assert report is not None and report.kinds[DataKind.CASES].counts["cases"] == 1


def test_the_job_never_raises(rec_dir, tmp_path):
    dead = create_engine(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")
    assert retention_job(dead, POLICY, rec_dir, clock=lambda: NOW) is None


def _cli(config: HotlineConfig, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hotline")
    cli_privacy.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.func(args, config)


def test_cli_policy_and_purge(engine, db_url, rec_dir, tmp_path, capsys):
    config = HotlineConfig(var_dir=tmp_path / "var", database_url=db_url)
    assert _cli(config, ["privacy", "policy"]) == 0
    out = capsys.readouterr().out
    assert "retention_recordings_days" in out and "1095" in out and "通话录音" in out
    # The CLI's recordings dir is the config's; put a due file there.
    config.recordings_dir.mkdir(parents=True)
    old = config.recordings_dir / "old.wav"
    write_wav(old, 0.05)
    add_case(engine, "cli-old", datetime.now(UTC) - timedelta(days=4 * 365), recording=old)
    assert _cli(config, ["privacy", "purge", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and old.exists() and retention_audits(engine) == {}
    assert _cli(config, ["privacy", "purge", "--batch", "2"]) == 0
    assert "deleted" in capsys.readouterr().out and not old.exists()
    audits = retention_audits(engine)
    assert audits["recordings"]["files_deleted"] == 1 and audits["recordings"]["by"].startswith("cli:")
    assert _cli(config, ["privacy", "purge", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err


def test_cli_refuses_a_bad_retention_setting(tmp_path, capsys):
    class Config:  # a config carrying the keys the lead adds to hotline/config.py
        retention_audit_days = 30
        db_url = f"sqlite:///{tmp_path / 'x.db'}"
        recordings_dir = tmp_path

    assert _cli(Config(), ["privacy", "policy"]) == 2
    assert "6 months" in capsys.readouterr().err
    assert _cli(Config(), ["privacy", "purge"]) == 2
    assert not (tmp_path / "x.db").exists()


def test_help_is_bilingual(capsys):
    with pytest.raises(SystemExit):
        _cli(HotlineConfig(), ["privacy", "--help"])
    out = capsys.readouterr().out
    assert "个人信息" in out and "export" in out and "purge" in out


def test_wound_photos_go_with_the_recordings_period(engine, rec_dir):
    """A photo's files and row are deleted with the recordings of an old case; a young case keeps them."""
    from db.models import CasePhotoRow

    add_case(engine, "old", ago(1200), full=False)  # past the recordings' 1095 days
    add_case(engine, "young", ago(10), full=False)
    for case_id in ("old", "young"):
        folder = rec_dir / "photos" / case_id
        folder.mkdir(parents=True)
        (folder / "1.jpg").write_bytes(b"sealed photo")
        (folder / "1-thumb.jpg").write_bytes(b"sealed thumb")
        with engine.begin() as conn:
            conn.execute(insert(CasePhotoRow).values(
                case_id=case_id, at=NOW, note="", path=f"photos/{case_id}/1.jpg",
                thumb_path=f"photos/{case_id}/1-thumb.jpg", bytes=12, width=1, height=1,
                sha256="0" * 64, sender="caller"))
    dry = purge(engine, POLICY, NOW, rec_dir, dry_run=True)
    assert dry.kinds[DataKind.RECORDINGS].counts["photos"] == 1
    assert (rec_dir / "photos" / "old" / "1.jpg").exists()
    report = purge(engine, POLICY, NOW, rec_dir)
    assert report.kinds[DataKind.RECORDINGS].counts["photos"] == 1
    assert not (rec_dir / "photos" / "old" / "1.jpg").exists()
    assert not (rec_dir / "photos" / "old" / "1-thumb.jpg").exists()
    assert (rec_dir / "photos" / "young" / "1.jpg").read_bytes() == b"sealed photo"
    with engine.connect() as conn:
        assert sorted(conn.execute(select(CasePhotoRow.case_id)).scalars()) == ["young"]
