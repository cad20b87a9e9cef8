"""Read a month's roster from a CSV file (Excel "Save as CSV"). Pure: bytes in, plan out.

`parse_roster_csv(data, roster, team=..., month=...)` turns the file into an
`oncall.roster_import.ImportPlan`: the shifts it would write, the window of
each team it replaces, and every problem in the file -- each with its line
(the header is line 1), its column and a message in English and Chinese.
Nothing is partial: one error and the plan is refused (`plan.ok` is False);
the shifts that could be read are still listed, for the report.

The file (文件格式)
-------------------
Encoding: UTF-8 with or without BOM, GB18030 (what Chinese Excel writes; GBK
and GB2312 are part of it) or UTF-16 with BOM (Excel "Unicode text").
Separator: comma, tab or the Chinese comma "，" -- whichever the header uses.
Header words are Chinese or English, in any case, full-width or not.

Layout 1 -- one line per shift (每行一个班次)::

    日期,专业组,岗位,医生,开始,结束,备注
    2026-03-01,颌面部创伤,一线,王建国,08:00,20:00,
    2026-03-01,颌面部创伤,一线,李明,20:00,08:00,夜班
    2026-03-01,断肢(指)再植,二线,13800000202,08:00,08:00,全天

An end at or before the start is on the next day: 20:00-08:00 is a night
shift, 08:00-08:00 a whole day; 24:00 is the end of the day. Start and end
may also be written in full, "2026-03-01 20:00", e.g. for a shift longer
than a day (the start must then be on the line's date).

Layout 2 -- one line per day, a column per role (每行一天；月排班表)::

    日期,专业组,一线,二线,主治,科主任
    2026/3/1,颌面部创伤,李明,张伟,刘洋,王建国
    2026/3/2,颌面部创伤,张伟、刘洋,李明,,王建国

Role columns: 一线 (primary), 二线 or 备班 (backup), 主治 (attending),
科主任 or 总值班 (department_head). A cell names one surgeon or several
(separated by 、 / ; or ,); an empty cell: nobody in that role that day.
Each day's shift runs from the handoff time -- 08:00 unless a 交班时间 column
or the `handoff` argument says otherwise -- to the same time the next day.
The 专业组 column may be left out when the team is given to the import.

In both layouts 星期 and 备注 columns are ignored. A surgeon is named by
exact name, phone or #id; a name two surgeons share is an error (write the
phone). A team by its code, Chinese or English name.

Dates: 2026-03-01, 2026/3/1, 2026.3.1, 2026年3月1日; also 3月1日 or 3/1 when
the month or year is given, and 1日 when the month is. Times are wall times
in the team's zone (`Team.tz`), converted like rotation handoffs: a time the
clock skips on the spring-forward night means the moment of the jump, one
it shows twice its first showing (`oncall.rotation.local_instant`). The
plan's shift times are UTC.

With `month`, each team in the file has that month replaced: the shifts
that *start* from local midnight on the 1st to local midnight on the 1st of
the next month (the store replaces by start, so the night of the 31st, which
ends in the next month, belongs to this month and the night of the last day
before belongs to the month before); a line dated outside the month is an
error. Without `month`, each team's window runs from the start of its first
shift in the file to the end of its last.

Limits: 2 MB, 20,000 lines, 100 columns, 200 characters a cell; reading
stops after 1,000 problems. Cells are data, never evaluated; a cell shown in
a message is escaped and cut to 40 characters.
"""
from __future__ import annotations

import codecs
import csv
import heapq
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Sequence

from oncall.model import Role, Roster, Shift, Surgeon, Team
from oncall.roster_import import (
    ROLE_WORDS,
    UTC,
    Directory,
    ImportPlan,
    Problem,
    Severity,
    fold,
    overlap_problems,
)
from oncall.rotation import local_instant, team_zone

__all__ = [
    "ACCEPTED_ENCODINGS", "MAX_BYTES", "MAX_CELL", "MAX_COLUMNS", "MAX_LINES", "MAX_OVERLAPS",
    "MAX_PROBLEMS", "parse_roster_csv",
]

MAX_BYTES = 2 * 1024 * 1024  # a month of every team is well under 100 KB
MAX_LINES = 20_000
MAX_CELL = 200  # characters; no name, phone, date or time is near this
MAX_COLUMNS = 100
MAX_PROBLEMS = 1_000  # then reading stops: the file is refused anyway, and nobody reads more
MAX_OVERLAPS = 2_000  # pairs of overlapping lines listed one by one; see _overlaps
SHOWN = 40  # at most this many characters of a cell in a message
ACCEPTED_ENCODINGS = "UTF-8 (with or without BOM), GB18030 / GBK / GB2312, UTF-16 with BOM"

LONG = "long"  # one line per shift
WIDE = "wide"  # one line per day, a column per role

