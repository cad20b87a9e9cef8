"""CSV roster import: encodings, both layouts, night shifts, DST, every problem, by property."""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncall import roster_csv
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from oncall.roster_csv import MAX_BYTES, MAX_LINES, parse_roster_csv
from oncall.roster_import import ImportPlan, Severity
from oncall.rotation import Leave

FIXTURES = Path(__file__).parent / "fixtures" / "roster_csv"
SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
P, B, A, H = Role.PRIMARY, Role.BACKUP, Role.ATTENDING, Role.DEPARTMENT_HEAD
CJK = re.compile(r"[\u4e00-\u9fff]")

TEAMS = (
    Team("facial", "颌面部创伤", "Facial & craniomaxillofacial trauma"),
    Team("replant", "断肢(指)再植", "Limb & digit replantation"),
    Team("burns", "皮肤软组织缺损 / 烧伤", "Skin & soft tissue / burns"),
    Team("berlin", "柏林合作组", "Berlin partner team", tz="Europe/Berlin"),
)
SURGEONS = (
    Surgeon(101, "王建国", "13800000101", Rank.CHIEF),
    Surgeon(102, "李明", "13800000102"),
    Surgeon(103, "张伟", "13800000103"),
    Surgeon(104, "刘洋", "13800000104", Rank.RESIDENT),
    Surgeon(201, "陈志强", "13800000201", Rank.CHIEF),
    Surgeon(202, "杨帆", "13800000202"),
    Surgeon(203, "赵磊", "13800000203"),
    Surgeon(301, "周海涛", "13800000301", Rank.CHIEF),
    Surgeon(302, "张伟", "13800000302"),  # the same name as 103: ambiguous by name
    Surgeon(501, "Anna Schmidt", "4930000501"),
    Surgeon(502, "Jonas Weber", "4930000502"),
)


def make_roster(*, leave=(), surgeons=SURGEONS) -> Roster:
    return Roster(teams={t.code: t for t in TEAMS}, surgeons={s.id: s for s in surgeons},
                  leave=tuple(leave))


ROSTER = make_roster()


def sh(mo: int, d: int, h: int = 0, mi: int = 0, y: int = 2026) -> datetime:
    """Asia/Shanghai wall time as UTC (what the plan holds)."""
    return datetime(y, mo, d, h, mi, tzinfo=SH).astimezone(UTC)


def utc(mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, tzinfo=UTC)


def parse(text: str, encoding: str = "utf-8", roster: Roster = ROSTER, **kw) -> ImportPlan:
    return parse_roster_csv(text.encode(encoding), roster, **kw)


def refused(plan: ImportPlan) -> list[int]:
    """The lines of the plan's errors (sorted); also checks what every problem must have."""
    assert not plan.ok
    for problem in plan.problems:
        assert problem.message and CJK.search(problem.message_zh), problem
        assert all(ch.isprintable() for ch in problem.message + problem.message_zh + problem.column)
    return sorted(p.line for p in plan.errors)


def columns(plan: ImportPlan) -> list[str]:
    return [p.column for p in plan.errors]


LONG_HEADER = "日期,专业组,岗位,医生,开始,结束,备注\n"
WIDE_HEADER = "日期,专业组,一线,二线,主治,科主任\n"


# --------------------------------------------------------------------------- layouts and encodings


def test_long_layout_gb18030_with_night_shift():
    plan = parse(LONG_HEADER
                 + "2026-03-01,颌面部创伤,一线,王建国,08:00,20:00,\n"
                 + "2026-03-01,颌面部创伤,一线,李明,20:00,08:00,夜班\n"
                 + "2026-03-01,断肢(指)再植,二线,13800000202,08:00,08:00,全天\n",
                 "gb18030")
    assert plan.ok and plan.problems == ()
    assert plan.shifts == (
        Shift("facial", 101, P, sh(3, 1, 8), sh(3, 1, 20)),
        Shift("facial", 102, P, sh(3, 1, 20), sh(3, 2, 8)),
        Shift("replant", 202, B, sh(3, 1, 8), sh(3, 2, 8)),
    )
    assert plan.lines == (2, 3, 4)
    assert plan.replace == {"facial": (sh(3, 1, 8), sh(3, 2, 8)), "replant": (sh(3, 1, 8), sh(3, 2, 8))}
    assert all(s.start.tzinfo is UTC and s.end.tzinfo is UTC for s in plan.shifts)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk", "utf-16"])
