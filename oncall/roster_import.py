"""What every roster import (CSV, iCal) produces and how it names people. Pure.

An import never changes anything by itself: it turns a file into an
`ImportPlan` -- the one-off shifts it would write and the window of each team
it replaces -- or into problems, each tied to a line (CSV) or an event (iCal)
with a message in English and Chinese. Writing the plan is the store's job,
all or nothing; a plan with any `error` problem must not be written.

Names in a file are matched, never trusted: a surgeon by id, phone or exact
name (an ambiguous name is a problem, not a guess), a team by code or by its
Chinese or English name, a role by its code or its Chinese word.
"""
from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping

from oncall.model import Role, Roster, Shift, Surgeon, Team

UTC = timezone.utc

ROLE_WORDS: Mapping[str, Role] = {
    **{role.value: role for role in Role},
    "一线": Role.PRIMARY, "二线": Role.BACKUP, "主治": Role.ATTENDING, "科主任": Role.DEPARTMENT_HEAD,
    "备班": Role.BACKUP, "总值班": Role.DEPARTMENT_HEAD,
    "department head": Role.DEPARTMENT_HEAD, "head": Role.DEPARTMENT_HEAD,
}


class Severity(str, enum.Enum):
    ERROR = "error"  # the file is refused
    WARNING = "warning"  # written, but somebody should look


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import, where it is (line 1 is the header; 0: the whole file)."""

    line: int
    message: str
    message_zh: str
    column: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        if self.column:
            where += f", {self.column}"
        return f"{where}: {self.message} / {self.message_zh}"


@dataclass(frozen=True)
class ImportPlan:
    """The shifts a file would write and what it replaces.

    `replace` maps a team code to the window [start, end) (UTC) whose one-off
    shifts of that team -- those *starting* in it -- the import replaces;
    `shifts` all start inside their team's window (the night of the month's
    last day ends in the next month and still belongs to this one). `lines` gives each shift's source line (for reports).
    """

    shifts: tuple[Shift, ...] = ()
    replace: Mapping[str, tuple[datetime, datetime]] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    lines: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(p.severity is Severity.ERROR for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    def report(self) -> list[str]:
        """One line per problem, in file order, for people (CLI, API, console)."""
        return [str(p) for p in sorted(self.problems, key=lambda p: (p.line, p.column))]


def fold(text: str) -> str:
    # NFKC folds full-width digits and letters (common in Chinese sheets) to ASCII.
    return unicodedata.normalize("NFKC", text).strip().casefold()


class Directory:
    """Finds a roster's surgeons, teams and roles by the words a file uses."""

    def __init__(self, roster: Roster):
        self.roster = roster
        self._teams: dict[str, Team] = {}
        for team in roster.teams.values():
            for word in (team.code, team.name_zh, team.name_en):
                self._teams.setdefault(fold(word), team)
        self._by_name: dict[str, list[Surgeon]] = {}
        self._by_phone: dict[str, Surgeon] = {}
        for surgeon in roster.surgeons.values():
            self._by_name.setdefault(fold(surgeon.name), []).append(surgeon)
            self._by_phone[surgeon.phone] = surgeon

    def team(self, word: str) -> Team | None:
        return self._teams.get(fold(word))

    @staticmethod
    def role(word: str) -> Role | None:
        return ROLE_WORDS.get(fold(word))

    def surgeon(self, word: str) -> tuple[Surgeon | None, str]:
        """(surgeon, "") or (None, why) -- why is "unknown" or "ambiguous"."""
        key = fold(word)
        if not key:
            return None, "unknown"
        named = self._by_name.get(key, [])
        if len(named) == 1:
            return named[0], ""
        if len(named) > 1:
            return None, "ambiguous"
        digits = key.removeprefix("#")
        if digits.isdigit():
            if digits in self._by_phone:
                return self._by_phone[digits], ""
            found = self.roster.surgeons.get(int(digits)) if len(digits) <= 9 else None
            if found is not None:
                return found, ""
        return None, "unknown"


def overlap_problems(shifts: Iterable[Shift], lines: Iterable[int]) -> list[Problem]:
    """Lines that contradict each other: one role of one team held twice at once,
    or one surgeon on call in two teams at once."""
    items = sorted(zip(shifts, lines), key=lambda it: (it[0].start.astimezone(UTC), it[1]))
    problems: list[Problem] = []
    open_: list[tuple[Shift, int]] = []
    for shift, line in items:
        start = shift.start.astimezone(UTC)
        open_ = [(s, n) for s, n in open_ if s.end.astimezone(UTC) > start]
        for other, other_line in open_:
            if other.team == shift.team and other.role == shift.role:
                problems.append(Problem(
                    line, f"overlaps line {other_line}: {shift.team} {shift.role.value} held twice at once",
                    f"与第 {other_line} 行时间重叠：同一专业组同一岗位同时有两人", "time"))
            elif other.surgeon_id == shift.surgeon_id and other.team != shift.team:
                problems.append(Problem(
                    line, f"the surgeon is also on call for {other.team} on line {other_line}",
                    f"该医生在第 {other_line} 行同时在另一专业组（{other.team}）值班", "surgeon"))
        open_.append((shift, line))
    return problems
