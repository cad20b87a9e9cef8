"""The partner-hospital directory (合作医院名录) as values, and its CSV import. Pure.

`parse_hospital_csv(data, existing, blocked)` turns a directory file into a
`HospitalPlan`: which hospitals it adds, changes, leaves as they are and --
only with `remove_missing` -- removes, and every problem in the file, each
with its line (the header is line 1), its column and a message in English
and Chinese. Nothing is partial: one error and the plan must not be written.

The file (文件格式), one line per hospital::

    编号,名称,等级,城市,电话,联系医生
    1,长春市中心医院,三级甲等,长春市,043188888888;0431-8888 8801,王立军 主任 13900000001; 刘芳 副主任医师
    ,梅河口市中心医院,三甲,梅河口市,043588888806,

Encodings and separators as for the roster import (`oncall.roster_csv`):
UTF-8 with or without BOM, GB18030 (GBK, GB2312), UTF-16 with BOM; comma,
tab or "，". Header words are Chinese or English (编号/id, 名称/name,
等级/level, 城市/city, 电话/numbers, 联系医生/contacts; 备注 and 序号 are
ignored). Only 名称/name is required.

- 编号/id: the directory's id. Empty: the hospital of that exact name, or a
  new one numbered after the highest id.
- 等级/level: 三级甲等, 三甲, 3A, Grade IIIA ... all become the official
  form (`LEVELS`); empty is 未定级.
- 电话/numbers: the numbers whose calls are recognised as this hospital's,
  several separated by ; 、 , or /; written any way a person does
  (0431-8888 8888, +86 431 88888888) and stored normalised
  (`routing.callers.normalise_number`), the form caller-ID lookup uses.
- 联系医生/contacts: "name title phone", several separated by ; or 、; the
  title and the phone may be left out.

A number listed for two hospitals, one registered to a hospital the file
leaves in place, or one on the active block list is an error: a registered
hospital is never blocked, and a caller is one hospital or none.

Cells are data, never evaluated: a name must look like a name, so
"=cmd|' /C calc'!A0", CR/LF or a kilobyte of text is an error, shown
escaped and cut short. Limits: 2 MB, 5,000 lines, 50 columns, 1,000
characters a cell, 1,000 problems.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from oncall.roster_csv import _decode, _read_rows  # one reader for every CSV import
from oncall.roster_import import Problem, Severity
from routing.callers import normalise_number

__all__ = [
    "Contact", "Hospital", "HospitalError", "HospitalPlan", "LEVELS", "UNRATED",
    "check_city", "check_contact", "check_name", "check_level", "check_number",
    "export_csv", "parse_contact", "parse_hospital_csv",
]

MAX_BYTES = 2 * 1024 * 1024
MAX_LINES = 5_000  # the network has 80+ hospitals; a province has a few hundred
MAX_COLUMNS = 50
MAX_CELL = 1_000
MAX_PROBLEMS = 1_000
MAX_NUMBERS = 20  # registered numbers of one hospital
MAX_CONTACTS = 20
MAX_ID = 999_999
SHOWN = 40

# The official grades (医院等级), best first; what the directory stores.
LEVELS = ("三级特等", "三级甲等", "三级乙等", "三级丙等", "三级", "二级甲等", "二级乙等", "二级丙等",
          "二级", "一级甲等", "一级乙等", "一级丙等", "一级", "未定级", "其他")
UNRATED = "未定级"
_GRADE = {"特": "特等", "甲": "甲等", "乙": "乙等", "丙": "丙等",
          "a": "甲等", "b": "乙等", "c": "丙等", "": ""}
_TIER = {"三": "三级", "3": "三级", "iii": "三级", "二": "二级", "2": "二级", "ii": "二级",
         "一": "一级", "1": "一级", "i": "一级"}
_LEVEL_WORDS = {
    "": UNRATED, "未定级": UNRATED, "未评级": UNRATED, "未评": UNRATED, "无": UNRATED,
    "unrated": UNRATED, "notrated": UNRATED, "其他": "其他", "其它": "其他", "other": "其他",
}
# 三甲, 三级甲等, 3A, 3级甲等, IIIA, grade 3a, tertiary A ... -> tier + grade.
_LEVEL_FORM = re.compile(
    r"(?:grade|class|level)?(三|二|一|3|2|1|iii|ii|i)(?:级|級)?(特|甲|乙|丙|a|b|c)?(?:等)?(?:医院)?",
    re.ASCII | re.IGNORECASE)
_LEVEL_EN = {"tertiary": "三级", "secondary": "二级", "primary": "一级"}

# Names of hospitals and cities: CJK, Latin letters, digits, spaces and the
# few marks real names use. No '=', '+', '@', '|', quotes, control characters.
_NAME = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z0-9()·.\- ]+")
_PERSON = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z·.\- ]+")
_FORMULA_START = ("=", "+", "-", "@")
_LATIN = re.compile(r"[A-Za-z][A-Za-z.\-]*", re.ASCII)
# A number the directory registers: a mobile, a landline with its area code, or abroad.
_REGISTERED = re.compile(r"1[0-9]{10}|0[1-9][0-9]{8,10}|00[1-9][0-9]{6,14}", re.ASCII)
_NUMBER_SPLIT = re.compile(r"[;；、,，/／\n]")
_CONTACT_SPLIT = re.compile(r"[;；、\n]")

ID, NAME, LEVEL, CITY, NUMBERS, CONTACTS, IGNORED = (
    "id", "name", "level", "city", "numbers", "contacts", "ignored")
_COLUMN_WORDS: dict[str, tuple[str, ...]] = {
    ID: ("编号", "医院编号", "id", "hospital id"),
    NAME: ("名称", "医院名称", "医院", "name", "hospital", "hospital name"),
    LEVEL: ("等级", "医院等级", "级别", "level", "grade"),
    CITY: ("城市", "所在城市", "地区", "所在地", "city"),
    NUMBERS: ("电话", "登记电话", "电话号码", "号码", "联系电话", "numbers", "number", "phones", "phone"),
    CONTACTS: ("联系医生", "联系人", "联络医生", "contacts", "contact", "contact doctors"),
    IGNORED: ("备注", "说明", "序号", "note", "notes", "remark", "remarks", "no", "no."),
}
COLUMN_ZH = {ID: "编号", NAME: "名称", LEVEL: "等级", CITY: "城市", NUMBERS: "电话", CONTACTS: "联系医生"}
EXPORT_HEADER = ("编号", "名称", "等级", "城市", "电话", "联系医生")


class HospitalError(ValueError):
    """A value that cannot be a hospital's name, level, city, number or contact."""

    def __init__(self, message: str, message_zh: str):
        super().__init__(message)
        self.message, self.message_zh = message, message_zh

    def __str__(self) -> str:
        return f"{self.message} / {self.message_zh}"


