"""The network's figures as values: what they count, percentiles, date ranges, the summary.

Pure: no database, no clock. `db.figures` fills these types from SQL
aggregates; the console's page, CSV export and JSON API show them.

What each figure counts (a case is one call, counted on its local start day
in Asia/Shanghai):

- calls: every case started in the range; answered: `connected` (a surgeon
  pressed 1); answer rate = answered / calls;
- abandoned: the caller hung up before anyone accepted (also at the menu);
  voicemail, duty nurse, fallback and in-progress are counted apart;
- real-time consultations (实时会诊): answered cases, and any other case a
  surgeon marked "consultation";
- referrals (转诊): referral-line calls a surgeon took (team `referral`,
  answered), and any case marked "referral accepted" -- an unanswered call to
  the referral line is a request, not a referral;
- transfers (转运): cases marked "transfer arranged";
- partner hospitals: distinct hospitals among the callers;
- time to reach a surgeon: connected_at - started_at of answered cases, its
  median and 90th percentile by linear interpolation (PostgreSQL's
  `percentile_cont`, reproduced exactly by `percentile_from_ranks`);
- escalation depth: the position of the accepting attempt (1 = the first
  phone rung), its mean and its distribution 1, 2, 3, 4, 5+.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

PERCENTILES = (0.5, 0.9)
DEPTH_BUCKETS = 5  # 1, 2, 3, 4 and "5 or more"
OUTCOMES = ("connected", "nurse", "voicemail", "abandoned", "fallback", "in-progress")
PRESETS = ("today", "7d", "30d", "year")
DEFAULT_PRESET = "30d"
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)
MAX_DAYS = 3660  # ten years: the longest range one request may ask for
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class RangeError(ValueError):
    """A date range that cannot be shown (bad date, reversed, too long)."""


# ----------------------------------------------------------------------------- percentiles


def percentile_ranks(n: int, p: float) -> tuple[int, int]:
    """The two 0-based ranks `percentile_cont(p)` reads among `n` sorted values."""
    position = p * (n - 1)
    return math.floor(position), math.ceil(position)


def percentile_from_ranks(n: int, p: float, value_at: Mapping[int, float]) -> float | None:
    """`percentile_cont(p)` of n sorted values, given the values at its two ranks.

    The same float arithmetic as PostgreSQL (`lo + (hi - lo) * fraction`), so
    a percentile computed from SQLite's ranked rows equals PostgreSQL's.

    >>> percentile_from_ranks(4, 0.5, {1: 20.0, 2: 30.0})
    25.0
    """
    if n <= 0:
        return None
    first, second = percentile_ranks(n, p)
    low = value_at[first]
    if second == first:
        return low
    fraction = p * (n - 1) - first
    return low + (value_at[second] - low) * fraction


def percentile_cont(values: Sequence[float], p: float) -> float | None:
    """The reference: linear-interpolated percentile of `values` (any order).

    >>> percentile_cont([40, 10, 30, 20], 0.9)
    37.0
    """
    ordered = sorted(values)
    if not ordered:
        return None
    first, second = percentile_ranks(len(ordered), p)
    return percentile_from_ranks(len(ordered), p, {first: ordered[first], second: ordered[second]})


# ----------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Tally:
    """Counts of cases (see the module docstring for what each counts)."""

    calls: int = 0
    connected: int = 0
    nurse: int = 0
    voicemail: int = 0
    abandoned: int = 0
    fallback: int = 0
    in_progress: int = 0
    consultations: int = 0
    referrals: int = 0
    transfers: int = 0
    partner_calls: int = 0

    @property
    def answer_rate(self) -> float | None:
        return self.connected / self.calls if self.calls else None


@dataclass(frozen=True)
class Reach:
    """How fast and how deep answered calls reached a surgeon."""

    answered: int = 0
    median_s: float | None = None
    p90_s: float | None = None
    depth_sum: int = 0
    depth: tuple[int, ...] = (0,) * DEPTH_BUCKETS  # attempts 1, 2, 3, 4, 5+

    @property
    def mean_depth(self) -> float | None:
        return self.depth_sum / self.answered if self.answered else None


@dataclass(frozen=True)
class TeamFigures:
    team: str | None  # None: the caller never reached a team (hung up at the menu)
    tally: Tally
    reach: Reach


@dataclass(frozen=True)
class SurgeonFigures:
    surgeon_id: int
    name: str
    reach: Reach


@dataclass(frozen=True)
class DayFigures:
    day: date
    calls: int = 0
    connected: int = 0
    abandoned: int = 0
    voicemail: int = 0


@dataclass(frozen=True)
class HospitalFigures:
    hospital_id: int
    name: str
    calls: int


@dataclass(frozen=True)
class Figures:
    """Everything the figures page shows for [start, end] (local dates, inclusive)."""

    start: date
    end: date
    team: str | None
    tally: Tally
    reach: Reach
    partner_hospitals: int
    days: tuple[DayFigures, ...] = ()
    teams: tuple[TeamFigures, ...] = ()
    surgeons: tuple[SurgeonFigures, ...] = ()
    hospitals: tuple[HospitalFigures, ...] = ()  # every partner hospital that called, most calls first
    team_names: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # code -> (zh, en)

    def summary(self, lang: str) -> str:
        return summary(self.start, self.end, self.tally.calls, self.tally.consultations,
                       self.tally.referrals, self.partner_hospitals, lang)


def depth_buckets(by_seq: Mapping[int, int]) -> tuple[int, ...]:
    """Counts by accepting attempt (1-based) folded into 1, 2, 3, 4, 5+."""
    buckets = [0] * DEPTH_BUCKETS
    for seq, count in by_seq.items():
        buckets[min(max(seq, 1), DEPTH_BUCKETS) - 1] += count
    return tuple(buckets)


# ----------------------------------------------------------------------------- ranges


def preset_range(preset: str, today: date) -> tuple[date, date]:
    """today; the last 7 or 30 days (today included); this year up to today."""
    if preset == "today":
        return today, today
    if preset == "7d":
        return today - timedelta(days=6), today
    if preset == "30d":
        return today - timedelta(days=29), today
    if preset == "year":
        return date(today.year, 1, 1), today
    raise RangeError(f"unknown preset {preset[:16]!r}")


def check_range(start: date, end: date) -> tuple[date, date]:
    if not (EARLIEST <= start <= LATEST and EARLIEST <= end <= LATEST):
        raise RangeError(f"dates must lie between {EARLIEST} and {LATEST}")
    if end < start:
        raise RangeError("the range ends before it starts")
    if (end - start).days + 1 > MAX_DAYS:
        raise RangeError(f"a range is at most {MAX_DAYS} days")
    return start, end


def parse_day(text: str) -> date:
    """An ISO date, strictly YYYY-MM-DD (no week dates, no times)."""
    if not isinstance(text, str) or not _DAY.fullmatch(text):
        raise RangeError("a date is YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RangeError("a date is YYYY-MM-DD") from None


# ----------------------------------------------------------------------------- the summary


def _zh_date(day: date, with_year: bool = True) -> str:
    return (f"{day.year}年" if with_year else "") + f"{day.month}月{day.day}日"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def _en_date(day: date, with_year: bool = True) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]}" + (f" {day.year}" if with_year else "")


def _en_count(n: int, singular: str, plural: str) -> str:
    return f"{n:,} {singular if n == 1 else plural}"


def summary(start: date, end: date, calls: int, consultations: int, referrals: int,
            hospitals: int, lang: str) -> str:
    """The sentence the network can publish for a range, in Chinese or English.

    >>> summary(date(2026, 1, 1), date(2026, 12, 31), 1234, 1000, 87, 42, "zh")
    '2026年1月1日至12月31日：热线共接听 1234 例，实时会诊 1000 例，转诊 87 例，来自 42 家合作医院'
    >>> summary(date(2026, 1, 1), date(2026, 12, 31), 1234, 1000, 1, 42, "en")
    'From 1 January to 31 December 2026: 1,234 calls, 1,000 real-time consultations, 1 referral, from 42 partner hospitals'
    """
    same_year = start.year == end.year
    if lang == "en":
        if start == end:
            when = f"On {_en_date(start)}"
        else:
            when = f"From {_en_date(start, with_year=not same_year)} to {_en_date(end)}"
        return (f"{when}: {_en_count(calls, 'call', 'calls')}, "
                f"{_en_count(consultations, 'real-time consultation', 'real-time consultations')}, "
                f"{_en_count(referrals, 'referral', 'referrals')}, from "
                f"{_en_count(hospitals, 'partner hospital', 'partner hospitals')}")
    if start == end:
        when = _zh_date(start)
    else:
        when = f"{_zh_date(start)}至{_zh_date(end, with_year=not same_year)}"
    return (f"{when}：热线共接听 {calls} 例，实时会诊 {consultations} 例，转诊 {referrals} 例，"
            f"来自 {hospitals} 家合作医院")