# Column kinds; also the English column names in problems about a missing column.
DATE, TEAM, ROLE, SURGEON, START, END = "date", "team", "role", "surgeon", "start", "end"
HANDOFF, NOTE, WEEKDAY, ROLE_COLUMN = "handoff", "note", "weekday", "role column"

_COLUMN_WORDS: dict[str, tuple[str, ...]] = {
    DATE: ("日期", "值班日期", "date"),
    TEAM: ("专业组", "组别", "专业", "team"),
    ROLE: ("岗位", "角色", "职责", "role"),
    SURGEON: ("医生", "值班医生", "姓名", "surgeon", "doctor", "name"),
    START: ("开始", "开始时间", "起始时间", "start", "start time", "from"),
    END: ("结束", "结束时间", "end", "end time", "to", "until"),
    HANDOFF: ("交班时间", "交班", "交接班时间", "handoff", "handover", "handoff time"),
    NOTE: ("备注", "说明", "note", "notes", "remark", "remarks", "comment"),
    WEEKDAY: ("星期", "周", "周几", "weekday", "day of week"),
}
_COLUMN_ZH = {DATE: "日期", TEAM: "专业组", ROLE: "岗位", SURGEON: "医生", START: "开始",
              END: "结束", HANDOFF: "交班时间"}
_LAYOUT_COLUMNS = {
    LONG: {DATE, TEAM, ROLE, SURGEON, START, END, NOTE, WEEKDAY},
    WIDE: {DATE, TEAM, HANDOFF, NOTE, WEEKDAY},
}
_REQUIRED = {LONG: (DATE, ROLE, SURGEON, START, END), WIDE: (DATE,)}
_LONG_MARKS = {ROLE, SURGEON, START, END}  # columns that only the long layout has


def _header_key(text: str) -> str:
    # "Start Time", "start_time" and "ＳＴＡＲＴ　ＴＩＭＥ" are one header.
    return re.sub(r"[ \t_\-]+", "", fold(text))


_HEADER_KINDS = {_header_key(w): kind for kind, words in _COLUMN_WORDS.items() for w in words}
_HEADER_ROLES = {_header_key(w): role for w, role in ROLE_WORDS.items()}

_ROLE_HINT = "一线, 二线, 主治, 科主任 or primary, backup, attending, department_head"
_ROLE_HINT_ZH = "一线、二线、主治、科主任"


class _CellError(Exception):
    """A cell that cannot be read; becomes one `Problem` at its line and column."""

    def __init__(self, message: str, message_zh: str):
        super().__init__(message)
        self.message, self.message_zh = message, message_zh


def _show(text: str) -> str:
    """A cell quoted for a message: escaped (control characters, CR/LF) and cut short.

    A cell may be 10 KB of anything, e.g. "=CMD|' /C calc'!A0"; it is shown,
    never evaluated, and never shown whole.
    """
    shown = repr(text[:SHOWN])
    if len(text) > SHOWN or len(shown) > SHOWN + 2:
        shown = shown[:SHOWN + 1] + "…"
    return shown


def _error(line: int, column: str, message: str, message_zh: str) -> Problem:
    return Problem(line, message, message_zh, column)


def _warning(line: int, column: str, message: str, message_zh: str) -> Problem:
    return Problem(line, message, message_zh, column, Severity.WARNING)


# --------------------------------------------------------------------------- bytes -> rows


def _decode(data: bytes) -> str | None:
    """The file's text, or None when no accepted encoding reads it strictly.

    UTF-16 is tried only on its BOM: without one, nearly any bytes read as
    UTF-16. A NUL is never in a CSV but is in UTF-16 without a BOM read as
    UTF-8, so it also means "not recognised". GB18030 reads most byte strings,
    so a Latin-1 file decodes as nonsense and shows up as unknown names.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings: tuple[str, ...] = ("utf-16",)
    else:
        encodings = ("utf-8-sig", "gb18030")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return None if "\x00" in text else text
    return None


def _delimiter(text: str) -> str:
    """Comma, tab or "，" -- the one the first non-blank line uses most."""
    header = next((line for line in io.StringIO(text, newline="") if line.strip()), "")
    counts = {d: header.count(d) for d in ("\t", ",", "，")}
    best = max(counts, key=lambda d: counts[d])  # ties: the first, tab
    return best if counts[best] else ","


def _read_rows(text: str) -> tuple[list[tuple[int, list[str]]], list[Problem]]:
    """Non-blank rows with the line each starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    rows: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for cells in reader:
            line, last = last + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append((line, cells))
    except csv.Error as exc:  # e.g. a cell over csv's field size limit
        return rows, [_error(last + 1, "", f"the line cannot be read as CSV ({_show(str(exc))}); "
                             "nothing after it was read", "该行无法按 CSV 读取，其后的内容均未读取")]
    return rows, []


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class _Column:
    index: int
    kind: str  # a column kind (DATE, TEAM, ...) or ROLE_COLUMN
    name: str  # as the header writes it, for problems
    role: Role | None = None