@dataclass(frozen=True)
class Contact:
    """A contact doctor of a partner hospital (联系医生); `phone` normalised or ""."""

    name: str
    title: str = ""
    phone: str = ""

    def text(self) -> str:
        return " ".join(part for part in (self.name, self.title, self.phone) if part)


@dataclass(frozen=True)
class Hospital:
    """A partner hospital as the directory keeps it; `numbers` normalised and sorted."""

    id: int
    name: str
    level: str
    city: str
    numbers: tuple[str, ...] = ()
    contacts: tuple[Contact, ...] = ()


def show(text: str) -> str:
    """A cell quoted for a message: escaped (CR/LF, control characters) and cut short."""
    shown = repr(text[:SHOWN])
    if len(text) > SHOWN or len(shown) > SHOWN + 2:
        shown = shown[:SHOWN + 1] + "…"
    return shown


def _tidy(text: str) -> str:
    # NFKC: full-width letters, digits and brackets (common in Chinese sheets) as ASCII.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _checked(text: str, pattern: re.Pattern, low: int, high: int, what: str, what_zh: str) -> str:
    digits = pattern is _NAME  # a person's name has no digits
    if any(char in text for char in "\r\n\x00"):
        raise HospitalError(f"{what} {show(text)} holds a line break or control character",
                            f"{what_zh} {show(text)} 含有换行或控制字符")
    value = _tidy(text)
    if not low <= len(value) <= high:
        raise HospitalError(f"{what} {show(text)} must be {low} to {high} characters",
                            f"{what_zh} {show(text)} 长度应为 {low} 到 {high} 个字符")
    if value.startswith(_FORMULA_START) or not pattern.fullmatch(value):
        raise HospitalError(
            f"{what} {show(text)} holds characters a {what} does not have (letters, Chinese "
            f"characters, {'digits, ' if digits else ''}spaces, {'( ) ' if digits else ''}· . - only; "
            "not at the start: = + - @)",
            f"{what_zh} {show(text)} 含有不允许的字符（只允许汉字、字母、{'数字、' if digits else ''}空格及 "
            f"{'( ) ' if digits else ''}· . -，且不能以 = + - @ 开头）")
    return value