@pytest.mark.parametrize("sep", [",", "\t", "，"])
def test_encodings_and_separators_read_the_same(encoding, sep):
    rows = [["日期", "专业组", "岗位", "医生", "开始", "结束"],
            ["2026-03-01", "颌面部创伤", "二线", "刘洋", "8:00", "24:00"],
            ["2026年3月2日", "replant", "科主任", "陈志强", "00:00", "00:00"]]
    plan = parse("\r\n".join(sep.join(r) for r in rows) + "\r\n", encoding)
    assert plan.ok, plan.report()
    assert plan.shifts == (Shift("facial", 104, B, sh(3, 1, 8), sh(3, 2)),
                           Shift("replant", 201, H, sh(3, 2), sh(3, 3)))


def test_english_headers_any_case_width_and_spacing():
    plan = parse("ＤＡＴＥ, Team ,ROLE,surgeon,Start_Time,end time,Notes\n"
                 "2026/3/1,Facial & craniomaxillofacial trauma,Primary,#102,08:00:00,20:00,\n"
                 "2026.3.1,FACIAL,department head,王建国,０８：００,２０：００,\n")
    assert plan.ok, plan.report()
    assert plan.shifts == (Shift("facial", 102, P, sh(3, 1, 8), sh(3, 1, 20)),
                           Shift("facial", 101, H, sh(3, 1, 8), sh(3, 1, 20)))


def test_wide_layout_utf16_tabs_several_surgeons_and_empty_cells():
    text = ("日期\t专业组\t一线\t二线\t主治\t科主任\r\n"
            "2026/3/1\t颌面部创伤\t李明\t13800000103\t刘洋\t王建国\r\n"
            "2026/3/2\t颌面部创伤\t13800000103、刘洋\t李明 / #101\t\t王建国\r\n")
    plan = parse(text, "utf-16")
    assert plan.ok, plan.report()
    day1, day2 = (sh(3, 1, 8), sh(3, 2, 8)), (sh(3, 2, 8), sh(3, 3, 8))
    assert plan.shifts == (
        Shift("facial", 102, P, *day1), Shift("facial", 103, B, *day1),
        Shift("facial", 104, A, *day1), Shift("facial", 101, H, *day1),
        Shift("facial", 103, P, *day2), Shift("facial", 104, P, *day2),  # two in one cell: no overlap
        Shift("facial", 102, B, *day2), Shift("facial", 101, B, *day2),
        Shift("facial", 101, H, *day2),  # 101 also backup: a warning-free double role
    )
    assert plan.lines == (2, 2, 2, 2, 3, 3, 3, 3, 3)
    assert plan.replace == {"facial": (sh(3, 1, 8), sh(3, 3, 8))}


def test_wide_layout_team_argument_handoff_argument_and_column():
    plan = parse("日期,一线,交班时间\n3月1日,李明,\n3月2日,刘洋,09:30\n", team="facial",
                 month=date(2026, 3, 1), handoff=time(9, 0))
    assert plan.ok, plan.report()
    assert plan.shifts == (Shift("facial", 102, P, sh(3, 1, 9), sh(3, 2, 9)),
                           Shift("facial", 104, P, sh(3, 2, 9, 30), sh(3, 3, 9, 30)))


def test_wide_layout_overlap_between_days_from_handoff_column_is_an_error():
    plan = parse("日期,一线,交班时间\n2026-03-01,李明,09:00\n2026-03-02,刘洋,08:00\n", team="facial")
    assert refused(plan) == [3]


def test_same_surgeon_twice_in_one_cell_is_a_warning():
    plan = parse("日期,一线\n2026-03-01,李明、#102\n", team="facial")
    assert plan.ok
    assert [(p.line, p.column, p.severity) for p in plan.problems] == [(2, "一线", Severity.WARNING)]
    assert plan.shifts == (Shift("facial", 102, P, sh(3, 1, 8), sh(3, 2, 8)),)


def test_docstring_examples_parse():
    """The module docstring is what supervisors read (`--help`); its examples must be true."""
    blocks = re.findall(r"::\n\n((?:    .*\n)+)", roster_csv.__doc__)
    assert len(blocks) == 2
    demo = make_roster(surgeons=[s for s in SURGEONS if s.id != 302])
    for block in blocks:
        plan = parse_roster_csv("\n".join(l[4:] for l in block.splitlines()).encode("gb18030"), demo)
        assert plan.ok and plan.shifts, plan.report()


# --------------------------------------------------------------------------- real files