@dataclass(frozen=True)
class _Header:
    line: int
    layout: str
    width: int
    columns: dict[str, _Column]  # kind -> the first column of that kind
    roles: tuple[_Column, ...] = ()  # wide layout, in header order
    unnamed: tuple[int, ...] = ()  # indexes of columns without a header


def _column_name(cell: str) -> str:
    # A header that matched a known word is short and printable once its
    # spacing is tidied; anything else is shown escaped.
    tidy = " ".join(cell.split())
    return tidy if len(tidy) <= SHOWN and tidy.isprintable() else _show(cell)


def _read_header(line: int, cells: Sequence[str], *,
                 team_given: bool) -> tuple[_Header | None, list[Problem]]:
    """The layout and columns; None when the rows cannot be read at all."""
    problems: list[Problem] = []
    found: list[_Column] = []
    unknown: list[tuple[int, str]] = []
    unnamed: list[int] = []
    for index, cell in enumerate(cells):
        key = _header_key(cell) if len(cell) <= MAX_CELL else "\x00"
        if not key:
            unnamed.append(index)
        elif key in _HEADER_KINDS:
            found.append(_Column(index, _HEADER_KINDS[key], _column_name(cell)))
        elif key in _HEADER_ROLES:
            found.append(_Column(index, ROLE_COLUMN, _column_name(cell), _HEADER_ROLES[key]))
        else:
            unknown.append((index, cell))

    role_columns = [c for c in found if c.kind == ROLE_COLUMN]
    long_columns = [c for c in found if c.kind in _LONG_MARKS]
    if role_columns and long_columns:
        names = ", ".join(c.name for c in role_columns)
        others = ", ".join(c.name for c in long_columns)
        return None, [_error(line, "", (
            f"the header mixes both layouts: role columns ({names}) and per-shift columns "
            f"({others}); use one line per shift or one line per day"), (
            f"表头混用了两种格式：岗位列（{names}）和班次列（{others}）；"
            "请用“每行一个班次”或“每行一天”其中一种"))]
    if not role_columns and not long_columns:
        return None, [_error(line, "", (
            "the header names neither layout: expected 日期/date with 岗位/role, 医生/surgeon, "
            "开始/start, 结束/end (one line per shift), or with role columns "
            f"{_ROLE_HINT} (one line per day)"), (
            "无法识别表头：应有“日期”，并有“岗位、医生、开始、结束”（每行一个班次），"
            f"或有岗位列 {_ROLE_HINT_ZH}（每行一天）"))]
    layout = WIDE if role_columns else LONG

    columns: dict[str, _Column] = {}
    roles: dict[Role, _Column] = {}
    for column in found:
        if column.kind != ROLE_COLUMN and column.kind not in _LAYOUT_COLUMNS[layout]:
            unknown.append((column.index, cells[column.index]))
            continue
        if column.kind == ROLE_COLUMN:
            assert column.role is not None
            first = roles.setdefault(column.role, column)
        else:
            first = columns.setdefault(column.kind, column)
        if first is not column:
            problems.append(_error(line, column.name, (
                f"duplicate column: the same as column {first.index + 1} ({first.name}); "
                "only the first is read"),
                f"重复的列：与第 {first.index + 1} 列（{first.name}）相同，只读取第一列"))
    for index, cell in sorted(unknown):
        if layout == WIDE:
            hint = f"a role ({_ROLE_HINT}), 日期/date, 专业组/team, 交班时间/handoff or 备注/note"
            hint_zh = f"应为岗位（{_ROLE_HINT_ZH}）、日期、专业组、交班时间或备注"
        else:
            hint = "日期/date, 专业组/team, 岗位/role, 医生/surgeon, 开始/start, 结束/end or 备注/note"
            hint_zh = "应为 日期、专业组、岗位、医生、开始、结束 或 备注"
        problems.append(_error(line, _show(cell), f"unknown column {_show(cell)}: expected {hint}",
                               f"无法识别的列 {_show(cell)}：{hint_zh}"))
    missing = [kind for kind in _REQUIRED[layout] if kind not in columns]
    if TEAM not in columns and not team_given:
        missing.append(TEAM)
    for kind in missing:
        also = " (or give the team to the import)" if kind == TEAM else ""
        also_zh = "（或在导入时指定专业组）" if kind == TEAM else ""
        problems.append(_error(line, kind, f"missing column {_COLUMN_ZH[kind]}/{kind}{also}",
                               f"缺少“{_COLUMN_ZH[kind]}”列{also_zh}"))
    if missing:
        return None, problems
    return _Header(line, layout, len(cells), columns, tuple(roles.values()),
                   tuple(unnamed)), problems


# --------------------------------------------------------------------------- cells