def check_name(text: str) -> str:
    """A hospital's name, tidied (NFKC, single spaces); raises HospitalError."""
    return _checked(text, _NAME, 2, 64, "hospital name", "医院名称")


def check_city(text: str) -> str:
    """A city, tidied; empty is allowed."""
    return _checked(text, _NAME, 0, 32, "city", "城市") if text.strip() else ""


def check_level(text: str) -> str:
    """The official grade for the ways lists write it (三甲, 3A, Grade IIIA, 二级乙等 ...)."""
    if len(text) > 32:
        raise HospitalError(f"level {show(text)} is not a hospital grade", f"等级 {show(text)} 不是医院等级")
    key = re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text)).casefold()
    if key in _LEVEL_WORDS:
        return _LEVEL_WORDS[key]
    if text.strip() in LEVELS:
        return text.strip()
    for word, tier in _LEVEL_EN.items():  # "tertiary A", "Tertiary grade A"
        if key.startswith(word):
            rest = key[len(word):].removeprefix("grade").removeprefix("class")
            if rest in ("", "a", "b", "c"):
                return tier + _GRADE[rest]
    found = _LEVEL_FORM.fullmatch(key)
    if found:
        return _TIER[found.group(1).lower()] + _GRADE[(found.group(2) or "").lower()]
    raise HospitalError(
        f"level {show(text)} is not a hospital grade: write e.g. 三级甲等, 三甲, 3A, 二级乙等, 一级 or 未定级",
        f"等级 {show(text)} 不是医院等级：请写 三级甲等、三甲、二级乙等、一级 或 未定级 等")


def check_number(text: str) -> str:
    """A registered number, normalised; a mobile, a landline with area code, or one abroad."""
    if len(text) > 40 or any(char in text for char in "\r\n\x00"):
        raise HospitalError(f"{show(text)} is not a phone number", f"{show(text)} 不是电话号码")
    number = normalise_number(unicodedata.normalize("NFKC", text).strip())
    if number is None or not _REGISTERED.fullmatch(number):
        raise HospitalError(
            f"{show(text)} is not a phone number a hospital calls from: write a mobile "
            "(13800000000) or a landline with its area code (0431-88888888)",
            f"{show(text)} 不是有效的医院来电号码：请写手机号（13800000000）或带区号的固定电话（0431-88888888）")
    return number


def check_contact(name: str, title: str = "", phone: str = "") -> Contact:
    return Contact(_checked(name, _PERSON, 2, 32, "contact name", "联系医生姓名"),
                   _checked(title, _NAME, 0, 32, "title", "职称") if title.strip() else "",
                   check_number(phone) if phone.strip() else "")


def parse_contact(text: str) -> Contact:
    """ "王立军 主任 13900000001" -> Contact; the title and the phone may be left out."""
    words = _tidy(text).split(" ")
    phone = ""
    if len(words) > 1 and re.fullmatch(r"[0-9+()\-]{5,}", words[-1]):
        phone = words.pop()
    # A Latin name has spaces ("Anna Schmidt"); titles in the network's lists are Chinese.
    name_len = 1
    while name_len < len(words) and _LATIN.fullmatch(words[name_len - 1]) and _LATIN.fullmatch(words[name_len]):
        name_len += 1
    if len(words) - name_len > 3 or name_len > 4:
        raise HospitalError(f"contact {show(text)}: write it as name title phone",
                            f"联系医生 {show(text)}：请写成“姓名 职称 电话”")
    return check_contact(" ".join(words[:name_len]), " ".join(words[name_len:]), phone)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class HospitalPlan:
    """What an import would do; write it only when `ok`.

    `lines` maps a hospital id to its line in the file.
    """

    added: tuple[Hospital, ...] = ()
    changed: tuple[tuple[Hospital, Hospital], ...] = ()  # (before, after)
    unchanged: tuple[Hospital, ...] = ()
    removed: tuple[Hospital, ...] = ()
    problems: tuple[Problem, ...] = ()
    lines: Mapping[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(p.severity is Severity.ERROR for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def writes(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed),
                "unchanged": len(self.unchanged), "removed": len(self.removed)}

    def report(self) -> list[str]:
        return [str(p) for p in sorted(self.problems, key=lambda p: (p.line, p.column))]


def _error(line: int, column: str, message: str, message_zh: str) -> Problem:
    return Problem(line, message, message_zh, column)


def _refused(line: int, message: str, message_zh: str) -> HospitalPlan:
    return HospitalPlan(problems=(_error(line, "", message, message_zh),))


def _header_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text)).casefold()