def test_fixture_month_sheet_gb18030_crlf_weekday_column():
    data = (FIXTURES / "facial_2026-03_gb18030.csv").read_bytes()
    plan = parse_roster_csv(data, ROSTER, team="facial", month=date(2026, 3, 1))
    assert plan.ok, plan.report()
    march = [s for s in plan.shifts if s.role is H]
    assert len(march) == 31 and {s.surgeon_id for s in march} == {101}
    assert march[0].start == sh(3, 1, 8) and march[-1].end == sh(4, 1, 8)
    # Line 11 (March 10) has two primaries; weekends have no attending.
    assert sorted(s.surgeon_id for s, n in zip(plan.shifts, plan.lines) if n == 11 and s.role is P) == [102, 104]
    assert not [s for s in plan.shifts if s.role is A and s.start == sh(3, 7, 8)]  # Saturday
    # The month: the night of the 31st starts in it (the store replaces by start).
    assert plan.replace == {"facial": (sh(3, 1), sh(4, 1))}
    assert all(sh(3, 1) <= s.start < sh(4, 1) for s in plan.shifts)  # what db.roster_store checks


def test_fixture_berlin_utf16_across_spring_forward():
    plan = parse_roster_csv((FIXTURES / "berlin_2026-03_utf16.txt").read_bytes(), ROSTER)
    assert plan.ok, plan.report()
    assert plan.shifts == (
        Shift("berlin", 501, P, utc(3, 28, 7), utc(3, 28, 19)),  # CET, UTC+1
        Shift("berlin", 502, P, utc(3, 28, 19), utc(3, 29, 6)),  # ends in CEST: 11 hours
        Shift("berlin", 501, P, utc(3, 29, 6), utc(3, 29, 18)),
        Shift("berlin", 501, H, utc(3, 28, 7), utc(3, 29, 6)),  # 08:00 to 08:00 is 23 hours
    )


# --------------------------------------------------------------------------- times


def test_night_shift_over_month_end():
    text = LONG_HEADER + "2026-02-28,facial,一线,李明,20:00,08:00,\n"
    plan = parse(text, month=date(2026, 2, 1))
    assert plan.ok
    assert plan.shifts == (Shift("facial", 102, P, sh(2, 28, 20), sh(3, 1, 8)),)
    # February: its last night starts in it, and the store replaces by start.
    assert plan.replace == {"facial": (sh(2, 1), sh(3, 1))}
    # In March's import the same line is outside the month.
    plan = parse(text, month=date(2026, 3, 15))
    assert refused(plan) == [2] and columns(plan) == ["日期"]


def test_month_window_is_local_midnight_to_midnight_in_each_teams_zone():
    plan = parse(LONG_HEADER + "2026-03-05,facial,一线,李明,08:00,20:00,\n"
                 + "2026-03-31,berlin,一线,#501,20:00,08:00,\n", month=date(2026, 3, 1))
    assert plan.ok
    assert plan.replace == {"facial": (sh(3, 1), sh(4, 1)),
                            "berlin": (utc(2, 28, 23), utc(3, 31, 22))}  # CET -> CEST
    plan = parse(LONG_HEADER + "2026-12-31,berlin,一线,#501,08:00,20:00,\n", month=date(2026, 12, 1))
    assert plan.replace == {"berlin": (datetime(2026, 11, 30, 23, tzinfo=UTC),
                                       datetime(2026, 12, 31, 23, tzinfo=UTC))}


def test_without_month_the_window_is_the_span_of_each_teams_shifts():
    plan = parse(LONG_HEADER + "2026-03-05,facial,一线,李明,08:00,20:00,\n"
                 + "2026-03-02,facial,二线,刘洋,20:00,08:00,\n"
                 + "2026-03-03,replant,一线,杨帆,08:00,09:00,\n")
    assert plan.replace == {"facial": (sh(3, 2, 20), sh(3, 5, 20)), "replant": (sh(3, 3, 8), sh(3, 3, 9))}


