"""The Calls page (来电记录): the filtered, sorted, paged call list and its CSV / Excel exports.

The list itself is `db.calls_query` (one query for the page, the exports and
the JSON API). This module turns a query string into `CallFilters` and back:
`parse_query` checks every value; one it cannot use is dropped with a
`Problem` that the page shows (the API answers 400 instead, and so do the
exports: an export must never contain more than the user asked for).

A surgeon sees only the cases they took part in: `viewer_surgeon()` goes into
the query as `only_surgeon`, for the page and the exports alike.

Exports are audited (`export_calls`, with the filters and the row count)
before the first byte goes out; CSV is streamed in batches (UTF-8 with a BOM,
so Excel reads Chinese), Excel is built with openpyxl; both stop at
EXPORT_CAP rows, and a cell that a spreadsheet would run as a formula
(= + - @, tab, CR) gets a leading apostrophe.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, Response, abort, render_template, request, url_for
from limits import parse as parse_limit

from console.auth import audit, current_user, limiter, signed_in
from console.i18n import add_words, current_lang, t
from db.calls_query import (
    COUNT_CAP,
    DIGITS_RE,
    EXPORT_CAP,
    MAX_ID,
    OUTCOMES,
    PAGE_SIZE,
    SORTS,
    TEAM_RE,
    BadCursor,
    CallFilters,
    CallRow,
    Count,
    Order,
    count_calls,
    decode_cursor,
    filter_choices,
    iter_calls,
    list_calls,
)
from db.users import User
from oncall.model import HOTLINE_TZ
from routing.callers import mask_number

bp = Blueprint("calls", __name__, url_prefix="/calls")
NAV = [("calls.index", "calls", ())]

UTC = timezone.utc
LOCAL = ZoneInfo(HOTLINE_TZ)
DEFAULT_DAYS = 7
MAX_ARG_CHARS = 64
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?", re.ASCII)
_INT_RE = re.compile(r"[0-9]{1,10}", re.ASCII)
_YES, _NO = ("1", "yes", "true"), ("0", "no", "false")
# A cell beginning with one of these is a formula to Excel / LibreOffice (OWASP: CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CLASSES = ("partner", "public", "anonymous", "invalid")
MATCHES = ("prefix", "exact", "last4")
# A masked role's searches by number, per account: plenty for a desk looking up
# callers, while guessing the 10,000 hidden middles of one mobile takes two weeks.
NUMBER_SEARCH_LIMIT = "30 per hour"

add_words({
    "calls.from": {"zh": "开始日期", "en": "From"},
    "calls.to": {"zh": "结束日期", "en": "To"},
    "calls.team": {"zh": "专业组", "en": "Team"},
    "calls.outcome": {"zh": "结果", "en": "Outcome"},
    "calls.hospital": {"zh": "合作医院", "en": "Partner hospital"},
    "calls.caller": {"zh": "来电号码", "en": "Caller number"},
    "calls.caller_match": {"zh": "号码匹配", "en": "Number match"},
    "calls.match.prefix": {"zh": "前缀", "en": "Begins with"},
    "calls.match.exact": {"zh": "完全一致", "en": "Exact"},
    "calls.match.last4": {"zh": "后四位", "en": "Last four digits"},
    "calls.surgeon": {"zh": "医生（呼叫或接听）", "en": "Surgeon (rung or connected)"},
    "calls.recording": {"zh": "通话录音", "en": "Recording"},
    "calls.any": {"zh": "全部", "en": "Any"},
    "calls.yes": {"zh": "有", "en": "Yes"},
    "calls.no": {"zh": "无", "en": "No"},
    "calls.filter": {"zh": "筛选", "en": "Filter"},
    "calls.reset": {"zh": "重置", "en": "Reset"},
    "calls.start": {"zh": "来电时间", "en": "Started"},
    "calls.class": {"zh": "来电类别", "en": "Caller class"},
    "calls.connected_surgeon": {"zh": "接听医生", "en": "Connected surgeon"},
    "calls.time_to_connect": {"zh": "接通用时", "en": "Time to surgeon"},
    "calls.seconds": {"zh": "秒", "en": "s"},
    "calls.case": {"zh": "病例", "en": "Case"},
    "calls.case_id": {"zh": "病例编号", "en": "Case id"},
    "calls.open": {"zh": "查看", "en": "Open"},
    "calls.export_csv": {"zh": "导出 CSV", "en": "Export CSV"},
    "calls.export_xlsx": {"zh": "导出 Excel", "en": "Export Excel"},
    "calls.previous": {"zh": "上一页", "en": "Previous"},
    "calls.next": {"zh": "下一页", "en": "Next"},
    "calls.first": {"zh": "第一页", "en": "First page"},
    "calls.total": {"zh": "符合条件的来电", "en": "Matching calls"},
    "calls.more_than": {"zh": "超过", "en": "more than"},
    "calls.none": {"zh": "没有符合条件的来电", "en": "No calls match"},
    "calls.ignored": {"zh": "以下筛选条件无效，已忽略", "en": "These filters were not valid and were ignored"},
    "calls.sorted_by": {"zh": "排序", "en": "Sort"},
    "calls.has_recording": {"zh": "有录音", "en": "Has a recording"},
    "calls.only_yours": {"zh": "仅显示您参与的来电", "en": "Only the calls you took part in"},
    "calls.export_capped": {"zh": "导出最多", "en": "Exports stop at"},
    "calls.rows": {"zh": "行", "en": "rows"},
    "calls.outcome.connected": {"zh": "已接通医生", "en": "Connected"},
    "calls.outcome.nurse": {"zh": "值班护士接听", "en": "Duty nurse"},
    "calls.outcome.voicemail": {"zh": "留言", "en": "Voicemail"},
    "calls.outcome.abandoned": {"zh": "未接通", "en": "Abandoned"},
    "calls.outcome.fallback": {"zh": "应急转接", "en": "Fallback"},
    "calls.outcome.in-progress": {"zh": "通话中", "en": "In progress"},
    "calls.class.partner": {"zh": "合作医院", "en": "Partner hospital"},
    "calls.class.public": {"zh": "公众", "en": "Public"},
    "calls.class.anonymous": {"zh": "未显示号码", "en": "Anonymous"},
    "calls.class.invalid": {"zh": "无效号码", "en": "Invalid"},
})


# --------------------------------------------------------------------------- reading the query string


@dataclass(frozen=True)
class Problem:
    """A query value that was not used, and why (English and Chinese)."""

    field: str
    message: str
    message_zh: str


@dataclass
class CallQuery:
    """A query string, checked: what to list, in which order, which page."""

    filters: CallFilters
    order: Order
    after: str | None = None
    before: str | None = None
    limit: int = PAGE_SIZE
    form: dict[str, str] = field(default_factory=dict)  # accepted values, as the form shows them
    problems: list[Problem] = field(default_factory=list)

    def link_args(self, **changes: str | None) -> dict[str, str]:
        """Query arguments for a link to this list with `changes` (None removes one)."""
        args = dict(self.form)
        if self.order.key != "started" or not self.order.descending:
            args["sort"] = self.order.key
            args["dir"] = "desc" if self.order.descending else "asc"
        for key, value in changes.items():
            if value is None:
                args.pop(key, None)
            else:
                args[key] = value
        return args


def _local_day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), LOCAL).astimezone(UTC)


def parse_when(value: str, *, end: bool) -> datetime:
    """A local date (Asia/Shanghai; as an end, the whole day counts) or an ISO datetime, as UTC."""
    if not (_DATE_RE.fullmatch(value) or _DATETIME_RE.fullmatch(value)):
        raise ValueError("not a date")
    if not 2000 <= int(value[:4]) < 2100:  # before any arithmetic: year 1 or 9999 overflows
        raise ValueError("out of range")
    if len(value) == 10:
        day = date.fromisoformat(value)
        when = _local_day_start(day + timedelta(days=1) if end else day)
    else:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=LOCAL)
        when = parsed.astimezone(UTC)
    if not EARLIEST <= when <= LATEST:
        raise ValueError("out of range")
    return when


def _shown(when: datetime, *, end: bool) -> str:
    """A bound as the form shows it: a local date when it falls on midnight, else date and time."""
    at = when.astimezone(LOCAL)
    if at.time() == time(0):
        return (at.date() - timedelta(days=1) if end else at.date()).isoformat()
    return at.strftime("%Y-%m-%dT%H:%M:%S" if at.second or at.microsecond else "%Y-%m-%dT%H:%M")


def parse_query(args: Mapping[str, str], now: datetime, *, limit: bool = False,
                full_numbers: bool = True) -> CallQuery:
    """Check a query string's filters, sort and cursor; what cannot be used becomes a Problem.

    `limit`: read a page size from `limit` (the API); the page always shows PAGE_SIZE.
    `full_numbers`: whether the asker sees whole numbers (else see `_caller_filter`).
    """
    problems: list[Problem] = []
    form: dict[str, str] = {}

    def value(name: str) -> str | None:
        raw = args.get(name)
        if raw is None or not raw.strip():
            return None
        raw = raw.strip()
        if len(raw) > MAX_ARG_CHARS and name not in ("after", "before"):
            problems.append(Problem(name, f"{name}: too long", f"{name}：内容过长"))
            return None
        return raw

    def refuse(name: str, en: str, zh: str) -> None:
        problems.append(Problem(name, f"{name}: {en}", f"{name}：{zh}"))

    def whole(name: str) -> int | None:
        raw = value(name)
        if raw is None:
            return None
        if _INT_RE.fullmatch(raw) and 1 <= int(raw) <= MAX_ID:
            form[name] = raw
            return int(raw)
        refuse(name, f"a whole number from 1 to {MAX_ID}", f"须为 1 到 {MAX_ID} 的整数")
        return None

    # Time range: local dates (the end date counts whole) or datetimes; default the last 7 days.
    today = now.astimezone(LOCAL).date()
    bounds: dict[str, datetime] = {}
    for name in ("from", "to"):
        raw = value(name)
        if raw is None:
            continue
        try:
            bounds[name] = parse_when(raw, end=name == "to")
            form[name] = raw
        except ValueError:
            refuse(name, "a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM (2000-2099)",
                   "须为日期 YYYY-MM-DD 或时间 YYYY-MM-DDTHH:MM（2000–2099 年）")
    end = bounds.get("to", _local_day_start(today + timedelta(days=1)))
    start = bounds.get("from", end - timedelta(days=DEFAULT_DAYS))
    if not start < end:
        refuse("from", "the range ends before it starts; the last 7 days are shown",
               "结束早于开始，已显示最近 7 天")
        form.pop("from", None)
        form.pop("to", None)
        end = _local_day_start(today + timedelta(days=1))
        start = end - timedelta(days=DEFAULT_DAYS)
    form.setdefault("from", _shown(start, end=False))
    form.setdefault("to", _shown(end, end=True))

    team = value("team")
    if team is not None:
        if TEAM_RE.fullmatch(team):
            form["team"] = team
        else:
            refuse("team", "not a team code", "不是专业组代码")
            team = None
    outcome = value("outcome")
    if outcome is not None:
        if outcome in OUTCOMES:
            form["outcome"] = outcome
        else:
            refuse("outcome", f"one of {', '.join(OUTCOMES)}", "结果类别无效")
            outcome = None
    hospital = whole("hospital")
    surgeon = whole("surgeon")
    caller, match = _caller_filter(value("caller"), value("match"), full_numbers, form, refuse)
    recording: bool | None = None
    raw = value("recording")
    if raw is not None:
        if raw.lower() in _YES:
            recording, form["recording"] = True, "1"
        elif raw.lower() in _NO:
            recording, form["recording"] = False, "0"
        else:
            refuse("recording", "1 (with a recording) or 0 (without)", "须为 1（有录音）或 0（无录音）")

    key = value("sort") or "started"
    if key not in SORTS:
        refuse("sort", f"one of {', '.join(SORTS)}", "排序方式无效")
        key = "started"
    direction = value("dir")
    if direction is not None and direction not in ("asc", "desc"):
        refuse("dir", "asc or desc", "须为 asc 或 desc")
        direction = None
    descending = direction == "desc" if direction else key == "started"
    order = Order(key, descending)

    size = PAGE_SIZE
    if limit:
        raw = value("limit")
        if raw is not None:
            if _INT_RE.fullmatch(raw) and 1 <= int(raw) <= 200:
                size = int(raw)
            else:
                refuse("limit", "a whole number from 1 to 200", "须为 1 到 200 的整数")

    cursors: dict[str, str | None] = {"after": value("after"), "before": value("before")}
    if cursors["after"] and cursors["before"]:
        refuse("after", "give after or before, not both", "after 与 before 只能二选一")
        cursors = {"after": None, "before": None}
    for name, cursor in cursors.items():
        if cursor is None:
            continue
        try:
            decode_cursor(cursor, order)
        except BadCursor:
            refuse(name, "not a cursor of this list and order; the first page is shown",
                   "翻页位置无效，已显示第一页")
            cursors[name] = None

    filters = CallFilters(start=start, end=end, team=team, outcome=outcome, hospital_id=hospital,
                          caller=caller, caller_prefix=match == "prefix",
                          caller_last4=match == "last4", surgeon_id=surgeon,
                          has_recording=recording)
    return CallQuery(filters, order, cursors["after"], cursors["before"], size, form, problems)


def _caller_filter(caller: str | None, match: str | None, full_numbers: bool,
                   form: dict[str, str], refuse: Callable[[str, str, str], None]
                   ) -> tuple[str | None, str]:
    """The caller filter's digits and match (prefix / exact / last4), checked.

    A role that sees numbers masked (139****5678) must not learn the hidden
    digits by searching: a prefix search answers "is there a call from 1391...?"
    digit by digit, so it may search by the whole number (exact; its default)
    or by the last four digits it already sees (last4, numbers of 8 digits or
    more, whose last four are what the mask shows), never by a prefix.
    """
    default = "prefix" if full_numbers else "exact"
    if caller is not None:
        digits = caller.replace(" ", "").replace("-", "")
        if DIGITS_RE.fullmatch(digits):
            form["caller"] = digits
            caller = digits
        else:
            refuse("caller", "digits only (at most 20)", "只能填写数字（最多 20 位）")
            caller = None
    match = match or default
    if match not in MATCHES:
        refuse("match", "prefix, exact or last4", "须为 prefix、exact 或 last4")
        match = default
    if caller is None:
        return None, match
    if match == "prefix" and not full_numbers:
        refuse("caller", "your role sees numbers masked: search by the whole number (exact) "
               "or by its last four digits (last4), not by a prefix",
               "您的角色只能看到隐去中间数字的号码：请按完整号码（exact）或后四位（last4）搜索，不能按前缀搜索")
        form.pop("caller", None)
        return None, match
    if match == "last4" and len(caller) != 4:
        refuse("caller", "last4 takes exactly four digits", "按后四位搜索须填写 4 位数字")
        form.pop("caller", None)
        return None, match
    if match != default:
        form["match"] = match
    return caller, match


def count_number_search(query: CallQuery, full_numbers: bool, who: str) -> None:
    """Count a search by number for a role that sees numbers masked; over
    NUMBER_SEARCH_LIMIT an hour (per account `who`) it is refused with 429.

    The whole-number search is what is left of the oracle: it answers "is there
    a call from exactly this number?", so the hidden digits could be guessed."""
    if full_numbers or query.filters.caller is None or not limiter.enabled:
        return
    if not limiter.limiter.hit(parse_limit(NUMBER_SEARCH_LIMIT), "number-search", who):
        abort(429)


