"""The roster as iCalendar feeds (export) and iCalendar files as an `ImportPlan` (import). Pure.

Export: `team_calendar` and `surgeon_calendar` render what is really in force
(`shifts_between`: rotations, one-off shifts, overrides and leave applied) as
a feed a phone calendar subscribes to. One event per stretch a surgeon holds
one role of one team: adjacent or overlapping pieces of the same surgeon, role
and team are merged, so a single-member rotation is one long event, not one
per day. Times are UTC (the form every client accepts); the event UID hashes
team, role, surgeon id and start, so a refreshed feed updates events instead
of duplicating them. The X-HOTLINE-TEAM / -ROLE / -SURGEON properties carry
the codes, so our own feed imports back exactly.

Import: `parse_roster_ical` reads our own feed by those X- properties and a
foreign calendar (a department's shared Outlook calendar) by its words: each
VEVENT is one shift; see the function for the rules. It never trusts the file:
names are matched through `Directory`, values echoed in problems are escaped
and cut short, and the work a file can cause is capped (size, occurrences).

Surprises, on purpose:
- A `Problem.line` of an iCal import is the 1-based index of the VEVENT in the
  file (every VEVENT counts, cancelled ones too), not a text line; its column
  names the event's UID. `overlap_problems` words its messages for CSV lines
  ("overlaps line 3"): for iCal, read "line" as "event".
- A recurring timed event keeps the wall clock of both ends in every
  occurrence (as Outlook and Google show it), not RFC 5545's "same exact
  duration": an 08:00 -> 08:00 shift stays a handoff at 08:00 across a
  daylight-saving change.
- A DURATION's whole days are nominal days (wall clock), its hours exact; the
  parser cannot tell P1D from PT24H, so PT24H reads as P1D.
- icalendar keeps a process-wide cache of the VTIMEZONEs it has seen, keyed by
  TZID, and the first definition wins; a file could thus change how a later
  file's TZID=China Standard Time reads. The import therefore resolves every
  TZID itself from the wall time: an IANA name by tzdata, else this file's own
  VTIMEZONE, else the Windows name's IANA zone.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import MAXYEAR, date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterable, NamedTuple, Sequence
from zoneinfo import ZoneInfo

from dateutil.rrule import rruleset, rrulestr
from icalendar import Calendar, Event, vDuration, vRecur, vText

from oncall.model import HOTLINE_TZ, Role, Roster, Shift, Surgeon, Team
from oncall.roster_import import (
    ROLE_WORDS,
    Directory,
    ImportPlan,
    Problem,
    Severity,
    fold,
    overlap_problems,
)
from oncall.rotation import EffectiveShift, local_instant, shifts_between, team_zone

try:  # where icalendar keeps it; a move in a later version only loses Windows names
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
except ImportError:  # pragma: no cover
    WINDOWS_TO_OLSON = {}

UTC = timezone.utc

PRODID = "-//96608 hotline//on-call roster//{lang}"
UID_DOMAIN = "96608.hotline"
FEED_TTL = timedelta(hours=1)  # how often a subscribed phone should fetch the feed again
ALL_DAY_HANDOFF = time(8, 0)  # an all-day event runs handoff to handoff, as the rosters do

X_TEAM = "X-HOTLINE-TEAM"  # team code
X_ROLE = "X-HOTLINE-ROLE"  # Role value
X_SURGEON = "X-HOTLINE-SURGEON"  # surgeon id
X_FEED = "X-HOTLINE-FEED"  # calendar level: "team" or "surgeon"

MAX_BYTES = 2 * 1024 * 1024
MAX_OCCURRENCES = 5_000  # of one recurring event inside the window
MAX_SCANNED = 100_000  # occurrences of one series walked through, inside the window or not
MAX_SERIES = 500  # recurring events per file (each may cost dateutil a scan of centuries)
MAX_LEAD = timedelta(days=36_525)  # a series may start at most 100 years before the window
_RECUR_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")  # a shift does not recur hourly

LANGS = ("zh", "en")
_ROLE_ZH = {Role.PRIMARY: "一线", Role.BACKUP: "二线", Role.ATTENDING: "主治",
            Role.DEPARTMENT_HEAD: "科主任"}
_ROLE_EN = {Role.PRIMARY: "primary", Role.BACKUP: "backup", Role.ATTENDING: "attending",
            Role.DEPARTMENT_HEAD: "department head"}


# --------------------------------------------------------------------------- text


_BREAKING = frozenset({"Cc", "Zl", "Zp"})  # control characters and Unicode line breaks
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _clean(text: object) -> str:
    """DB text made fit for a calendar: control characters and line breaks become spaces.

    icalendar escapes newline, comma, semicolon and backslash in TEXT values, but
    lets other control characters (vertical tab, NEL, U+2028 ...) through, and
    some readers split lines on those.
    """
    return "".join(" " if unicodedata.category(ch) in _BREAKING else ch for ch in str(text)).strip()


def _echo(text: object, limit: int = 40) -> str:
    """A value from a file, fit to quote in a problem: invisible characters escaped, cut short.

    >>> _echo("王建国\\nX-EVIL:1")
    '王建国\\\\u000aX-EVIL:1'
    """
    text = str(text)
    cut = len(text) > limit
    shown = "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in _HIDDEN else ch
                    for ch in text[:limit])
    return shown + ("…" if cut else "")


# --------------------------------------------------------------------------- export


def merge_pieces(pieces: Iterable[EffectiveShift | Shift]) -> list[Shift]:
    """One shift per stretch a surgeon holds one role of one team: touching or
    overlapping pieces of the same (team, role, surgeon) are joined.

    Sorted by start, then team, role ring order and surgeon id; times are UTC.
    """
    runs: dict[tuple[str, Role, int], list[list[datetime]]] = {}
    for piece in sorted(pieces, key=lambda p: p.start.astimezone(UTC)):
        spans = runs.setdefault((piece.team, piece.role, piece.surgeon_id), [])
        start, end = piece.start.astimezone(UTC), piece.end.astimezone(UTC)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    merged = [Shift(team, sid, role, start, end)
              for (team, role, sid), spans in runs.items() for start, end in spans]
    merged.sort(key=lambda s: (s.start, s.team, s.role.ring_order, s.surgeon_id))
    return merged


def shift_uid(shift: Shift) -> str:
    """The event UID of a shift: the same for the same team, role, surgeon and start.

    The start is the (UTC) instant, so the zone a shift was written in does not
    matter. A feed whose window cuts a shift gives the cut piece another UID; a
    feed with a moving window should start it at a fixed boundary.
    """
    key = "|".join((shift.team, shift.role.value, str(shift.surgeon_id),
                    shift.start.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + "@" + UID_DOMAIN


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, not {lang!r}")


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return at.astimezone(UTC)


def _calendar(name: str, zone: str, feed: str, lang: str) -> Calendar:
    cal = Calendar()
    cal.add("PRODID", PRODID.format(lang=lang.upper()))
    cal.add("VERSION", "2.0")
    cal.add("CALSCALE", "GREGORIAN")
    cal.add("METHOD", "PUBLISH")
    # X- properties are not TEXT to icalendar (it writes them unescaped): wrap in vText.
    cal.add("NAME", vText(name))  # RFC 7986; X-WR-CALNAME for the clients that predate it
    cal.add("X-WR-CALNAME", vText(name))
    cal.add("X-WR-TIMEZONE", vText(zone))
    # RFC 7986 requires the VALUE parameter here; icalendar's refresh_interval omits it.
    cal.add("REFRESH-INTERVAL", FEED_TTL, parameters={"VALUE": "DURATION"})
    cal.add("X-PUBLISHED-TTL", vDuration(FEED_TTL))  # Outlook and older Apple clients
    cal.add(X_FEED, vText(feed))
    return cal


def _event(team: Team, surgeon: Surgeon, shift: Shift, now: datetime, lang: str) -> Event:
    name = _clean(surgeon.name)
    if lang == "zh":
        team_name, role_word = _clean(team.name_zh), _ROLE_ZH[shift.role]
        summary = f"{team_name} {role_word}值班 · {name}"
        description = f"专业组：{team_name}\n岗位：{role_word}\n医生：{name}\n急诊创伤整形修复热线 96608"
    else:
        team_name, role_word = _clean(team.name_en), _ROLE_EN[shift.role]
        summary = f"{team_name} {role_word} on call · {name}"
        description = (f"Team: {team_name}\nRole: {role_word}\nSurgeon: {name}\n"
                       "96608 emergency trauma & plastic-surgery hotline")
    event = Event()
    event.add("UID", shift_uid(shift))
    event.add("DTSTAMP", now)
    event.add("DTSTART", shift.start.astimezone(UTC))
    event.add("DTEND", shift.end.astimezone(UTC))
    event.add("SUMMARY", summary)
    event.add("DESCRIPTION", description)
    event.add("CATEGORIES", [role_word])
    event.add(X_TEAM, vText(_clean(team.code)))
    event.add(X_ROLE, vText(shift.role.value))
    event.add(X_SURGEON, vText(str(shift.surgeon_id)))
    return event


def team_calendar(roster: Roster, team_code: str, start: datetime, end: datetime, *,
                  now: datetime, lang: str = "zh") -> bytes:
    """The team's on-call over [start, end) as an iCalendar feed (UTF-8, CRLF, folded).

    One event per merged piece of `shifts_between`, cut to the window. `now` is
    the DTSTAMP; it changes no UID. Unknown team -> LookupError; naive times ->
    ValueError.
    """
    _check_lang(lang)
    now = _aware(now, "now")
    team = roster.teams.get(team_code)
    if team is None:
        raise LookupError(f"unknown team {team_code!r}")
    team_name = team.name_zh if lang == "zh" else team.name_en
    name = (f"96608 {_clean(team_name)} 值班表" if lang == "zh"
            else f"96608 {_clean(team_name)} on-call roster")
    cal = _calendar(name, team_zone(team).key, "team", lang)
    for shift in merge_pieces(shifts_between(roster, team_code, start, end)):
        cal.add_component(_event(team, roster.surgeons[shift.surgeon_id], shift, now, lang))
    return cal.to_ical()


def surgeon_calendar(roster: Roster, surgeon_id: int, start: datetime, end: datetime, *,
                     now: datetime, lang: str = "zh") -> bytes:
    """One surgeon's on-call over [start, end), in every team, as an iCalendar feed.

    X-WR-TIMEZONE is the zone of the surgeon's teams in the window when they
    share one, else the hotline's (Asia/Shanghai). Unknown surgeon -> LookupError.
    """
    _check_lang(lang)
    now = _aware(now, "now")
    surgeon = roster.surgeons.get(surgeon_id)
    if surgeon is None:
        raise LookupError(f"unknown surgeon {surgeon_id!r}")
    pieces = [piece for code in roster.teams
              for piece in shifts_between(roster, code, start, end) if piece.surgeon_id == surgeon_id]
    shifts = merge_pieces(pieces)
    zones = {team_zone(roster.teams[s.team]).key for s in shifts}
    zone = zones.pop() if len(zones) == 1 else HOTLINE_TZ
    name = (f"96608 {_clean(surgeon.name)} 值班表" if lang == "zh"
            else f"96608 on-call roster: {_clean(surgeon.name)}")
    cal = _calendar(name, zone, "surgeon", lang)
    for shift in shifts:
        cal.add_component(_event(roster.teams[shift.team], surgeon, shift, now, lang))
    return cal.to_ical()


# --------------------------------------------------------------------------- import


class _Bad(Exception):
    """One thing wrong with one event (flow control inside the reader)."""

    def __init__(self, message: str, message_zh: str):
        super().__init__(message)
        self.message, self.message_zh = message, message_zh


class _When(NamedTuple):
    """A DATE or DATE-TIME as written: a date, or a naive wall time in `zone`."""

    value: date | datetime
    zone: tzinfo | None  # None for a date
    tzid: str  # "" for UTC, floating and dates

    @property
    def is_date(self) -> bool:
        return not isinstance(self.value, datetime)


def _localize(wall: datetime, zone: tzinfo) -> datetime:
    # fold=0 is RFC 5545 3.3.5: a time shown twice is its first showing, a time
    # the clock skips is read with the offset before the gap.
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _attr(prop: object, name: str) -> object | None:
    """`prop.name`, or None -- also for a value icalendar could not parse (vBroken raises)."""
    try:
        return getattr(prop, name, None)
    except Exception:
        return None


def _iana(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except Exception:  # not found, not a valid key, a directory, ...: not an IANA name
        return None


def _file_error(message: str, message_zh: str) -> ImportPlan:
    return ImportPlan(problems=(Problem(0, message, message_zh),))


def _read_calendars(data: bytes) -> list[Calendar] | ImportPlan:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_roster_ical reads bytes")
    data = bytes(data)
    if len(data) > MAX_BYTES:
        return _file_error(f"the file is larger than {MAX_BYTES // 1024 // 1024} MB",
                           f"文件超过 {MAX_BYTES // 1024 // 1024} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _file_error("the file is not UTF-8 text", "文件不是 UTF-8 文本")
    try:
        calendars = Calendar.from_ical(text, multiple=True)
    except Exception as exc:  # icalendar raises ValueError mostly, but not only
        return _file_error(f"not an iCalendar file ({_echo(exc, 80)})",
                           f"不是 iCalendar 日历文件（{_echo(exc, 80)}）")
    if not calendars or any(c.name != "VCALENDAR" for c in calendars):
        return _file_error("not an iCalendar file (no VCALENDAR)", "不是 iCalendar 日历文件（缺少 VCALENDAR）")
    return calendars


def parse_roster_ical(data: bytes, roster: Roster, *, team: str | None = None,
                      role: Role | None = None,
                      window: tuple[datetime, datetime] | None = None) -> ImportPlan:
    """An iCalendar file as the one-off shifts it would write; nothing is written.

    Each VEVENT is one shift (or, recurring, one per occurrence):
    - team: X-HOTLINE-TEAM, else `team` (code or name); role: X-HOTLINE-ROLE,
      else `role`, else the one role word in SUMMARY (一线, 二线, backup, ...),
      else primary. An X- value that contradicts the argument is an error.
    - surgeon: X-HOTLINE-SURGEON (id), else the one ATTENDEE whose CN names a
      surgeon, else the one surgeon whose name or phone is in SUMMARY.
    - DTSTART/DTEND with TZID, in UTC, or floating (= the team's zone); DURATION
      instead of DTEND. An all-day event (VALUE=DATE) runs from the team's 08:00
      handoff on its first day to 08:00 after its last day.
    - RRULE / RDATE / EXDATE are expanded within `window` (required for RRULE);
      a modified occurrence (RECURRENCE-ID) replaces the one it names.
    - STATUS:CANCELLED events are skipped.

    `Problem.line` is the 1-based index of the VEVENT in the file and the column
    holds its UID; 0 is the whole file. Shifts are cut to `window` when given.
    `replace` covers, per team, `window` if given (the `team` argument's too,
    even with no event: an empty file then clears the window), else the span of
    that team's shifts. Clashes come from `overlap_problems`.
    """
    if window is not None:
        lo, hi = _aware(window[0], "window"), _aware(window[1], "window")
        if not lo < hi:
            raise ValueError("the window must end after it starts")
        window = (lo, hi)
    if role is not None:
        role = Role(role)
    directory = Directory(roster)
    team_arg: Team | None = None
    if team is not None:
        team_arg = directory.team(team)
        if team_arg is None:
            return ImportPlan(problems=(Problem(
                0, f"unknown team {_echo(team)}", f"未知专业组 {_echo(team)}", "team"),))
    calendars = _read_calendars(data)
    if isinstance(calendars, ImportPlan):
        return calendars
    reader = _Reader(roster, directory, team_arg, role, window, calendars)
    return reader.plan()


@dataclass
class _Found:
    shifts: list[Shift]
    problems: list[Problem]


class _Reader:
    """One import: the file's events, its time zones and the names to match against."""

    def __init__(self, roster: Roster, directory: Directory, team: Team | None,
                 role: Role | None, window: tuple[datetime, datetime] | None,
                 calendars: Sequence[Calendar]):
        self.roster = roster
        self.directory = directory
        self.team = team
        self.role = role
        self.window = window
        self.events: list[Event] = []
        self.vtimezones: dict[str, object] = {}
        self.surgeon_feed = False
        for cal in calendars:
            if str(cal.get(X_FEED, "")).strip().lower() == "surgeon":
                self.surgeon_feed = True
            for component in cal.subcomponents:  # top level only: no recursion on hostile nesting
                if component.name == "VEVENT":
                    self.events.append(component)
                elif component.name == "VTIMEZONE" and "TZID" in component:
                    self.vtimezones.setdefault(str(component["TZID"]), component)
        self._zones: dict[str, tzinfo | None] = {}
        self._names: re.Pattern | None = None
        self._series = 0
        # Modified occurrences, by the UID of their series: each hides the one it names.
        self.instances: dict[str, list[object]] = {}
        for event in self.events:
            uid, rid = event.get("UID"), event.get("RECURRENCE-ID")
            if uid is not None and rid is not None and not isinstance(rid, list):
                self.instances.setdefault(str(uid), []).append(rid)

    # ------------------------------------------------------------------ the plan

    def plan(self) -> ImportPlan:
        shifts: list[Shift] = []
        lines: list[int] = []
        problems: list[Problem] = []
        if self.surgeon_feed:
            problems.append(Problem(
                0, "this is one surgeon's calendar: importing it replaces every other surgeon's "
                   "one-off shifts of its teams in the same time",
                "这是单个医生的日历：导入会替换同一专业组同一时段其他医生的排班", "",
                Severity.WARNING))
        for line, event in enumerate(self.events, start=1):
            found = self.read(line, event)
            problems += found.problems
            shifts += found.shifts
            lines += [line] * len(found.shifts)
        problems += overlap_problems(shifts, lines)
        replace: dict[str, tuple[datetime, datetime]] = {}
        if self.window is not None:
            if self.team is not None:
                replace[self.team.code] = self.window
            for shift in shifts:
                replace[shift.team] = self.window
        else:
            for shift in shifts:
                lo, hi = replace.get(shift.team, (shift.start, shift.end))
                replace[shift.team] = (min(lo, shift.start), max(hi, shift.end))
        return ImportPlan(shifts=tuple(shifts), replace=replace, problems=tuple(problems),
                          lines=tuple(lines))

    def read(self, line: int, event: Event) -> _Found:
        uid = event.get("UID")
        column = f"UID {_echo(uid)}" if uid is not None and not isinstance(uid, list) else ""
        problems: list[Problem] = []

        def attempt(step, *args):
            try:
                return step(*args)
            except _Bad as why:
                problems.append(Problem(line, why.message, why.message_zh, column))
                return None

        status = event.get("STATUS")
        if not isinstance(status, (list, type(None))) and str(status).strip().upper() == "CANCELLED":
            return _Found([], [])
        summary = (attempt(self.text, event, "SUMMARY") or "")[:500]
        team = attempt(self.team_of, event)
        role = attempt(self.role_of, event, summary)
        surgeon = attempt(self.surgeon_of, event, summary)
        # Times are checked even when the team is unknown, in the hotline's zone.
        spans = attempt(self.spans, event, team_zone(team) if team else ZoneInfo(HOTLINE_TZ))
        if problems or team is None or role is None or surgeon is None or spans is None:
            return _Found([], problems)
        return _Found([Shift(team.code, surgeon.id, role, lo, hi) for lo, hi in spans], [])

    # ------------------------------------------------------------------ who

    @staticmethod
    def text(event: Event, name: str) -> str:
        value = event.get(name)
        if value is None:
            return ""
        if isinstance(value, list):
            _twice(name)
        return str(value)

    def team_of(self, event: Event) -> Team:
        word = self.text(event, X_TEAM).strip()
        if word:
            team = self.directory.team(word)
            if team is None:
                raise _Bad(f"unknown team {_echo(word)}", f"未知专业组 {_echo(word)}")
            if self.team is not None and team.code != self.team.code:
                raise _Bad(f"the event is of team {_echo(team.code)}, the import is for "
                           f"{_echo(self.team.code)}",
                           f"该事件属于专业组 {_echo(team.code)}，本次导入的是 {_echo(self.team.code)}")
            return team
        if self.team is None:
            raise _Bad("no team: the event has no X-HOTLINE-TEAM; import with a team",
                       "未指定专业组：事件没有 X-HOTLINE-TEAM，请在导入时选择专业组")
        return self.team

    def role_of(self, event: Event, summary: str) -> Role:
        word = self.text(event, X_ROLE).strip()
        if word:
            role = self.directory.role(word)
            if role is None:
                raise _Bad(f"unknown role {_echo(word)}", f"未知岗位 {_echo(word)}")
            if self.role is not None and role is not self.role:
                raise _Bad(f"the event is for role {role.value}, the import is for {self.role.value}",
                           f"该事件的岗位是 {_ROLE_ZH[role]}，本次导入的是 {_ROLE_ZH[self.role]}")
            return role
        if self.role is not None:
            return self.role
        roles = {ROLE_WORDS[m.group(0)] for m in _ROLE_PATTERN.finditer(fold(summary))}
        if len(roles) > 1:
            raise _Bad(f"the summary names several roles ({_echo(summary)}); import with a role",
                       f"标题含多个岗位（{_echo(summary)}），请在导入时选择岗位")
        return roles.pop() if roles else Role.PRIMARY

    def surgeon_of(self, event: Event, summary: str) -> Surgeon:
        word = self.text(event, X_SURGEON).strip()
        if word:
            found = (self.roster.surgeons.get(int(word))
                     if word.isascii() and word.isdigit() and len(word) <= 9 else None)
            if found is None:
                raise _Bad(f"unknown surgeon id {_echo(word)}", f"未知医生编号 {_echo(word)}")
            return found
        attendees = event.get("ATTENDEE", [])
        if not isinstance(attendees, list):
            attendees = [attendees]
        named: dict[int, Surgeon] = {}
        for attendee in attendees:
            cn = (_attr(attendee, "params") or {}).get("CN")
            if isinstance(cn, str) and cn.strip():
                surgeon, why = self.directory.surgeon(cn)
                if why == "ambiguous":
                    raise _Bad(f"more than one surgeon is called {_echo(cn)}",
                               f"有多位医生名为 {_echo(cn)}")
                if surgeon is not None:
                    named[surgeon.id] = surgeon
        if not named:
            named = self.named_in(summary)
        if len(named) > 1:
            who = ", ".join(_echo(s.name, 20) for s in named.values())
            raise _Bad(f"the event names several surgeons ({who})", f"事件中有多位医生（{who}）")
        if not named:
            raise _Bad(f"no known surgeon in the event ({_echo(summary)})",
                       f"事件中没有可识别的医生（{_echo(summary)}）")
        return named.popitem()[1]

    def named_in(self, summary: str) -> dict[int, Surgeon]:
        """The surgeons a SUMMARY names by exact name (longest match wins) or by phone."""
        text = fold(summary[:500])
        named: dict[int, Surgeon] = {}
        for match in self.name_pattern().finditer(text):
            surgeon, why = self.directory.surgeon(match.group(0))
            if why == "ambiguous":
                raise _Bad(f"more than one surgeon is called {_echo(match.group(0))}",
                           f"有多位医生名为 {_echo(match.group(0))}")
            if surgeon is not None:
                named[surgeon.id] = surgeon
        for digits in re.findall(r"(?<!\d)\d{5,20}(?!\d)", text, flags=re.ASCII):
            surgeon, _ = self.directory.surgeon(digits)
            if surgeon is not None and surgeon.phone == digits:  # not an id or a date
                named[surgeon.id] = surgeon
        return named

    def name_pattern(self) -> re.Pattern:
        if self._names is None:
            keys = {fold(s.name) for s in self.roster.surgeons.values()} - {""}
            self._names = _alternation(keys) if keys else re.compile(r"(?!)")
        return self._names

    # ------------------------------------------------------------------ when

    def zone(self, tzid: str) -> tzinfo:
        if tzid not in self._zones:
            zone = _iana(tzid) if len(tzid) <= 100 else None
            if zone is None and _plain_vtimezone(self.vtimezones.get(tzid)):
                try:  # a fresh zone, outside icalendar's process-wide cache
                    zone = self.vtimezones[tzid].to_tz(lookup_tzid=False)  # type: ignore[attr-defined]
                except Exception:
                    zone = None
            if zone is None and tzid.strip() in WINDOWS_TO_OLSON:
                zone = _iana(WINDOWS_TO_OLSON[tzid.strip()])
            if zone is None and tzid.startswith("/"):  # "globally unique": /vendor/Area/City
                parts = tzid.strip("/").split("/")
                for i in range(1, len(parts)):
                    zone = _iana("/".join(parts[i:]))
                    if zone is not None:
                        break
            self._zones[tzid] = zone
        zone = self._zones[tzid]
        if zone is None:
            raise _Bad(f"unknown time zone {_echo(tzid)}", f"未知时区 {_echo(tzid)}")
        return zone

    def when(self, prop: object, name: str, floating: tzinfo) -> _When:
        """A DATE / DATE-TIME property value; `floating` is the zone of a time without one."""
        value = _attr(prop, "dt")
        if isinstance(value, datetime):
            tzid = (_attr(prop, "params") or {}).get("TZID")
            wall = value.replace(tzinfo=None)
            if tzid:
                return _When(wall, self.zone(str(tzid)), str(tzid))
            if value.tzinfo is not None:  # written with Z
                return _When(_wall(value, UTC), UTC, "")
            return _When(wall, floating, "")
        if isinstance(value, date):
            return _When(value, None, "")
        raise _Bad(f"{name} is not a date or a date-time", f"{name} 不是日期或日期时间")

    def one(self, event: Event, name: str) -> object | None:
        prop = event.get(name)
        if isinstance(prop, list):
            _twice(name)
        return prop

    def values(self, event: Event, name: str, floating: tzinfo) -> list[_When]:
        """Every value of a list property (EXDATE, RDATE, RECURRENCE-ID of instances)."""
        props = event.get(name, [])
        if not isinstance(props, list):
            props = [props]
        found: list[_When] = []
        for prop in props:
            items = _attr(prop, "dts")
            if items is None:
                raise _Bad(f"{name} is unreadable", f"{name} 无法识别")
            for item in items:
                found.append(self.when(item, name, floating))
        return found

    def spans(self, event: Event, team_tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
        """[start, end) (UTC) of each occurrence of the event, cut to the window."""
        prop = self.one(event, "DTSTART")
        if prop is None:
            raise _Bad("the event has no DTSTART", "事件缺少开始时间（DTSTART）")
        start = self.when(prop, "DTSTART", team_tz)
        frame = start.zone or team_tz  # where occurrences repeat: the wall clock of DTSTART
        end_prop, duration_prop = self.one(event, "DTEND"), self.one(event, "DURATION")
        if end_prop is not None and duration_prop is not None:
            raise _Bad("the event has both DTEND and DURATION", "事件同时有 DTEND 和 DURATION")

        if start.is_date:
            if end_prop is not None:
                end = self.when(end_prop, "DTEND", team_tz)
                if not end.is_date:
                    raise _Bad("an all-day event must end on a date", "全天事件的结束也须是日期")
                days = (end.value - start.value).days
            elif duration_prop is not None:
                duration = _duration(duration_prop)
                if duration % timedelta(days=1):
                    raise _Bad("an all-day event lasts whole days", "全天事件须为整天")
                days = duration.days
            else:
                days = 1
            if days <= 0:
                raise _Bad("the event ends before it starts", "事件结束早于开始")

            def span(at: datetime) -> tuple[datetime, datetime]:
                day = at.date()
                return (local_instant(day, ALL_DAY_HANDOFF, team_tz),
                        local_instant(day + timedelta(days=days), ALL_DAY_HANDOFF, team_tz))

            first = datetime.combine(start.value, time(0))
            longest = timedelta(days=days)
        else:
            if end_prop is not None:
                end = self.when(end_prop, "DTEND", team_tz)
                if end.is_date:
                    raise _Bad("DTEND is a date but DTSTART a date-time", "DTEND 是日期而 DTSTART 是日期时间")
                if end.zone is start.zone or (end.tzid and end.tzid == start.tzid):
                    wall_delta = end.value - start.value  # same clock: keep both ends' wall time

                    def span(at: datetime) -> tuple[datetime, datetime]:
                        return _localize(at, frame), _localize(at + wall_delta, frame)
                    longest = wall_delta
                else:
                    exact = _localize(end.value, end.zone) - _localize(start.value, frame)  # type: ignore[arg-type]

                    def span(at: datetime) -> tuple[datetime, datetime]:
                        begin = _localize(at, frame)
                        return begin, begin + exact
                    longest = exact
            elif duration_prop is not None:
                duration = _duration(duration_prop)
                nominal, exact_part = timedelta(days=duration.days), duration - timedelta(days=duration.days)

                def span(at: datetime) -> tuple[datetime, datetime]:
                    return _localize(at, frame), _localize(at + nominal, frame) + exact_part
                longest = duration
            else:
                raise _Bad("the event has no DTEND or DURATION", "事件缺少结束时间（DTEND 或 DURATION）")
            first = start.value  # type: ignore[assignment]
            if longest <= timedelta(0):
                raise _Bad("the event ends before it starts", "事件结束早于开始")

        occurrences = self.occurrences(event, start, first, frame, team_tz, longest)
        out: list[tuple[datetime, datetime]] = []
        for at in occurrences:
            lo, hi = span(at)
            if self.window is not None:
                lo, hi = max(lo, self.window[0]), min(hi, self.window[1])
            if lo < hi:
                out.append((lo, hi))
            elif self.window is None:
                raise _Bad("the event ends before it starts", "事件结束早于开始")
        return out

    def occurrences(self, event: Event, start: _When, first: datetime, frame: tzinfo,
                    team_tz: ZoneInfo, longest: timedelta) -> list[datetime]:
        """The starts (naive, in `frame`'s wall clock; midnight for dates) of the event."""
        rules = event.get("RRULE", [])
        rules = rules if isinstance(rules, list) else [rules]
        if "EXRULE" in event:
            raise _Bad("EXRULE is not supported; use EXDATE", "不支持 EXRULE，请使用 EXDATE")
        rdates = self.values(event, "RDATE", frame) if "RDATE" in event else []
        if "RECURRENCE-ID" in event:
            rid = self.one(event, "RECURRENCE-ID")
            if str((_attr(rid, "params") or {}).get("RANGE", "")).upper() == "THISANDFUTURE":
                raise _Bad("RANGE=THISANDFUTURE is not supported", "不支持 RANGE=THISANDFUTURE")
        if not rules and not rdates:
            return [first]

        def frame_value(when: _When) -> datetime:
            if start.is_date:
                if not when.is_date:
                    raise _Bad("an all-day event recurs on dates", "全天事件的重复须为日期")
                return datetime.combine(when.value, time(0))
            if when.is_date:
                raise _Bad("a timed event recurs on date-times", "定时事件的重复须为日期时间")
            return _wall(_localize(when.value, when.zone), frame)  # type: ignore[arg-type]

        texts: list[tuple[str, datetime | None]] = []
        for rule in rules:
            texts.append(self.rule(rule, start, frame))
        if rules:
            if self.window is None:
                raise _Bad("a recurring event (RRULE) needs an import window",
                           "重复事件（RRULE）需要指定导入时间范围")
            self._series += 1
            if self._series > MAX_SERIES:
                raise _Bad(f"more than {MAX_SERIES} recurring events in the file",
                           f"文件中的重复事件超过 {MAX_SERIES} 个")
        # The part of the series that can touch the window, in the frame's wall clock.
        if self.window is not None:
            lo = _wall(self.window[0], frame) - longest - timedelta(days=2)
            hi = _wall(self.window[1], frame) + timedelta(days=1)
            if rules and lo - first > MAX_LEAD:
                raise _Bad("the recurring event starts more than 100 years before the window",
                           "重复事件的开始早于导入时间范围 100 年以上")
        else:
            lo, hi = datetime.min, datetime.max
        extra = sorted({frame_value(w) for w in rdates})

        hidden_dates: set[date] = set()
        hidden_instants: set[datetime] = set()
        uid = event.get("UID")
        moved = ([] if uid is None or "RECURRENCE-ID" in event or isinstance(uid, list)
                 else self.instances.get(str(uid), []))
        hidden = self.values(event, "EXDATE", frame) if "EXDATE" in event else []
        for rid in moved:
            hidden.append(self.when(rid, "RECURRENCE-ID", frame))
        for when in hidden:
            if when.is_date:
                hidden_dates.add(when.value)  # type: ignore[arg-type]
            elif start.is_date:
                hidden_dates.add(_localize(when.value, when.zone).astimezone(team_tz).date())  # type: ignore[arg-type]
            else:
                hidden_instants.add(_localize(when.value, when.zone))  # type: ignore[arg-type]

        found = [at for at in _expand(texts, first, extra, lo, hi)
                 if at.date() not in hidden_dates
                 and (start.is_date or _localize(at, frame) not in hidden_instants)]
        return found

    def rule(self, rule: object, start: _When, frame: tzinfo) -> tuple[str, datetime | None]:
        """An RRULE as dateutil text without UNTIL, and UNTIL in the frame's wall clock."""
        try:
            parts = {str(k).upper(): v if isinstance(v, list) else [v]
                     for k, v in dict(rule).items()}  # type: ignore[call-overload]
        except Exception:
            parts = {}
        freq = [str(f).upper() for f in parts.get("FREQ", [])]
        if not freq:
            raise _Bad("the RRULE is unreadable (no FREQ)", "RRULE 无法识别（缺少 FREQ）")
        if freq[0] not in _RECUR_FREQS:
            raise _Bad(f"RRULE FREQ={_echo(freq[0])} is not supported for shifts",
                       f"班次不支持 RRULE FREQ={_echo(freq[0])}")
        if "COUNT" in parts and "UNTIL" in parts:
            raise _Bad("the RRULE has both COUNT and UNTIL", "RRULE 同时有 COUNT 和 UNTIL")
        until_values = parts.pop("UNTIL", [])
        until: datetime | None = None
        if until_values:
            value = until_values[0]
            if isinstance(value, datetime):
                if value.tzinfo is not None:  # UTC, as RFC 5545 wants it with a zoned DTSTART
                    until = _wall(value, frame)
                else:
                    until = value
                if start.is_date:
                    until = datetime.combine(until.date(), time(0))
            elif isinstance(value, date):
                until = datetime.combine(value, time(0) if start.is_date else time(23, 59, 59))
            else:
                raise _Bad("the RRULE UNTIL is unreadable", "RRULE 的 UNTIL 无法识别")
        try:
            text = vRecur(parts).to_ical().decode("ascii")
            rrulestr(text, dtstart=datetime(2000, 1, 1))  # refuse what dateutil cannot read now
        except Exception as exc:
            raise _Bad(f"the RRULE is unreadable ({_echo(exc, 60)})",
                       f"RRULE 无法识别（{_echo(exc, 60)}）") from None
        return text, until


def _alternation(words: Iterable[str]) -> re.Pattern:
    """A pattern for any of `words`, longest first; a word with Latin letters at an edge
    matches only as a whole word ("li" not inside "lisa")."""
    parts = []
    for word in sorted(words, key=lambda w: (-len(w), w)):
        part = re.escape(word)
        if word[0].isascii() and word[0].isalnum():
            part = r"(?<![a-z0-9])" + part
        if word[-1].isascii() and word[-1].isalnum():
            part += r"(?![a-z0-9])"
        parts.append(part)
    return re.compile("|".join(parts))


_ROLE_PATTERN = _alternation(ROLE_WORDS)


def _plain_vtimezone(component: object) -> bool:
    """A VTIMEZONE safe to compute with: a few parts, each repeating at most yearly.

    dateutil walks a part's RRULE from its DTSTART (often 1601) at every offset
    lookup; a hostile FREQ=SECONDLY there would cost minutes per event.
    """
    parts = getattr(component, "subcomponents", None)
    if not parts or len(parts) > 100:
        return False
    for part in parts:
        rules = part.get("RRULE", [])
        for rule in rules if isinstance(rules, list) else [rules]:
            try:
                freq = [str(f).upper() for f in rule.get("FREQ", [])]
            except Exception:
                return False
            if freq != ["YEARLY"]:
                return False
    return True


def _twice(name: str) -> None:
    raise _Bad(f"{name} is given more than once", f"{name} 出现多次")


def _duration(prop: object) -> timedelta:
    value = _attr(prop, "dt")
    if not isinstance(value, timedelta):
        raise _Bad("DURATION is unreadable", "DURATION 无法识别")
    if value <= timedelta(0):
        raise _Bad("the event ends before it starts", "事件结束早于开始")
    return value


def _expand(rules: Sequence[tuple[str, datetime | None]], first: datetime,
            extra: Sequence[datetime], lo: datetime, hi: datetime) -> list[datetime]:
    """Occurrences of a series in [lo, hi] (naive wall times): DTSTART, RRULEs, RDATEs.

    dateutil walks a rule that never matches (BYMONTH=2;BYMONTHDAY=30) up to the
    year 9999, seconds of work. The Gregorian calendar repeats every 400 years
    (weekdays and leap days included), so the series is expanded 400*k years
    later, near 9999, and moved back: the same dates, far less to walk.
    """
    if not rules:
        return sorted({at for at in [first, *extra] if lo <= at <= hi})
    years = 400 * max(0, (MAXYEAR - 1 - hi.year) // 400)

    def later(at: datetime) -> datetime:
        return at.replace(year=at.year + years)

    series = rruleset()
    for text, until in rules:
        rule = rrulestr(text, dtstart=later(first))
        if until is not None and until <= hi:  # beyond hi it changes nothing
            rule = rule.replace(until=later(until))
        series.rrule(rule)
    series.rdate(later(first))  # DTSTART is always the first occurrence (RFC 5545 3.8.5.3)
    for at in extra:
        if at <= hi:  # later ones could not be moved 400*k years on
            series.rdate(later(at))
    begin, end = later(lo), later(hi)
    found: list[datetime] = []
    for scanned, at in enumerate(series, start=1):
        if at > end:
            break
        if scanned > MAX_SCANNED:
            raise _Bad(f"the recurring event has more than {MAX_SCANNED} occurrences up to the window",
                       f"重复事件在导入时间范围之前已超过 {MAX_SCANNED} 次")
        if at >= begin:
            found.append(at.replace(year=at.year - years))
            if len(found) > MAX_OCCURRENCES:
                raise _Bad(f"more than {MAX_OCCURRENCES} occurrences in the window; narrow it",
                           f"导入时间范围内超过 {MAX_OCCURRENCES} 次重复，请缩小范围")
    return found