@pytest.mark.parametrize("start,end,expected", [
    ("08:00", "20:00", (sh(3, 1, 8), sh(3, 1, 20))),
    ("8:00", "9:30", (sh(3, 1, 8), sh(3, 1, 9, 30))),
    ("08:00:00", "20:00:00", (sh(3, 1, 8), sh(3, 1, 20))),
    ("20:00", "08:00", (sh(3, 1, 20), sh(3, 2, 8))),  # end before start: the next day
    ("08:00", "08:00", (sh(3, 1, 8), sh(3, 2, 8))),  # end at start: a whole day
    ("00:00", "24:00", (sh(3, 1), sh(3, 2))),
    ("18:00", "00:00", (sh(3, 1, 18), sh(3, 2))),
    ("08:00", "2026-03-03 08:00", (sh(3, 1, 8), sh(3, 3, 8))),  # longer than a day
    ("2026-03-01 20:00", "2026/3/2 8:00", (sh(3, 1, 20), sh(3, 2, 8))),
    ("2026-03-01T20:00", "2026-03-01 24:00", (sh(3, 1, 20), sh(3, 2))),
])
def test_start_and_end(start, end, expected):
    plan = parse(LONG_HEADER + f"2026-03-01,facial,一线,李明,{start},{end},\n")
    assert plan.ok, plan.report()
    assert (plan.shifts[0].start, plan.shifts[0].end) == expected


def test_berlin_skipped_and_repeated_wall_times():
    plan = parse(LONG_HEADER
                 + "2026-03-29,berlin,一线,Anna Schmidt,02:30,08:00,\n"  # skipped: the jump, 03:00 CEST
                 + "2026-10-25,berlin,一线,Anna Schmidt,02:30,08:00,\n")  # twice: the first, CEST
    assert plan.ok
    assert plan.shifts == (Shift("berlin", 501, P, utc(3, 29, 1), utc(3, 29, 6)),
                           Shift("berlin", 501, P, utc(10, 25, 0, 30), utc(10, 25, 7)))


def test_berlin_wide_layout_day_of_spring_forward_is_23_hours():
    plan = parse("日期,专业组,一线\n2026-03-28,berlin,Anna Schmidt\n2026-03-29,berlin,Jonas Weber\n")
    assert plan.ok
    first, second = plan.shifts
    assert (first.start, first.end) == (utc(3, 28, 7), utc(3, 29, 6))
    assert first.end - first.start == timedelta(hours=23)
    assert (second.start, second.end) == (utc(3, 29, 6), utc(3, 30, 6))


@pytest.mark.parametrize("cell,kw,expected", [
    ("2026-03-01", {}, date(2026, 3, 1)),
    ("2026/3/1", {}, date(2026, 3, 1)),
    ("2026.3.1", {}, date(2026, 3, 1)),
    ("2026年3月1日", {}, date(2026, 3, 1)),
    ("２０２６年３月１日", {}, date(2026, 3, 1)),
    ("2026/3/1 0:00", {}, date(2026, 3, 1)),  # Excel's date cell with its time
    ("3月1日 星期日", {"month": date(2026, 3, 1)}, date(2026, 3, 1)),
    ("3/1(周日)", {"month": date(2026, 3, 1)}, date(2026, 3, 1)),
    ("3月1日", {"month": date(2026, 3, 1)}, date(2026, 3, 1)),
    ("3/1", {"month": date(2026, 3, 1)}, date(2026, 3, 1)),
    ("1日", {"month": date(2026, 3, 1)}, date(2026, 3, 1)),
    ("12/31", {"year": 2025}, date(2025, 12, 31)),
])
def test_date_forms(cell, kw, expected):
    plan = parse(f"日期,专业组,一线\n{cell},facial,李明\n", **kw)
    assert plan.ok, plan.report()
    assert plan.shifts[0].start == datetime.combine(expected, time(8), SH)


# --------------------------------------------------------------------------- problems


def test_unknown_and_ambiguous_surgeon():
    plan = parse(LONG_HEADER
                 + "2026-03-01,facial,一线,张三,08:00,20:00,\n"
                 + "2026-03-01,facial,二线,张伟,08:00,20:00,\n"
                 + "2026-03-01,facial,主治,13800000302,08:00,20:00,\n")  # the phone decides
    assert refused(plan) == [2, 3]
    unknown, ambiguous = plan.errors
    assert "张三" in unknown.message and "找不到医生" in unknown.message_zh
    assert "#103" in ambiguous.message and "#302" in ambiguous.message and "同名" in ambiguous.message_zh
    assert columns(plan) == ["医生", "医生"]
    assert plan.shifts == (Shift("facial", 302, A, sh(3, 1, 8), sh(3, 1, 20)),)  # listed, not ok