_HEADER = {_header_key(w): kind for kind, words in _COLUMN_WORDS.items() for w in words}


def _read_header(line: int, cells: Sequence[str]) -> tuple[dict[str, int], list[Problem]]:
    columns: dict[str, int] = {}
    problems: list[Problem] = []
    for index, cell in enumerate(cells):
        key = _header_key(cell) if len(cell) <= 64 else "\x00"
        kind = _HEADER.get(key)
        if not key or kind == IGNORED:
            continue
        if kind is None:
            problems.append(_error(line, show(cell), (
                f"unknown column {show(cell)}: expected 编号/id, 名称/name, 等级/level, 城市/city, "
                "电话/numbers, 联系医生/contacts or 备注/note"),
                f"无法识别的列 {show(cell)}：应为 编号、名称、等级、城市、电话、联系医生 或 备注"))
        elif kind in columns:
            problems.append(_error(line, kind, (
                f"duplicate column {show(cell)}: the same as column {columns[kind] + 1}"),
                f"重复的列 {show(cell)}：与第 {columns[kind] + 1} 列相同"))
        else:
            columns[kind] = index
    if NAME not in columns:
        problems.append(_error(line, NAME, "missing column 名称/name", "缺少“名称”列"))
    return columns, problems


@dataclass
class _Row:
    line: int
    id: int | None
    hospital: Hospital | None  # with id 0 until numbered
    # The line's numbers, read even when another cell is wrong: a clash or a
    # blocked number is reported in the same pass as the other problems.
    numbers: tuple[str, ...] = ()


def _read_row(line: int, cells: Sequence[str], columns: Mapping[str, int], width: int,
              problems: list[Problem]) -> _Row:
    def cell(kind: str) -> str:
        index = columns.get(kind)
        return cells[index] if index is not None and index < len(cells) else ""

    before = len(problems)
    values: dict[str, object] = {}
    for kind in (ID, NAME, LEVEL, CITY, NUMBERS, CONTACTS):
        text = cell(kind)
        if len(text) > MAX_CELL:
            problems.append(_error(line, kind, (
                f"the cell has {len(text):,} characters, at most {MAX_CELL:,}: {show(text)}"),
                f"单元格过长（{len(text)} 个字符，最多 {MAX_CELL} 个）：{show(text)}"))
            continue
        try:
            values[kind] = _read_cell(kind, text)
        except HospitalError as exc:
            problems.append(_error(line, kind, exc.message, exc.message_zh))
    if any(c.strip() for c in cells[width:]):
        problems.append(_error(line, "", (
            f"the line has more cells than the header's {width} columns (a separator inside a cell?)"),
            f"该行的单元格多于表头的 {width} 列（单元格内是否含有分隔符？）"))
    hospital_id = values.get(ID)
    numbers = values.get(NUMBERS, ())
    assert isinstance(numbers, tuple)
    seen: set[str] = set()
    for number in numbers:
        if number in seen:
            problems.append(_error(line, NUMBERS, f"{number} is listed twice on this line",
                                   f"号码 {number} 在本行重复出现"))
        seen.add(number)
    given_id = hospital_id if isinstance(hospital_id, int) else None
    if len(problems) > before or NAME not in values:
        return _Row(line, given_id, None, tuple(sorted(seen)))
    return _Row(line, given_id, Hospital(
        0, str(values[NAME]), str(values.get(LEVEL, UNRATED)), str(values.get(CITY, "")),
        tuple(sorted(seen)), tuple(values.get(CONTACTS, ()))),  # type: ignore[arg-type]
        tuple(sorted(seen)))