def viewer_surgeon(user: User) -> int | None:
    """The surgeon whose cases alone `user` may see, or None: every case.

    A surgeon account without a surgeon (none can be made) sees nothing: 0 is no surgeon.
    """
    if user.role.sees_all_cases:
        return None
    return user.surgeon_id or 0


# --------------------------------------------------------------------------- words and cells


def local(at: datetime | None, seconds: bool = True) -> str:
    if at is None:
        return ""
    return at.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def outcome_word(outcome: str) -> str:
    return t(f"calls.outcome.{outcome}") if outcome in OUTCOMES else outcome


def class_word(caller_class: str) -> str:
    return t(f"calls.class.{caller_class}") if caller_class in CLASSES else caller_class


def team_word(code: str | None, name_zh: str | None, name_en: str | None) -> str:
    if code is None:
        return ""
    name = name_en if current_lang() == "en" else name_zh
    return name or code


def duration(seconds: float | None) -> str:
    """'1:05' for 65 seconds; '' for none."""
    if seconds is None:
        return ""
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def safe_cell(value: Any) -> Any:
    """A spreadsheet cell that is never run as a formula: a leading apostrophe if it could be."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --------------------------------------------------------------------------- the page


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


@bp.get("/")
@signed_in()
def index():
    from console import services

    hub = services()
    user = current_user()
    query = parse_query(request.args, hub.clock(), full_numbers=user.role.sees_full_numbers)
    count_number_search(query, user.role.sees_full_numbers, user.actor)
    only = viewer_surgeon(user)
    page = list_calls(hub.engine, query.filters, query.order, limit=query.limit,
                      after=query.after, before=query.before, only_surgeon=only)
    total = count_calls(hub.engine, query.filters, only_surgeon=only, cap=COUNT_CAP)
    choices = filter_choices(hub.engine)

    def sort_link(key: str) -> str:
        if query.order.key == key:
            direction = "asc" if query.order.descending else "desc"
        else:
            direction = "desc" if key == "started" else "asc"
        args = query.link_args(after=None, before=None)
        args.update(sort=key, dir=direction)
        return url_for("calls.index", **args)

    def page_link(**cursor: str | None) -> str:
        return url_for("calls.index", **query.link_args(**cursor))

    return render_template(
        "calls.html", query=query, form=query.form, page=page, total=total, choices=choices,
        outcomes=OUTCOMES, sort_link=sort_link, page_link=page_link, local=local,
        outcome_word=outcome_word, class_word=class_word, team_word=team_word, duration=duration,
        only_yours=only is not None, export_cap=EXPORT_CAP,
        export_args=query.link_args(after=None, before=None),
    )


# --------------------------------------------------------------------------- exports


def _export_query() -> tuple[CallQuery, int | None]:
    from console import services

    user = current_user()
    query = parse_query(request.args, services().clock(), full_numbers=user.role.sees_full_numbers)
    if query.problems:
        abort(400)
    count_number_search(query, user.role.sees_full_numbers, user.actor)  # an export never silently contains more than was asked for
    return query, viewer_surgeon(current_user())


def _headers() -> list[str]:
    return [t("calls.case_id"), t("calls.start"), t("calls.caller"), t("calls.class"),
            t("calls.hospital"), t("calls.team"), t("calls.outcome"), t("calls.connected_surgeon"),
            f"{t('calls.time_to_connect')} ({t('calls.seconds')})",
            f"{t('calls.recording')} ({t('calls.seconds')})"]


@dataclass(frozen=True)
class _Words:
    """The words an export needs, looked up while the request is there (a stream outlives it)."""

    outcomes: dict[str, str]
    classes: dict[str, str]
    english: bool
    full_numbers: bool  # else callers' numbers are masked (UserRole.sees_full_numbers)


def _words() -> _Words:
    user = current_user()
    return _Words({o: outcome_word(o) for o in OUTCOMES}, {c: class_word(c) for c in CLASSES},
                  current_lang() == "en", user is not None and user.role.sees_full_numbers)


def _cells(row: CallRow, words: _Words) -> list[Any]:
    """One export line; the start is a local naive datetime (the spreadsheet's clock)."""
    team = (row.team_name_en if words.english else row.team_name_zh) or row.team or ""
    ttc = row.time_to_connect_s
    return [
        row.case_id,
        row.started_at.astimezone(LOCAL).replace(tzinfo=None, microsecond=0),
        row.caller_raw_safe if words.full_numbers else mask_number(row.caller_raw_safe),
        words.classes.get(row.caller_class, row.caller_class),
        row.hospital_name or "",
        team,
        words.outcomes.get(row.outcome, row.outcome),
        row.connected_surgeon_name or "",
        round(ttc, 1) if ttc is not None else None,
        row.recording_s if row.has_recording else None,
    ]


def _filename(query: CallQuery, suffix: str) -> str:
    return f"calls-{query.form['from']}-{query.form['to']}.{suffix}".replace(":", "")


def _audit_export(kind: str, query: CallQuery, only: int | None) -> Count:
    from console import services

    total = count_calls(services().engine, query.filters, only_surgeon=only, cap=EXPORT_CAP)
    # Recorded before a byte is served: if this fails, nothing is exported.
    audit("export_calls", "calls", kind, filters=query.filters.as_dict(),
          sort=query.order.key, descending=query.order.descending, rows=total.n,
          capped=total.more, only_surgeon=only)
    return total


def _csv_lines(headers: list[str], rows: Iterable[CallRow], words: _Words) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    for n, row in enumerate(rows, 1):
        cells = _cells(row, words)
        cells[1] = cells[1].strftime("%Y-%m-%d %H:%M:%S")
        writer.writerow(["" if c is None else safe_cell(c) for c in cells])
        if n % 500 == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


@bp.get("/export.csv")
@signed_in()
def export_csv():
    from console import services

    query, only = _export_query()
    total = _audit_export("csv", query, only)
    rows = iter_calls(services().engine, query.filters, query.order, only_surgeon=only,
                      cap=EXPORT_CAP)
    response = Response(_csv_lines(_headers(), rows, _words()), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{_filename(query, "csv")}"'
    response.headers["X-Export-Rows"] = str(total.n)
    if total.more:
        response.headers["X-Export-Capped"] = str(EXPORT_CAP)
    return response


@bp.get("/export.xlsx")
@signed_in()
def export_xlsx():
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, WriteOnlyCell

    from console import services

    query, only = _export_query()
    total = _audit_export("xlsx", query, only)
    words = _words()
    book = Workbook(write_only=True)
    sheet = book.create_sheet(t("calls"))
    sheet.append(_headers())
    for row in iter_calls(services().engine, query.filters, query.order, only_surgeon=only,
                          cap=EXPORT_CAP):
        line = []
        for value in _cells(row, words):
            if isinstance(value, str):
                # Text stays text: escaped like the CSV, never a formula, no control characters.
                cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", safe_cell(value)))
                cell.data_type = "s"
                line.append(cell)
            else:
                line.append(value)
        sheet.append(line)
    out = io.BytesIO()
    book.save(out)
    response = Response(out.getvalue(), mimetype=(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))
    response.headers["Content-Disposition"] = f'attachment; filename="{_filename(query, "xlsx")}"'
    response.headers["X-Export-Rows"] = str(total.n)
    if total.more:
        response.headers["X-Export-Capped"] = str(EXPORT_CAP)
    return response