def test_unknown_team_and_role():
    plan = parse(LONG_HEADER
                 + "2026-03-01,眼科,一线,李明,08:00,20:00,\n"
                 + "2026-03-01,facial,三线,李明,08:00,20:00,\n"
                 + "2026-03-01,,一线,李明,08:00,20:00,\n")
    assert refused(plan) == [2, 3, 4]
    assert columns(plan) == ["专业组", "岗位", "专业组"]


def test_unknown_role_column_in_wide_layout():
    plan = parse("日期,专业组,一线,三线\n2026-03-01,facial,李明,刘洋\n")
    assert refused(plan) == [1]
    assert "三线" in plan.errors[0].column and "无法识别的列" in plan.errors[0].message_zh
    assert plan.shifts == (Shift("facial", 102, P, sh(3, 1, 8), sh(3, 2, 8)),)  # the rest is read


@pytest.mark.parametrize("cell", ["2026-02-30", "2026-13-01", "01.03.2026", "明天", "46082", "1900-01-01"])
def test_bad_date(cell):
    plan = parse(LONG_HEADER + "2026-03-01,facial,一线,李明,08:00,20:00,\n"
                 + f"{cell},facial,一线,刘洋,20:00,08:00,\n")
    assert refused(plan) == [3] and columns(plan) == ["日期"]
    assert "日期无法识别" in plan.errors[0].message_zh


def test_date_without_year_or_month():
    plan = parse(LONG_HEADER + "3/1,facial,一线,李明,08:00,20:00,\n1日,facial,二线,李明,08:00,20:00,\n")
    assert refused(plan) == [2, 3]
    assert "没有年份" in plan.errors[0].message_zh


@pytest.mark.parametrize("start,end,column", [
    ("25:00", "08:00", "开始"), ("08:00:30", "20:00", "开始"), ("24:00", "08:00", "开始"),
    ("8点", "20:00", "开始"), ("08:60", "20:00", "开始"), ("", "20:00", "开始"),
    ("08:00", "24:30", "结束"), ("08:00", "2026-02-30 08:00", "结束"),
])
def test_bad_time(start, end, column):
    plan = parse(LONG_HEADER + f"2026-03-01,facial,一线,李明,{start},{end},\n")
    assert refused(plan) == [2] and columns(plan) == [column]


def test_zero_length_and_backwards_shifts():
    plan = parse(LONG_HEADER
                 + "2026-03-01,facial,一线,李明,2026-03-01 08:00,2026-03-01 08:00,\n"
                 + "2026-03-29,berlin,一线,#501,02:00,03:00,\n"  # the hour the clock skips
                 + "2026-03-01,facial,二线,李明,20:00,2026-03-01 08:00,\n"
                 + "2026-03-01,facial,主治,李明,2026-03-02 08:00,20:00,\n")  # start not on its date
    assert refused(plan) == [2, 3, 4, 5]
    assert "班次时长为零" in plan.errors[0].message_zh and "夏令时" in plan.errors[1].message_zh
    assert "早于" in plan.errors[2].message_zh
    assert plan.shifts == ()


def test_overlapping_lines():
    plan = parse(LONG_HEADER
                 + "2026-03-01,facial,一线,李明,08:00,20:00,\n"
                 + "2026-03-01,facial,二线,刘洋,08:00,20:00,\n"  # another role: fine
                 + "2026-03-01,facial,一线,#101,19:00,08:00,\n")
    assert refused(plan) == [4]
    assert "line 2" in plan.errors[0].message and "第 2 行" in plan.errors[0].message_zh


def test_same_day_twice_in_wide_layout():
    plan = parse(WIDE_HEADER + "2026-03-01,facial,李明,,,\n2026-03-01,facial,刘洋,,,\n")
    assert refused(plan) == [3]


def test_surgeon_in_two_teams_at_once():
    plan = parse(WIDE_HEADER
                 + "2026-03-01,facial,李明、刘洋,,,\n"
                 + "2026-03-01,replant,赵磊,#104,,\n")
    assert refused(plan) == [3]
    assert plan.errors[0].column == "surgeon" and "facial" in plan.errors[0].message


@pytest.mark.parametrize("line", ["2026-03-01,facial,一线,李明,08:00,20:00,,extra",
                                  "2026-03-01,facial,一线,李明,08:00"])
def test_too_many_or_too_few_cells(line):
    plan = parse(LONG_HEADER + "2026-03-02,facial,一线,李明,08:00,20:00,\n" + line + "\n")
    assert refused(plan) == [3]
    assert "单元格" in plan.errors[0].message_zh