def _read_cell(kind: str, text: str) -> object:
    if kind == ID:
        word = unicodedata.normalize("NFKC", text).strip()
        if not word:
            return None
        if not re.fullmatch(r"[0-9]{1,6}", word, re.ASCII) or not 1 <= int(word) <= MAX_ID:
            raise HospitalError(f"id {show(text)} is not a number from 1 to {MAX_ID}",
                                f"编号 {show(text)} 应为 1 到 {MAX_ID} 的整数")
        return int(word)
    if kind == NAME:
        return check_name(text)
    if kind == LEVEL:
        return check_level(text)
    if kind == CITY:
        return check_city(text)
    if kind == NUMBERS:
        parts = [p for p in _NUMBER_SPLIT.split(text) if p.strip()]
        if len(parts) > MAX_NUMBERS:
            raise HospitalError(f"at most {MAX_NUMBERS} numbers a hospital",
                                f"每家医院最多登记 {MAX_NUMBERS} 个号码")
        return tuple(check_number(p) for p in parts)
    if kind == CONTACTS:
        parts = [p for p in _CONTACT_SPLIT.split(text) if p.strip()]
        if len(parts) > MAX_CONTACTS:
            raise HospitalError(f"at most {MAX_CONTACTS} contacts a hospital",
                                f"每家医院最多 {MAX_CONTACTS} 位联系医生")
        return tuple(parse_contact(p) for p in parts)
    raise AssertionError(kind)


def parse_hospital_csv(data: bytes, existing: Iterable[Hospital], blocked: Iterable[str] = (), *,
                       remove_missing: bool = False) -> HospitalPlan:
    """The plan for a directory file (see the module docstring).

    `existing`: the directory as stored; `blocked`: the active block list
    (normalised numbers). Hospitals the file does not name stay as they are,
    unless `remove_missing`.
    """
    if len(data) > MAX_BYTES:
        return _refused(0, f"the file is {len(data):,} bytes, at most {MAX_BYTES:,}",
                        f"文件过大（{len(data)} 字节，最多 {MAX_BYTES} 字节）")
    text = _decode(data)
    if text is None:
        return _refused(0, (
            "the file's encoding is not recognised: save it as CSV in UTF-8, GB18030 or UTF-16 with BOM"),
            "无法识别文件编码：请另存为 CSV，编码为 UTF-8、GB18030/GBK 或带 BOM 的 UTF-16")
    lines = sum(1 for _ in io.StringIO(text, newline=""))
    if lines > MAX_LINES:
        return _refused(0, f"the file has {lines:,} lines, at most {MAX_LINES:,}",
                        f"文件行数过多（{lines} 行，最多 {MAX_LINES} 行）")
    rows, problems = _read_rows(text)
    if not rows:
        return HospitalPlan(problems=tuple(problems) or (_error(0, "", "the file is empty", "文件为空"),))
    header_line, header_cells = rows[0]
    if len(header_cells) > MAX_COLUMNS:
        return _refused(header_line, f"the header has {len(header_cells)} columns, at most {MAX_COLUMNS}",
                        f"表头列数过多（{len(header_cells)} 列，最多 {MAX_COLUMNS} 列）")
    columns, header_problems = _read_header(header_line, header_cells)
    problems += header_problems
    if NAME not in columns:
        return HospitalPlan(problems=tuple(problems))
    if len(rows) == 1:
        problems.append(_error(0, "", "the file has a header but no hospitals", "文件只有表头，没有医院"))

    read: list[_Row] = []
    for line, cells in rows[1:]:
        if len(problems) >= MAX_PROBLEMS:
            problems.append(_error(line, "", f"reading stopped here after {len(problems):,} problems",
                                   f"问题超过 {MAX_PROBLEMS} 个，从本行起未再读取"))
            break
        read.append(_read_row(line, cells, columns, len(header_cells), problems))
    plan_problems, plan = _plan(read, tuple(existing), frozenset(blocked), remove_missing)
    problems += plan_problems
    return HospitalPlan(**plan, problems=tuple(sorted(problems, key=lambda p: p.line)))