_WEEKDAY_SUFFIX = re.compile(r"\s*\(?\s*(?:星期|周|礼拜)[一二三四五六日天]\s*\)?$")
_MIDNIGHT_SUFFIX = re.compile(r"\s+0?0:00(?::00)?$")  # Excel writes a date cell as "2026/3/1 0:00"
_YMD = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})|([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})[日号]?")
_MD = re.compile(r"([0-9]{1,2})([-/.])([0-9]{1,2})|([0-9]{1,2})月([0-9]{1,2})[日号]?")
_D = re.compile(r"([0-9]{1,2})[日号]?")
_DATE_HINT = "write 2026-03-01, 2026/3/1, 2026.3.1 or 2026年3月1日"
_DATE_HINT_ZH = "请写成 2026-03-01、2026/3/1、2026.3.1 或 2026年3月1日"


def _groups(match: re.Match, *positions: int) -> list[int]:
    return [int(match.group(p)) for p in positions]


def _parse_date(text: str, *, month: date | None = None, year: int | None = None) -> date:
    """A roster date; a year-less one takes `month`'s year (else `year`), a bare day `month`.

    Raises `_CellError` (English and Chinese message) for anything else.
    Weekday notes ("3月1日 周日", "2026/3/1(星期日)") and a midnight time
    ("2026/3/1 0:00") are ignored; the weekday is not checked.
    """
    word = _MIDNIGHT_SUFFIX.sub("", _WEEKDAY_SUFFIX.sub("", fold(text)))
    if not word:
        raise _CellError("no date", "缺少日期")
    year = month.year if month is not None else year
    try:
        if m := _YMD.fullmatch(word):
            y, mo, d = _groups(m, 1, 3, 4) if m.group(1) else _groups(m, 5, 6, 7)
            if not 1970 <= y <= 2200:  # also keeps the UTC conversion in range
                raise ValueError("year out of range")
            return date(y, mo, d)
        if m := _MD.fullmatch(word):
            mo, d = _groups(m, 1, 3) if m.group(1) else _groups(m, 4, 5)
            if year is None:
                raise _CellError(
                    f"the date {_show(text)} has no year: write 2026-03-01, or give the month",
                    f"日期 {_show(text)} 没有年份：请写完整日期（如 2026-03-01），或在导入时指定月份")
            return date(year, mo, d)
        if (m := _D.fullmatch(word)) and month is not None:
            return date(month.year, month.month, int(m.group(1)))
    except ValueError:  # 2026-02-30, month 13, ...
        pass
    raise _CellError(f"bad date {_show(text)}: {_DATE_HINT}", f"日期无法识别 {_show(text)}：{_DATE_HINT_ZH}")


@dataclass(frozen=True)
class _Clock:
    """A start or end cell: a wall time, on the line's day unless `day` says otherwise."""

    wall: time
    day: date | None = None
    end_of_day: bool = False  # 24:00: midnight of the next day


_CLOCK = re.compile(r"(?:(?P<day>.+?)(?:\s+|t))?(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?")


def _parse_clock(text: str, what: str, what_zh: str, *, month: date | None, year: int | None,
                 end: bool = False, dated: bool = True) -> _Clock:
    """HH:MM, H:MM or HH:MM:00 (24:00 only as an end), optionally after a date."""
    word = fold(text)
    if not word:
        raise _CellError(f"no {what} time", f"缺少{what_zh}时间")
    hint = "write HH:MM, e.g. 08:00" + (" (24:00 as the end of the day)" if end else "")
    hint_zh = "请写成 HH:MM，如 08:00" + ("（24:00 表示当天结束）" if end else "")
    if dated:
        hint += ", or in full, 2026-03-01 08:00"
        hint_zh += "，或完整写成 2026-03-01 08:00"
    bad = _CellError(f"bad {what} time {_show(text)}: {hint}",
                     f"{what_zh}时间无法识别 {_show(text)}：{hint_zh}")
    m = _CLOCK.fullmatch(word)
    if m is None or (m.group("day") and not dated):
        raise bad
    hour, minute, second = int(m.group("h")), int(m.group("m")), int(m.group("s") or 0)
    if second or minute > 59 or hour > 24 or (hour == 24 and (minute or not end)):
        raise bad
    day = _parse_date(m.group("day"), month=month, year=year) if m.group("day") else None
    if hour == 24:
        return _Clock(time(0, 0), day, end_of_day=True)
    return _Clock(time(hour, minute), day)


_SEPARATORS = re.compile(r"[、/;,／；，]")


def _names(cell: str) -> list[str]:
    """The surgeons a cell names, in order (several: 张伟、刘洋)."""
    return [part.strip() for part in _SEPARATORS.split(cell) if part.strip()]


def _local(at: datetime, team: Team) -> str:
    return at.astimezone(team_zone(team)).strftime("%Y-%m-%d %H:%M")