def test_trailing_empty_cells_are_fine_and_unnamed_columns_must_stay_empty():
    plan = parse("日期,专业组,一线,,\n2026-03-01,facial,李明,,,,\n2026-03-02,facial,李明,,x\n")
    assert refused(plan) == [3] and columns(plan) == ["#5"]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n \r\n,,,\r\n", "".encode("utf-16")])
def test_empty_file(data):
    plan = parse_roster_csv(data, ROSTER)
    assert refused(plan) == [0] and "文件为空" in plan.errors[0].message_zh


def test_header_only():
    plan = parse(LONG_HEADER)
    assert refused(plan) == [0] and "只有表头" in plan.errors[0].message_zh


def test_lines_without_any_shift():
    plan = parse("日期,专业组,一线\n2026-03-01,facial,\n")
    assert refused(plan) == [0]


@pytest.mark.parametrize("header,missing", [
    ("日期,专业组,岗位,医生,开始\n", ["end"]),
    ("日期,岗位,医生,开始,结束\n", ["team"]),
    ("专业组,一线,二线\n", ["date"]),
])
def test_missing_column(header, missing):
    plan = parse(header + "2026-03-01,facial,李明,李明,08:00\n")
    assert refused(plan) == [1] and columns(plan) == missing
    assert plan.shifts == ()


def test_team_column_not_needed_with_team_argument():
    plan = parse("日期,岗位,医生,开始,结束\n2026-03-01,一线,李明,08:00,20:00\n", team="颌面部创伤")
    assert plan.ok and plan.shifts[0].team == "facial"


def test_unknown_team_argument_is_reported_once():
    plan = parse("日期,一线\n2026-03-01,李明\n2026-03-02,李明\n", team="eyes")
    assert refused(plan) == [0] and columns(plan) == ["team"]


def test_duplicate_header_column():
    plan = parse("日期,专业组,一线,primary,日期\n2026-03-01,facial,李明,刘洋,2026-03-01\n")
    assert refused(plan) == [1, 1]
    assert columns(plan) == ["primary", "日期"] and "重复的列" in plan.errors[0].message_zh


@pytest.mark.parametrize("header", ["日期,专业组,岗位,一线\n", "a,b,c\n", "日期\n"])
def test_header_of_no_or_both_layouts(header):
    plan = parse(header + "2026-03-01,facial,一线,李明\n")
    assert refused(plan) == [1]


@pytest.mark.parametrize("data", [
    b"\x80\x81\x82,\xff\xfe\xfd\n",  # neither UTF-8 nor GB18030
    "日期,专业组,一线\n".encode("utf-16-le"),  # UTF-16 without its BOM
    "日期,专业组,一线\n".encode("utf-32"),  # a BOM that starts like UTF-16's
])
def test_encoding_not_recognised(data):
    plan = parse_roster_csv(data, ROSTER)
    assert refused(plan) == [0]
    assert "GB18030" in plan.errors[0].message and "无法识别文件编码" in plan.errors[0].message_zh


def test_line_outside_given_month():
    plan = parse(WIDE_HEADER + "2026-03-31,facial,李明,,,\n2026-04-01,facial,刘洋,,,\n3/30,facial,李明,,,\n",
                 month=date(2026, 3, 1))
    assert refused(plan) == [3] and "不在导入的月份" in plan.errors[0].message_zh
    assert plan.replace == {"facial": (sh(3, 1), sh(4, 1))}
    assert all(sh(3, 1) <= s.start < sh(4, 1) for s in plan.shifts)


def test_all_problems_of_the_file_are_reported():
    plan = parse(LONG_HEADER
                 + "2026-03-01,facial,一线,张三,08:00,20:00,\n"
                 + "2026-03-01,facial,一线,李明,08:00,20:00,\n"
                 + "\n"  # blank lines are skipped; numbers stay physical
                 + "2026-03-32,眼科,三线,张伟,8点,20:00,\n"
                 + "2026-03-01,facial,一线,刘洋,10:00,12:00,\n")
    assert refused(plan) == [2, 5, 5, 5, 5, 5, 6]
    assert [p.column for p in plan.errors if p.line == 5] == ["专业组", "日期", "岗位", "医生", "开始"]
    assert plan.report()[0].startswith("line 2, 医生: unknown surgeon")