def _plan(rows: list[_Row], existing: tuple[Hospital, ...], blocked: frozenset[str],
          remove_missing: bool) -> tuple[list[Problem], dict]:
    problems: list[Problem] = []
    by_id = {h.id: h for h in existing}
    by_name = {h.name: h for h in existing}
    next_id = max(by_id, default=0) + 1
    ids_seen: dict[int, int] = {}  # id -> line
    names_seen: dict[str, int] = {}
    final: dict[int, Hospital] = {}
    lines: dict[int, int] = {}
    claims: list[tuple[int, int | None, tuple[str, ...]]] = []  # (line, hospital id, numbers)
    for row in rows:
        hospital_id = row.id
        name = row.hospital.name if row.hospital else None
        if name is not None:
            if name in names_seen:
                problems.append(_error(row.line, NAME, (
                    f"{show(name)} is on line {names_seen[name]} too: one line per hospital"),
                    f"{show(name)} 在第 {names_seen[name]} 行也出现了：每家医院只写一行"))
            names_seen.setdefault(name, row.line)
            owner = by_name.get(name)
            if hospital_id is None:
                if owner is not None:
                    hospital_id = owner.id
                else:
                    hospital_id, next_id = next_id, next_id + 1
            elif owner is not None and owner.id != hospital_id:
                problems.append(_error(row.line, NAME, (
                    f"{show(name)} is hospital #{owner.id} in the directory, not #{hospital_id}"),
                    f"{show(name)} 在名录中的编号是 {owner.id}，不是 {hospital_id}"))
        if hospital_id is None:
            claims.append((row.line, None, row.numbers))
            continue
        if hospital_id in ids_seen:
            problems.append(_error(row.line, ID, (
                f"id {hospital_id} is on line {ids_seen[hospital_id]} too"),
                f"编号 {hospital_id} 在第 {ids_seen[hospital_id]} 行也出现了"))
            continue
        ids_seen[hospital_id] = row.line
        claims.append((row.line, hospital_id, row.numbers))
        if row.hospital is not None:
            final[hospital_id] = Hospital(hospital_id, row.hospital.name, row.hospital.level,
                                          row.hospital.city, row.hospital.numbers, row.hospital.contacts)
            lines[hospital_id] = row.line

    removed = tuple(h for h in existing if h.id not in ids_seen) if remove_missing else ()
    # Who keeps which number afterwards: the file's hospitals, and those it leaves in place.
    kept = {h.id: h for h in existing if h.id not in ids_seen and not remove_missing}
    number_owner: dict[str, tuple[int | None, int]] = {}  # number -> (hospital id, line)
    for line, hospital_id, numbers in claims:
        for number in numbers:
            if number in blocked:
                problems.append(_error(line, NUMBERS, (
                    f"{number} is on the block list: remove it from the block list first "
                    "(`hotline block remove`)"),
                    f"号码 {number} 在黑名单中：请先将其移出黑名单"))
            if number in number_owner:
                _, other_line = number_owner[number]
                problems.append(_error(line, NUMBERS, (
                    f"{number} is also listed on line {other_line}: a number belongs to one hospital"),
                    f"号码 {number} 同时登记在第 {other_line} 行的医院：一个号码只能属于一家医院"))
            else:
                number_owner[number] = (hospital_id, line)
    for other in kept.values():
        for number in other.numbers:
            if number in number_owner:
                _, line = number_owner[number]
                problems.append(_error(line, NUMBERS, (
                    f"{number} is registered to {other.name} (#{other.id}), which this file leaves "
                    "as it is: remove it there first, or list that hospital in the file"),
                    f"号码 {number} 已登记在 {other.name}（编号 {other.id}），本文件未修改该医院："
                    "请先从该医院删除此号码，或在文件中一并列出该医院"))
    added, changed, unchanged = [], [], []
    for hospital_id, hospital in sorted(final.items()):
        before = by_id.get(hospital_id)
        if before is None:
            added.append(hospital)
        elif before == hospital:
            unchanged.append(hospital)
        else:
            changed.append((before, hospital))
    return problems, {"added": tuple(added), "changed": tuple(changed), "unchanged": tuple(unchanged),
                      "removed": removed, "lines": lines}


# --------------------------------------------------------------------------- export


def _cell(text: str) -> str:
    # Validated values never start with a formula character; this keeps an
    # export safe to open in a spreadsheet even if the database was edited by hand.
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def export_csv(hospitals: Iterable[Hospital]) -> str:
    """The directory as a CSV text `parse_hospital_csv` reads back unchanged (Chinese header)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_HEADER)
    for h in sorted(hospitals, key=lambda h: h.id):
        writer.writerow([h.id, _cell(h.name), _cell(h.level), _cell(h.city), ";".join(h.numbers),
                         _cell("; ".join(c.text() for c in h.contacts))])
    return out.getvalue()