def _empty_shift(line: int, column: str, team: Team, start: datetime, end: datetime,
                 skipped: bool) -> Problem:
    """A shift that does not end after it starts; `skipped`: only because of a DST jump."""
    where = f"{_local(start, team)} to {_local(end, team)} {team.tz}"
    if start != end:
        return _error(line, column, f"the shift ends before it starts ({where})",
                      f"班次结束时间早于开始时间（{where}）")
    if skipped:  # e.g. 02:00-03:00 on the spring-forward night: both are the jump
        return _error(line, column, (
            f"the shift has zero length ({where}): the clock skips these times on the "
            "daylight-saving night, and a skipped time means the moment of the jump"),
            f"班次时长为零（{where}）：夏令时调整当夜跳过的时刻按跳变时刻计")
    return _error(line, column, f"the shift has zero length ({where})", f"班次时长为零（{where}）")


# --------------------------------------------------------------------------- rows -> shifts


@dataclass(frozen=True)
class _Entry:
    shift: Shift
    line: int
    column: str
    cell: tuple[int, int]  # (line, column index): surgeons of one cell share the role


@dataclass(frozen=True)
class _Row:
    line: int
    cells: list[str]
    usable: list[bool]  # False: too long, already reported


@dataclass
class _Reader:
    """Reads data rows against the header, collecting shifts and problems."""

    header: _Header
    directory: Directory
    given_team: Team | None
    team_given: bool  # given, even if unknown (then reported once, on line 0)
    month: date | None
    year: int | None
    handoff: time
    entries: list[_Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    teams: dict[str, Team] = field(default_factory=dict)  # every team a line names, in file order
    _ambiguous: dict[str, list[int]] = field(default_factory=dict)

    def read(self, line: int, raw: Sequence[str]) -> None:
        width = self.header.width
        if len(raw) < width or any(cell.strip() for cell in raw[width:]):
            # Cells are matched to columns by position: a short or long line
            # would put every value under the wrong header.
            self.problems.append(_error(line, "", (
                f"the line has {len(raw)} cells but the header has {width}; "
                "is a separator missing or extra?"),
                f"本行有 {len(raw)} 个单元格，表头有 {width} 个：是否多了或少了分隔符？"))
            return
        cells = [cell.strip() for cell in raw[:width]]
        usable = [True] * width
        for index, cell in enumerate(cells):
            if len(cell) > MAX_CELL:
                usable[index] = False
                self.problems.append(_error(line, self._name(index), (
                    f"the cell is {len(cell):,} characters long, at most {MAX_CELL} are read: "
                    f"{_show(cell)}"), f"单元格过长（{len(cell)} 个字符，最多 {MAX_CELL} 个）：{_show(cell)}"))
        for index in self.header.unnamed:
            if cells[index] and usable[index]:
                self.problems.append(_error(line, f"#{index + 1}", (
                    f"a value in column {index + 1}, which has no header: {_show(cells[index])}"),
                    f"第 {index + 1} 列没有表头，却有内容：{_show(cells[index])}"))
        row = _Row(line, cells, usable)
        if self.header.layout == LONG:
            self._read_long(row)
        else:
            self._read_wide(row)

    # -- one cell at a time; each returns None after reporting (or when already reported)

    def _name(self, index: int) -> str:
        for column in (*self.header.columns.values(), *self.header.roles):
            if column.index == index:
                return column.name
        return f"#{index + 1}"

    def _cell(self, row: _Row, kind: str) -> tuple[str | None, str]:
        """(text, column name); text None for an unusable cell, "" for an absent column."""
        column = self.header.columns.get(kind)
        if column is None:
            return "", kind
        return (row.cells[column.index] if row.usable[column.index] else None), column.name

    def _problem(self, row: _Row, column: str, exc: _CellError) -> None:
        self.problems.append(_error(row.line, column, exc.message, exc.message_zh))

    def _team(self, row: _Row) -> Team | None:
        text, column = self._cell(row, TEAM)
        if text is None:
            return None
        if not text:
            if self.given_team is None and not self.team_given:
                self.problems.append(_error(row.line, column, "no team", "缺少专业组"))
            return self.given_team
        team = self.directory.team(text)
        if team is None:
            self.problems.append(_error(row.line, column, f"unknown team {_show(text)}",
                                        f"找不到专业组 {_show(text)}"))
            return None
        return team

    def _date(self, row: _Row) -> date | None:
        text, column = self._cell(row, DATE)
        if text is None:
            return None
        try:
            day = _parse_date(text, month=self.month, year=self.year)
        except _CellError as exc:
            self._problem(row, column, exc)
            return None
        return day if self._in_month(row, column, day) else None

    def _in_month(self, row: _Row, column: str, day: date) -> bool:
        if self.month is None or (day.year, day.month) == (self.month.year, self.month.month):
            return True
        self.problems.append(_error(row.line, column, (
            f"{day.isoformat()} is outside the month being imported ({self.month:%Y-%m})"),
            f"日期 {day.isoformat()} 不在导入的月份（{self.month:%Y-%m}）内"))
        return False

    def _role(self, row: _Row) -> Role | None:
        text, column = self._cell(row, ROLE)
        if text is None:
            return None
        role = self.directory.role(text)
        if role is None:
            if text:
                self.problems.append(_error(row.line, column, f"unknown role {_show(text)}: write {_ROLE_HINT}",
                                            f"无法识别的岗位 {_show(text)}：请写 {_ROLE_HINT_ZH}"))
            else:
                self.problems.append(_error(row.line, column, "no role", "缺少岗位"))
        return role

    def _surgeon(self, row: _Row, column: str, word: str) -> Surgeon | None:
        surgeon, why = self.directory.surgeon(word)
        if surgeon is not None:
            return surgeon
        if why == "ambiguous":
            ids = self._ambiguous.get(fold(word))
            if ids is None:
                ids = self._ambiguous[fold(word)] = sorted(
                    s.id for s in self.directory.roster.surgeons.values() if fold(s.name) == fold(word))
            shown = ", ".join(f"#{i}" for i in ids)
            self.problems.append(_error(row.line, column, (
                f"{len(ids)} surgeons are named {_show(word)} ({shown}): write the phone or #id instead"),
                f"有 {len(ids)} 位医生同名 {_show(word)}（{shown}）：请改写手机号或 #编号"))
        else:
            self.problems.append(_error(row.line, column, (
                f"unknown surgeon {_show(word)}: write the name, phone or #id of a surgeon in the roster"),
                f"找不到医生 {_show(word)}：请写排班系统中医生的姓名、手机号或 #编号"))
        return None

    def _clock(self, row: _Row, kind: str, what: str, what_zh: str, **kw) -> _Clock | None:
        text, column = self._cell(row, kind)
        if text is None:
            return None
        try:
            return _parse_clock(text, what, what_zh, month=self.month, year=self.year, **kw)
        except _CellError as exc:
            self._problem(row, column, exc)
            return None

    def _add(self, row: _Row, team: Team, surgeon: Surgeon, role: Role, start: datetime,
             end: datetime, column: str, cell: tuple[int, int]) -> None:
        self.entries.append(_Entry(Shift(team.code, surgeon.id, role, start, end), row.line, column, cell))

    # -- layouts

    def _read_long(self, row: _Row) -> None:
        team = self._team(row)
        day = self._date(row)
        role = self._role(row)
        text, surgeon_column = self._cell(row, SURGEON)
        surgeon = None
        if text is not None:
            names = _names(text)
            if not names:
                self.problems.append(_error(row.line, surgeon_column, "no surgeon", "缺少医生"))
            elif len(names) > 1:
                self.problems.append(_error(row.line, surgeon_column, (
                    f"one surgeon per line in this layout, not {_show(text)}: write a line for each"),
                    f"每行只能写一位医生（{_show(text)}）：请分成多行"))
            else:
                surgeon = self._surgeon(row, surgeon_column, names[0])
        start = self._clock(row, START, "start", "开始")
        end = self._clock(row, END, "end", "结束", end=True)
        if team is not None:
            self.teams.setdefault(team.code, team)
        if team is None or day is None or role is None or surgeon is None or start is None or end is None:
            return
        _, start_column = self._cell(row, START)
        if start.day is not None and start.day != day:
            self.problems.append(_error(row.line, start_column, (
                f"the start is on {start.day.isoformat()}, not on the line's date {day.isoformat()}"),
                f"开始时间的日期 {start.day.isoformat()} 与本行日期 {day.isoformat()} 不一致"))
            return
        tz = team_zone(team)
        start_at = local_instant(day, start.wall, tz)
        if end.day is not None:  # written in full: taken as it is
            end_day = end.day + timedelta(days=1) if end.end_of_day else end.day
        elif end.end_of_day or end.wall <= start.wall:
            end_day = day + timedelta(days=1)  # a night shift, or a whole day
        else:
            end_day = day
        end_at = local_instant(end_day, end.wall, tz)
        if not start_at < end_at:
            _, end_column = self._cell(row, END)
            skipped = (day, start.wall) != (end_day, end.wall)  # two wall times, one instant
            self.problems.append(_empty_shift(row.line, end_column, team, start_at, end_at, skipped))
            return
        self._add(row, team, surgeon, role, start_at, end_at, surgeon_column, (row.line, 0))

    def _read_wide(self, row: _Row) -> None:
        team = self._team(row)
        day = self._date(row)
        wall: time | None = self.handoff
        text, _ = self._cell(row, HANDOFF)
        if text is None:
            wall = None
        elif text:  # an empty 交班时间 cell: the usual handoff
            clock = self._clock(row, HANDOFF, "handoff", "交班", dated=False)
            wall = None if clock is None else clock.wall
        if team is not None:
            self.teams.setdefault(team.code, team)
        window = None
        if team is not None and day is not None and wall is not None:
            tz = team_zone(team)
            window = local_instant(day, wall, tz), local_instant(day + timedelta(days=1), wall, tz)
        for column in self.header.roles:
            assert column.role is not None
            if not row.usable[column.index]:
                continue
            seen: set[int] = set()
            for word in _names(row.cells[column.index]):
                surgeon = self._surgeon(row, column.name, word)
                if surgeon is None:
                    continue
                if surgeon.id in seen:
                    self.problems.append(_warning(row.line, column.name, (
                        f"{_show(word)} is named twice in this cell; counted once"),
                        f"同一单元格中重复写了 {_show(word)}，只计一次"))
                    continue
                seen.add(surgeon.id)
                if window is not None and team is not None:
                    self._add(row, team, surgeon, column.role, *window, column.name,
                              (row.line, column.index))


# --------------------------------------------------------------------------- whole file


def _open_pairs(entries: Sequence[_Entry]) -> int:
    """How many pairs of the shifts overlap: what overlap_problems walks through."""
    count, ends = 0, []  # a heap of the ends of the shifts still open
    for entry in sorted(entries, key=lambda e: e.shift.start):
        while ends and ends[0] <= entry.shift.start:
            heapq.heappop(ends)
        count += len(ends)
        heapq.heappush(ends, entry.shift.end)
    return count


def _overlaps(entries: Sequence[_Entry]) -> list[Problem]:
    """overlap_problems, group by group, except between the surgeons of one cell.

    Several surgeons in one cell hold the role together by design, which
    overlap_problems would call the role "held twice at once" (its column
    "time"): so a role is checked with the first surgeon of each cell, and the
    two-teams rule (its column "surgeon") with every surgeon. Groups keep the
    work near linear; a group with more overlapping pairs than are left of
    MAX_OVERLAPS (a wrong date copied down a whole sheet) is one summary
    problem instead of a quadratic list.
    """
    by_role: dict[tuple[str, Role], dict[tuple[int, int], _Entry]] = {}
    by_surgeon: dict[int, list[_Entry]] = {}
    for entry in entries:
        by_role.setdefault((entry.shift.team, entry.shift.role), {}).setdefault(entry.cell, entry)
        by_surgeon.setdefault(entry.shift.surgeon_id, []).append(entry)
    budget = MAX_OVERLAPS
    problems: list[Problem] = []

    def check(group: Sequence[_Entry], kind: str, pairs: int, work: int, what: str, what_zh: str) -> None:
        # pairs: how many problems there are; work: how many pairs overlap_problems walks.
        nonlocal budget
        if pairs == 0:
            return
        if work > budget:
            problems.append(_error(0, kind, (
                f"{what}: {pairs:,} pairs of lines overlap, too many to list; "
                "are the dates or teams wrong on many lines?"),
                f"{what_zh}：有 {pairs} 对行时间重叠，无法逐一列出；是否很多行的日期或专业组写错了？"))
            return
        budget -= work
        found = overlap_problems([e.shift for e in group], [e.line for e in group])
        problems.extend(p for p in found if p.column == kind)

    for (team, role), cells in by_role.items():
        group = list(cells.values())
        pairs = _open_pairs(group)
        check(group, "time", pairs, pairs, f"{team} {role.value}", f"{team} {role.value}")
    for surgeon_id, group in by_surgeon.items():
        teams = {e.shift.team for e in group}
        if len(teams) < 2:
            continue
        # Only pairs in two teams are problems; one surgeon in two roles of one team is not.
        work = _open_pairs(group)
        pairs = work - sum(_open_pairs([e for e in group if e.shift.team == t]) for t in teams)
        check(group, "surgeon", pairs, work, f"surgeon #{surgeon_id} in two teams at once",
              f"医生 #{surgeon_id} 同时在两个专业组值班")
    return problems


def _leave_warnings(entries: Sequence[_Entry], roster: Roster) -> list[Problem]:
    """A warning per shift that meets its surgeon's leave: written, but nobody rings them then."""
    leave_of: dict[int, list] = {}
    for leave in roster.leave:
        leave_of.setdefault(leave.surgeon_id, []).append(leave)
    problems: list[Problem] = []
    for entry in entries:
        shift = entry.shift
        for leave in leave_of.get(shift.surgeon_id, ()):
            start, end = leave.start.astimezone(UTC), leave.end.astimezone(UTC)
            if start < shift.end and end > shift.start:
                team = roster.teams[shift.team]
                name = roster.surgeons[shift.surgeon_id].name
                where = f"{_local(start, team)} to {_local(end, team)} {team.tz}"
                problems.append(_warning(entry.line, entry.column, (
                    f"{name} is on leave during this shift ({where}); they will not be rung then"),
                    f"该班次期间 {name} 请假（{where}），届时不会呼叫该医生"))
    return problems


def _windows(entries: Sequence[_Entry], teams: dict[str, Team],
             month: date | None) -> dict[str, tuple[datetime, datetime]]:
    """Per team, the window [start, end) (UTC) the plan replaces; see the module docstring.

    A month window holds the starts of the team's shifts, not always their
    ends: `db.roster_store` replaces the shifts that start in the window.
    """
    if month is None:
        spans: dict[str, tuple[datetime, datetime]] = {}
        for entry in entries:
            shift = entry.shift
            lo, hi = spans.get(shift.team, (shift.start, shift.end))
            spans[shift.team] = (min(lo, shift.start), max(hi, shift.end))
        return {code: spans[code] for code in teams if code in spans}
    first = date(month.year, month.month, 1)
    after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    windows = {}
    for code, team in teams.items():
        tz = team_zone(team)
        windows[code] = (local_instant(first, time(0), tz), local_instant(after, time(0), tz))
    return windows


def _refused(problem: Problem) -> ImportPlan:
    return ImportPlan(problems=(problem,))


def parse_roster_csv(data: bytes, roster: Roster, *, team: str | None = None,
                     month: date | None = None, year: int | None = None,
                     handoff: time = time(8, 0)) -> ImportPlan:
    """The plan for a roster CSV file (either layout; see the module docstring).

    `team`: the team (code or name) of lines without a 专业组 cell or column.
    `month`: any day of the month the file is for -- the replace window, and
    lines outside it are errors; it also gives year-less dates their year
    (else `year` does). `handoff`: the wall time a day of the one-line-per-day
    layout starts, unless a 交班时间 cell says otherwise.
    Bad arguments a program passes (a handoff with a zone or seconds, `year`
    contradicting `month`) raise ValueError; everything about the file, and
    an unknown `team`, is a `Problem`.
    """
    if handoff.tzinfo is not None or handoff.second or handoff.microsecond:
        raise ValueError("handoff is a local wall time in whole minutes, without a zone")
    if month is not None and year is not None and year != month.year:
        raise ValueError("year contradicts month")
    if not 1970 <= (month.year if month is not None else year or 2000) <= 2200:
        raise ValueError("month or year out of range (1970-2200)")
    if len(data) > MAX_BYTES:
        return _refused(_error(0, "", (
            f"the file is {len(data):,} bytes, at most {MAX_BYTES:,} are read: split it by month or team"),
            f"文件过大（{len(data)} 字节，最多 {MAX_BYTES} 字节）：请按月份或专业组拆分"))
    text = _decode(data)
    if text is None:
        return _refused(_error(0, "", (
            f"the file's encoding is not recognised: save it as CSV in {ACCEPTED_ENCODINGS}"),
            "无法识别文件编码：请另存为 CSV，编码为 UTF-8（带或不带 BOM）、GB18030/GBK/GB2312，"
            "或带 BOM 的 UTF-16（Excel“Unicode 文本”）"))
    lines = sum(1 for _ in io.StringIO(text, newline=""))
    if lines > MAX_LINES:
        return _refused(_error(0, "", (
            f"the file has {lines:,} lines, at most {MAX_LINES:,} are read: split it by month or team"),
            f"文件行数过多（{lines} 行，最多 {MAX_LINES} 行）：请按月份或专业组拆分"))
    rows, problems = _read_rows(text)
    if not rows:
        return ImportPlan(problems=tuple(problems) or (_error(0, "", "the file is empty", "文件为空"),))

    directory = Directory(roster)
    given_team = None
    if team is not None:
        given_team = directory.team(team)
        if given_team is None:
            problems.append(_error(0, TEAM, f"unknown team {_show(team)} given to the import",
                                   f"导入时指定的专业组 {_show(team)} 不存在"))
    header_line, header_cells = rows[0]
    if len(header_cells) > MAX_COLUMNS:
        return _refused(_error(header_line, "", (
            f"the header has {len(header_cells):,} columns, at most {MAX_COLUMNS} are read"),
            f"表头列数过多（{len(header_cells)} 列，最多 {MAX_COLUMNS} 列）"))
    header, header_problems = _read_header(header_line, header_cells, team_given=team is not None)
    problems += header_problems
    if header is None:
        return ImportPlan(problems=tuple(sorted(problems, key=lambda p: p.line)))
    if len(rows) == 1:
        problems.append(_error(0, "", "the file has a header but no lines", "文件只有表头，没有排班行"))

    reader = _Reader(header, directory, given_team, team is not None, month,
                     year if month is None else month.year, handoff)
    for line, cells in rows[1:]:
        if len(reader.problems) >= MAX_PROBLEMS:
            reader.problems.append(_error(line, "", (
                f"reading stopped here after {len(reader.problems):,} problems"),
                f"问题超过 {MAX_PROBLEMS} 个，从本行起未再读取"))
            break
        reader.read(line, cells)
    problems += reader.problems
    entries = reader.entries
    if len(rows) > 1 and not entries and not any(p.severity is Severity.ERROR for p in problems):
        problems.append(_error(0, "", "the file names no surgeon on any shift", "文件中没有任何班次"))
    problems += _overlaps(entries)
    problems += _leave_warnings(entries, roster)
    return ImportPlan(
        shifts=tuple(e.shift for e in entries),
        replace=_windows(entries, reader.teams, month),
        problems=tuple(sorted(problems, key=lambda p: p.line)),  # stable: file order within a line
        lines=tuple(e.line for e in entries),
    )