def test_leave_is_a_warning_not_a_refusal():
    roster = make_roster(leave=[Leave(102, sh(3, 2, 12), sh(3, 4))])
    plan = parse(WIDE_HEADER + "2026-03-01,facial,刘洋,,,\n2026-03-02,facial,李明,,,\n", roster=roster)
    assert plan.ok and len(plan.shifts) == 2
    (warning,) = plan.problems
    assert (warning.line, warning.column, warning.severity) == (3, "一线", Severity.WARNING)
    assert "请假" in warning.message_zh and "2026-03-02 12:00" in warning.message


def test_blank_lines_are_ignored():
    plan = parse("\n" + LONG_HEADER + "\n\n2026-03-01,facial,一线,李明,08:00,20:00,\n,,,,,,\n")
    assert plan.ok and plan.lines == (5,)


def test_multiline_quoted_cell_keeps_line_numbers():
    plan = parse(LONG_HEADER + '2026-03-01,facial,一线,李明,08:00,20:00,"two\nlines"\n'
                 + "2026-03-01,facial,二线,王五,08:00,20:00,\n")
    assert refused(plan) == [4]


# --------------------------------------------------------------------------- hostile input


def test_hostile_cells_are_shown_escaped_and_short():
    formula = "=CMD|' /C calc'!A0"
    control = "李明\r\n\x1b[31m\u202e"
    huge = "张" * 10_000
    plan = parse(WIDE_HEADER + "\n".join(
        csv_line(["2026-03-01", "facial", cell, "", "", ""]) for cell in (formula, control, huge)) + "\n")
    # The formula splits at "/" into two unknown names; the CR/LF cell spans lines 3-4.
    assert refused(plan) == [2, 2, 3, 5]
    formula_p, _, control_p, huge_p = plan.errors
    assert "=CMD|" in formula_p.message
    assert "\\r\\n\\x1b" in control_p.message and "\u202e" not in control_p.message
    assert "10,000 characters" in huge_p.message
    assert all(len(p.message) < 200 and len(p.message_zh) < 200 for p in plan.problems)


def test_too_large_file_and_too_many_lines():
    plan = parse_roster_csv(b"x" * (MAX_BYTES + 1), ROSTER)
    assert refused(plan) == [0] and "文件过大" in plan.errors[0].message_zh
    plan = parse(LONG_HEADER + "\n" * MAX_LINES)
    assert refused(plan) == [0] and "行数过多" in plan.errors[0].message_zh


def test_too_many_columns():
    plan = parse("日期,专业组,一线" + ",x" * roster_csv.MAX_COLUMNS + "\n2026-03-01,facial,李明\n")
    assert refused(plan) == [1] and "列数过多" in plan.errors[0].message_zh


def test_reading_stops_after_max_problems():
    plan = parse("日期,专业组,一线\n" + "2026-03-01,facial,张三\n" * (roster_csv.MAX_PROBLEMS + 50))
    lines = refused(plan)
    assert len(lines) == roster_csv.MAX_PROBLEMS + 1
    assert lines[-1] == roster_csv.MAX_PROBLEMS + 2 and "未再读取" in plan.errors[-1].message_zh


def test_overlaps_are_listed_pair_by_pair_up_to_a_bound():
    # A date copied down five lines: every pair of them, in both roles, is listed.
    plan = parse("日期,专业组,一线,二线\n" + "2026-03-01,facial,李明,刘洋\n" * 5)
    assert refused(plan) == sorted([3] * 2 + [4] * 4 + [5] * 6 + [6] * 8)
    # Copied down a thousand lines: one summary per role instead of a million problems.
    plan = parse("日期,专业组,一线,二线\n" + "2026-03-01,facial,李明,刘洋\n" * 1000
                 + "2026-03-01,replant,李明,\n")
    assert refused(plan) == [0, 0, 0]
    assert {p.column for p in plan.errors} == {"time", "surgeon"}
    assert "499,500 pairs" in plan.errors[0].message and "1,000 pairs" in plan.errors[2].message


def test_cell_over_csv_field_limit_stops_reading_with_a_problem():
    plan = parse(LONG_HEADER + '2026-03-01,facial,一线,李明,08:00,20:00,\n"' + "x" * 200_000 + '"\n')
    assert refused(plan) == [3] and "CSV" in plan.errors[0].message


def test_arguments_a_program_gets_wrong_raise():
    with pytest.raises(ValueError):
        parse(LONG_HEADER, handoff=time(8, 0, 30))
    with pytest.raises(ValueError):
        parse(LONG_HEADER, month=date(2026, 3, 1), year=2025)
    with pytest.raises(ValueError):
        parse(LONG_HEADER, year=1)


