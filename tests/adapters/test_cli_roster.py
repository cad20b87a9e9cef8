"""`hotline roster ...` against a real database (SQLite and PostgreSQL), as a supervisor types it."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from db.models import RosterAuditRow, ShiftRow
from db.repo import write_roster
from hotline.cli import main
from oncall.model import Rank, Surgeon, Team
from tests.support.db_helpers import count

SH = ZoneInfo("Asia/Shanghai")
TEAMS = (Team("facial", "颌面部创伤", "Facial trauma", requires_approval=True, department_head=9),
         Team("replant", "断肢(指)再植", "Replantation"))
SURGEONS = (Surgeon(1, "王建国", "13800000001", Rank.ATTENDING),
            Surgeon(2, "李明", "13800000002", Rank.RESIDENT),
            Surgeon(3, "张伟", "13800000003", Rank.ATTENDING),
            Surgeon(9, "赵主任", "13800000009", Rank.CHIEF))


@pytest.fixture
def hotline(engine, db_url, tmp_path, monkeypatch, capsys):
    """Run `hotline ...` in-process on the test database; returns (exit code, stdout, stderr)."""
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, ())
    monkeypatch.setenv("HOTLINE_DATABASE_URL", db_url)
    monkeypatch.setenv("HOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HOTLINE_CONFIG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def next_month() -> date:
    today = datetime.now(SH).date()
    return date(today.year + today.month // 12, today.month % 12 + 1, 1)


def test_import_reports_every_bad_line_and_writes_nothing_then_a_good_file_lands(hotline, engine, tmp_path):
    month = next_month()
    bad = tmp_path / "bad.csv"
    bad.write_bytes((
        "日期,专业组,一线,二线\n"
        f"{month:%Y-%m}-01,facial,王建国,李明\n"
        f"{month:%Y-%m}-02,facial,无名氏,李明\n"
        f"{month:%Y-%m}-32,facial,王建国,李明\n"
    ).encode("gb18030"))
    code, out, err = hotline("roster", "import", str(bad), "--month", f"{month:%Y-%m}")
    assert code == 1
    assert "line 3" in out and "line 4" in out
    assert "nothing was changed" in err
    assert count(engine, ShiftRow) == 0 and count(engine, RosterAuditRow) == 0

    good = tmp_path / "good.csv"
    good.write_bytes((
        "\ufeff日期,专业组,一线,二线\n"
        f"{month:%Y-%m}-01,facial,王建国,李明\n"
        f"{month:%Y-%m}-02,facial,张伟,李明\n"
    ).encode("utf-8"))
    code, out, _ = hotline("roster", "import", str(good), "--month", f"{month:%Y-%m}", "--dry-run")
    assert code == 0 and "dry run" in out and count(engine, ShiftRow) == 0
    code, out, _ = hotline("roster", "import", str(good), "--month", f"{month:%Y-%m}")
    assert code == 0 and "written: 4 shift(s)" in out
    assert count(engine, ShiftRow) == 4

    code, out, _ = hotline("roster", "day", f"{month:%Y-%m}-02", "--team", "facial")
    assert code == 0 and "张伟" in out and "李明" in out and "一线" in out


def test_export_writes_a_calendar_a_phone_can_subscribe_to(hotline, tmp_path):
    month = next_month()
    sheet = tmp_path / "m.csv"
    sheet.write_text(f"日期,专业组,一线\n{month:%Y-%m}-03,facial,王建国\n", encoding="utf-8")
    assert hotline("roster", "import", str(sheet), "--month", f"{month:%Y-%m}")[0] == 0
    out_file = tmp_path / "facial.ics"
    code, _, _ = hotline("roster", "export", "--team", "facial", "--start", f"{month:%Y-%m}-01",
                         "--days", "10", "-o", str(out_file))
    assert code == 0
    events = [c for c in Calendar.from_ical(out_file.read_bytes()).walk("VEVENT")]
    assert len(events) == 1 and "王建国" in str(events[0]["SUMMARY"])
    code, _, _ = hotline("roster", "export", "--surgeon", "2", "-o", str(tmp_path / "li.ics"))
    assert code == 0 and b"BEGIN:VCALENDAR" in (tmp_path / "li.ics").read_bytes()


def test_a_give_away_needs_the_department_heads_approval(hotline):
    start = (datetime.now(SH) + timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    code, out, _ = hotline("roster", "rotation", "add", "--team", "facial", "--members", "1",
                           "--start-date", (start - timedelta(days=5)).date().isoformat())
    assert code == 0 and "daily" in out
    shift = ["--team", "facial", "--start", start.isoformat(),
             "--end", (start + timedelta(days=1)).isoformat()]
    code, out, _ = hotline("roster", "offer", "--by", "1", *shift, "--note", "出差")
    assert code == 0 and "requested" in out
    trade_id = out.split()[1].rstrip(":")
    code, out, _ = hotline("roster", "take", trade_id, "--by", "3")
    assert code == 0 and "taken" in out
    code, _, err = hotline("roster", "approve", trade_id, "--by", "2")  # not the department head
    assert code == 1 and "refused" in err
    code, out, _ = hotline("roster", "approve", trade_id, "--by", "9")
    assert code == 0 and "approved" in out
    code, out, _ = hotline("roster", "now", "--team", "facial", "--at",
                           (start + timedelta(hours=3)).isoformat())
    assert code == 0 and "张伟" in out and "王建国" not in out
    code, out, _ = hotline("roster", "audit", "--subject", "trade")
    assert [line.split()[3] for line in out.splitlines()] == ["approve", "take", "offer_shift"]


def test_leave_and_rotation_lifecycle_and_checks(hotline):
    today = datetime.now(SH).date()
    assert hotline("roster", "rotation", "add", "--team", "replant", "--members", "2,3",
                   "--start-date", (today - timedelta(days=3)).isoformat(),
                   "--handoff", "08:00,20:00")[0] == 0
    code, out, _ = hotline("roster", "rotation", "list", "--team", "replant")
    assert "custom" in out and "08:00,20:00" in out
    rotation_id = out.split()[0]
    start = datetime.now(SH) + timedelta(days=1)
    code, out, _ = hotline("roster", "leave", "add", "--surgeon", "2", "--start", start.isoformat(),
                           "--end", (start + timedelta(days=1)).isoformat(), "--note", "病假")
    assert code == 0
    leave_id = out.split()[1]
    code, out, _ = hotline("roster", "check", "--days", "3", "--team", "replant")
    assert code == 3 and "on_leave" in out
    assert hotline("roster", "leave", "remove", "--id", leave_id)[0] == 0
    assert hotline("roster", "rotation", "end", "--id", rotation_id, "--until",
                   (today + timedelta(days=2)).isoformat())[0] == 0
    code, out, _ = hotline("roster", "check", "--days", "5", "--team", "replant")
    assert code == 3 and "gap" in out


@pytest.mark.parametrize("argv, says", [
    (("roster", "leave", "add", "--surgeon", "2"), "add needs --start, --end"),
    (("roster", "override", "remove"), "remove needs --id"),
    (("roster", "now", "--at", "yesterday-ish"), "not a time"),
    (("roster", "import", "x.csv", "--month", "2026-13"), "not a month"),
    (("roster", "offer", "--by", "1", "--team", "facial", "--role", "boss",
      "--start", "2026-03-01T08:00", "--end", "2026-03-02T08:00"), "not a role"),
])
def test_usage_errors_say_what_is_wrong(hotline, argv, says):
    code, _, err = hotline(*argv)
    assert code == 2 and says in err


def test_domain_refusals_are_one_line_not_a_traceback(hotline):
    code, _, err = hotline("roster", "override", "add", "--team", "nope", "--surgeon", "1",
                           "--start", "2026-03-01T08:00", "--end", "2026-03-02T08:00")
    assert code == 1 and "no team nope" in err and "Traceback" not in err
    code, _, err = hotline("roster", "override", "add", "--team", "facial", "--surgeon", "1",
                           "--start", "2026-03-02T08:00", "--end", "2026-03-01T08:00")
    assert code == 2 and "must end after it starts" in err


def test_a_teams_policy_is_shown_changed_and_audited(hotline):
    code, out, _ = hotline("roster", "team", "replant")
    assert code == 0 and "swaps need approval: no" in out
    code, out, _ = hotline("roster", "team", "replant", "--requires-approval", "yes", "--head", "9")
    assert code == 0 and "swaps need approval: yes" in out and "department head: 9" in out
    code, _, err = hotline("roster", "team", "replant", "--tz", "Mars/Olympus")
    assert code == 2 and "not a time zone" in err
    code, _, err = hotline("roster", "team", "replant", "--head", "404")
    assert code == 1 and "no surgeon 404" in err
    code, out, _ = hotline("roster", "audit", "--subject", "team")
    assert "set_team" in out