def csv_line(cells: list[str], sep: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\r\n").writerow(cells)  # quotes CR and LF
    return out.getvalue().removesuffix("\r\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_cell_text_gives_a_plan_with_short_printable_messages(cell):
    plan = parse(WIDE_HEADER + csv_line(["2026-03-01", "facial", cell, "", "", cell]) + "\n")
    for problem in plan.problems:
        assert len(problem.message) < 300 and len(problem.message_zh) < 300
        assert all(ch.isprintable() for ch in problem.message + problem.message_zh + problem.column)


# --------------------------------------------------------------------------- round trip


# Surgeons the generator may use, each written by name, phone or #id: never the
# ambiguous 张伟 by name, and each in one team only, so no two-teams clash.
TEAM_SURGEONS = {"facial": (101, 102, 104), "replant": (201, 202, 203)}
ROLE_WORDS_OF = {P: ("一线", "primary", "Primary"), B: ("二线", "备班", "backup"),
                 A: ("主治", "attending"), H: ("科主任", "总值班", "department_head", "Department Head")}
HEADERS = (("日期", "专业组", "岗位", "医生", "开始", "结束", "备注"),
           ("Date", "Team", "Role", "Surgeon", "Start", "End", "Note"))
DATE_FORMS = ("{d:%Y-%m-%d}", "{d.year}/{d.month}/{d.day}", "{d.year}.{d.month}.{d.day}",
              "{d.year}年{d.month}月{d.day}日")
WHEN = datetime(2026, 2, 20, tzinfo=SH)


@st.composite
def written_rosters(draw):
    """(shifts as UTC, their CSV lines as cells): per team and role, a run of shifts with gaps."""
    shifts: list[Shift] = []
    for team in TEAM_SURGEONS:
        for role in draw(st.sets(st.sampled_from([P, B, A, H]), max_size=4)):
            at = WHEN + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
            for _ in range(draw(st.integers(0, 4))):
                length = timedelta(minutes=draw(st.integers(1, 60 * 60)))
                sid = draw(st.sampled_from(TEAM_SURGEONS[team]))
                shifts.append(Shift(team, sid, role, at.astimezone(UTC), (at + length).astimezone(UTC)))
                at += length + timedelta(minutes=draw(st.integers(0, 36 * 60)))
    rows = []
    for shift in shifts:
        start, end = shift.start.astimezone(SH), shift.end.astimezone(SH)
        surgeon = ROSTER.surgeons[shift.surgeon_id]
        who = draw(st.sampled_from([surgeon.name, surgeon.phone, f"#{surgeon.id}"]))
        team = draw(st.sampled_from([shift.team, ROSTER.teams[shift.team].name_zh]))
        day = draw(st.sampled_from(DATE_FORMS)).format(d=start.date())
        start_cell = draw(st.sampled_from([f"{start:%H:%M}", f"{start:%Y-%m-%d %H:%M}"]))
        if end - start <= timedelta(days=1) and draw(st.booleans()):
            end_cell = f"{end:%H:%M}"  # the next-day rule makes it right
        else:
            end_cell = f"{end:%Y-%m-%d %H:%M}"
        rows.append([day, team, draw(st.sampled_from(ROLE_WORDS_OF[shift.role])), who,
                     start_cell, end_cell, ""])
    order = draw(st.permutations(range(len(rows))))
    return [shifts[i] for i in order], [rows[i] for i in order]


@settings(max_examples=150, deadline=None)
@given(written_rosters(), st.sampled_from(HEADERS),
       st.sampled_from([("utf-8", ","), ("utf-8-sig", ","), ("gb18030", "，"), ("utf-16", "\t")]))
def test_written_long_roster_reads_back(written, header, encoding_sep):
    shifts, rows = written
    encoding, sep = encoding_sep
    text = "\r\n".join(csv_line(list(r), sep) for r in [header, *rows]) + "\r\n"
    plan = parse_roster_csv(text.encode(encoding), ROSTER)
    if not shifts:
        assert refused(plan) == [0]  # header only
        return
    assert plan.ok, plan.report()
    assert plan.problems == ()
    assert list(plan.shifts) == shifts
    assert plan.lines == tuple(range(2, len(rows) + 2))
    for team in {s.team for s in shifts}:
        mine = [s for s in shifts if s.team == team]
        assert plan.replace[team] == (min(s.start for s in mine), max(s.end for s in mine))
    assert set(plan.replace) == {s.team for s in shifts}
