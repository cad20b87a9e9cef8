"""The network's figures from the case tables: a few GROUP BY queries, in one place.

    figures = load_figures(engine, date(2026, 1, 1), date(2026, 12, 31), team=None)

The figures page, its CSV export, the JSON API and `bench/console_history.py`
all call `load_figures`; what each figure counts is written in
`cases.figures`. Every query reads the cases of the range through the
`started_at` index (or `team, started_at` with a team) and aggregates in the
database; Python only adds up a few thousand aggregate rows.

The queries (independent of each other):

1. counts by local day x team x outcome -- calls, partner-hospital calls and,
   through a LEFT JOIN to the notes (grouped by case, so each case counts
   once), the consultations, referrals and transfers that notes record;
2. time to reach a surgeon and escalation depth, overall, by team and by
   surgeon (one pass, GROUPING SETS on PostgreSQL);
3. calls by partner hospital, and the names of teams and surgeons.

PostgreSQL computes the percentiles with `percentile_cont` and runs the
queries side by side on pooled connections, one core each (`PG_WORKERS`;
`work_mem` raised so the sorts stay in memory, no JIT -- its compile time
costs more than it saves here -- and a statement timeout). SQLite runs them
one after another on one connection and ranks the delays with window
functions; only the two rows around each percentile come back, and
`cases.figures.percentile_from_ranks` interpolates them with the same float
arithmetic as PostgreSQL, so both databases give identical numbers. Delays
are exact to the microsecond on both: PostgreSQL's `date_part('epoch',
interval)` is the interval's microseconds / 1e6, and SQLite's is computed in
integer microseconds from the stored text.

Notes are read from one day before the range on (`NOTE_SLACK`): a note is
written after its call started, so this keeps the join to the range's notes
(an index-only scan of `case_notes (at, case_id, disposition)`, migration
0006) rather than the whole history's.

Local days: Asia/Shanghai has kept UTC+8 without daylight saving since 1991,
so a case's local day is its UTC time + 8 h on both databases
(`date_bin` on PostgreSQL, which is cheaper than `AT TIME ZONE`).
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    Table,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import ARRAY

from cases.figures import (
    DEPTH_BUCKETS,
    PERCENTILES,
    DayFigures,
    Figures,
    HospitalFigures,
    Reach,
    SurgeonFigures,
    Tally,
    TeamFigures,
    check_range,
    percentile_from_ranks,
    percentile_ranks,
)
from db.models import CaseNoteRow, CaseRow, PartnerHospitalRow, SurgeonRow, TeamRow
from oncall.model import HOTLINE_TZ

CASES: Table = CaseRow.__table__  # type: ignore[assignment]
NOTES: Table = CaseNoteRow.__table__  # type: ignore[assignment]
HOSPITALS: Table = PartnerHospitalRow.__table__  # type: ignore[assignment]
UTC = timezone.utc
LOCAL = ZoneInfo(HOTLINE_TZ)
REFERRAL_TEAM = "referral"  # ivr.calls.REFERRAL_TEAM: the partner hospitals' line
CONSULTATION, REFERRAL_ACCEPTED, TRANSFER_ARRANGED = "consultation", "referral_accepted", "transfer_arranged"
# A note is written after its call started; a day of slack for clocks that disagree.
NOTE_SLACK = timedelta(days=1)
PG_SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off",
               "SET LOCAL statement_timeout = '60s'")
# The queries run side by side, one core each: PostgreSQL's own parallel
# workers would only compete with them (and ship rows between processes).
PG_PARALLEL_SETTINGS = ("SET LOCAL max_parallel_workers_per_gather = 0",)
PG_WORKERS = max(2, min(4, os.cpu_count() or 2))  # one query per core, at most four


def _fixed_offset_hours() -> int:
    offsets = {datetime(year, month, 1, tzinfo=LOCAL).utcoffset() for year in (2000, 2026, 2099)
               for month in (1, 7)}
    if len(offsets) != 1:
        raise RuntimeError(f"{HOTLINE_TZ} is not a fixed offset: local days need AT TIME ZONE")
    (offset,) = offsets
    assert offset is not None and offset.total_seconds() % 3600 == 0
    return int(offset.total_seconds() // 3600)


OFFSET_HOURS = _fixed_offset_hours()


def local_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end + 1 day 00:00) local, as UTC instants."""
    lo = datetime.combine(start, datetime.min.time(), LOCAL).astimezone(UTC)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), LOCAL).astimezone(UTC)
    return lo, hi


def load_figures(engine: Engine, start: date, end: date, team: str | None = None, *,
                 parallel: bool | None = None) -> Figures:
    """The figures of the cases started on local days [start, end], of one team or all.

    `parallel` (default: on PostgreSQL) runs the queries on several pooled
    connections at once. Raises `cases.figures.RangeError` for a bad range.
    """
    check_range(start, end)
    lo, hi = local_bounds(start, end)
    pg = engine.dialect.name == "postgresql"
    scope = and_(CASES.c.started_at >= lo, CASES.c.started_at < hi)
    if team is not None:
        scope = and_(scope, CASES.c.team == team)
    # Longest first: with PG_WORKERS threads the short ones fill in behind.
    jobs: list[Callable[[Connection], Any]] = [
        lambda conn: _reach(conn, scope),
        lambda conn: _counts(conn, scope, lo),
        lambda conn: (_hospitals(conn, scope), _names(conn)),
    ]
    reach, counts, (hospitals, names) = _run(engine, jobs, parallel=pg if parallel is None else parallel)
    return _assemble(start, end, team, counts, reach, hospitals, names)


# ----------------------------------------------------------------------------- running


def _tune(conn: Connection, parallel: bool = False) -> None:
    if conn.dialect.name == "postgresql":
        for statement in PG_SETTINGS + (PG_PARALLEL_SETTINGS if parallel else ()):
            conn.execute(text(statement))


def _one(engine: Engine, job: Callable[[Connection], Any]) -> Any:
    with engine.connect() as conn:
        _tune(conn, parallel=True)
        return job(conn)


def _run(engine: Engine, jobs: Sequence[Callable[[Connection], Any]], *, parallel: bool) -> list[Any]:
    if not parallel:
        with engine.connect() as conn:
            _tune(conn)
            return [job(conn) for job in jobs]
    with ThreadPoolExecutor(max_workers=min(PG_WORKERS, len(jobs)),
                            thread_name_prefix="figures") as pool:
        futures = [pool.submit(_one, engine, job) for job in jobs]
        return [future.result() for future in futures]


# ----------------------------------------------------------------------------- the queries


def _local_day(conn: Connection):
    # Literals, not bound parameters: the same expression text in SELECT and GROUP BY.
    if conn.dialect.name == "postgresql":
        origin = literal_column(f"TIMESTAMPTZ '2000-01-01 00:00:00+{OFFSET_HOURS:02d}'")
        return func.date_bin(literal_column("INTERVAL '1 day'"), CASES.c.started_at, origin)
    return func.date(CASES.c.started_at, literal_column(f"'+{OFFSET_HOURS} hours'"))


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(LOCAL).date()
    return date.fromisoformat(value)


def _counts(conn: Connection, scope, lo: datetime) -> list[tuple]:
    """Per local day x team x outcome: calls, partner-hospital calls, and -- from the
    cases' notes, each case once -- consultations beyond the answered calls,
    referrals beyond the referral line's answered calls, and transfers."""

    def marked(disposition: str):
        return func.max(case((NOTES.c.disposition == disposition, 1), else_=0))

    notes = (
        select(NOTES.c.case_id, marked(CONSULTATION).label("consultation"),
               marked(REFERRAL_ACCEPTED).label("referral"), marked(TRANSFER_ARRANGED).label("transfer"))
        .where(NOTES.c.at >= lo - NOTE_SLACK,
               NOTES.c.disposition.in_((CONSULTATION, REFERRAL_ACCEPTED, TRANSFER_ARRANGED)))
        .group_by(NOTES.c.case_id)
        .subquery("n")
    )
    day = _local_day(conn)
    answered = CASES.c.outcome == "connected"
    referral_line = and_(func.coalesce(CASES.c.team, "") == REFERRAL_TEAM, answered)
    query = (
        select(day, CASES.c.team, CASES.c.outcome, func.count(),
               func.count().filter(CASES.c.partner_hospital_id.is_not(None)),
               func.count().filter(and_(notes.c.consultation == 1, ~answered)),
               func.count().filter(and_(notes.c.referral == 1, ~referral_line)),
               func.count().filter(notes.c.transfer == 1))
        .select_from(CASES.outerjoin(notes, notes.c.case_id == CASES.c.case_id))
        .where(scope)
        .group_by(day, CASES.c.team, CASES.c.outcome)
    )
    return [(_as_day(d), *rest) for d, *rest in conn.execute(query)]


def _answered(scope):
    return and_(scope, CASES.c.outcome == "connected", CASES.c.connected_at.is_not(None),
                CASES.c.connected_seq.is_not(None))


def _depth_columns() -> list:
    seq = CASES.c.connected_seq
    return ([func.count(), func.coalesce(func.sum(seq), 0)]
            + [func.count().filter(seq == k) for k in range(1, DEPTH_BUCKETS)]
            + [func.count().filter(seq >= DEPTH_BUCKETS)])


ReachRows = dict[tuple[str, Any], Reach]  # (level, key) -> Reach; level "all", "team", "surgeon"


def _reach(conn: Connection, scope) -> ReachRows:
    """Time to reach a surgeon and escalation depth: overall, by team and by surgeon."""
    if conn.dialect.name == "postgresql":
        return _reach_pg(conn, scope)
    return _reach_sqlite(conn, scope)


def _reach_pg(conn: Connection, scope) -> ReachRows:
    # One pass over the answered cases; grouping() tells the three levels apart
    # (bit 2: not by team, bit 1: not by surgeon).
    delay = func.date_part(literal_column("'epoch'"), CASES.c.connected_at - CASES.c.started_at)
    percentiles = func.percentile_cont(postgresql.array(list(PERCENTILES))).within_group(delay)
    team, surgeon = CASES.c.team, CASES.c.connected_surgeon_id
    query = (select(func.grouping(team, surgeon), team, surgeon, *_depth_columns(),
                    cast(percentiles, ARRAY(Float)))
             .where(_answered(scope))
             .group_by(func.grouping_sets(tuple_(team), tuple_(surgeon), tuple_())))
    found: ReachRows = {}
    for level, team_code, surgeon_id, n, depth_sum, *rest in conn.execute(query):
        key = {1: ("team", team_code), 2: ("surgeon", surgeon_id), 3: ("all", None)}[level]
        depth, values = tuple(rest[:DEPTH_BUCKETS]), rest[DEPTH_BUCKETS] or (None, None)
        found[key] = Reach(answered=n, median_s=values[0], p90_s=values[1], depth_sum=depth_sum,
                           depth=depth)
    return found


def _delay_us_sqlite():
    """connected_at - started_at in integer microseconds, from SQLite's stored text
    ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC): exact, unlike julianday()."""
    def seconds(column):
        return cast(func.strftime(literal_column("'%s'"), column), Integer)

    def micros(column):
        return cast(func.substr(column, 21, 6), Integer)

    return ((seconds(CASES.c.connected_at) - seconds(CASES.c.started_at)) * 1_000_000
            + micros(CASES.c.connected_at) - micros(CASES.c.started_at))


def _reach_sqlite(conn: Connection, scope) -> ReachRows:
    keys = [("all", None), ("team", CASES.c.team), ("surgeon", CASES.c.connected_surgeon_id)]
    found: ReachRows = {}
    for name, column in keys:
        group = [column] if column is not None else []
        key_column = column if column is not None else literal_column("NULL")
        depth = {row[0]: row[1:] for row in conn.execute(
            select(key_column, *_depth_columns()).where(_answered(scope)).group_by(*group))}
        ranked = _ranked_delays(conn, scope, column)
        for key, (n, depth_sum, *buckets) in depth.items():
            values = ranked.get(key, {})
            median, p90 = (percentile_from_ranks(n, p, values) for p in PERCENTILES)
            found[(name, key)] = Reach(answered=n, median_s=median, p90_s=p90, depth_sum=depth_sum,
                                       depth=tuple(buckets))
    return found


def _ranked_delays(conn: Connection, scope, column) -> dict[Any, dict[int, float]]:
    """Per group, the delays (s) at the ranks each percentile reads -- nothing else."""
    key = (column if column is not None else literal_column("0")).label("k")
    delays = select(key, _delay_us_sqlite().label("v")).where(_answered(scope)).subquery()
    partition = {"partition_by": delays.c.k} if column is not None else {}
    ranked = select(
        delays.c.k, delays.c.v,
        (func.row_number().over(order_by=delays.c.v, **partition) - 1).label("i"),
        func.count().over(**partition).label("n"),
    ).subquery()
    wanted = []
    for p in PERCENTILES:
        first = cast(p * (ranked.c.n - 1), Integer)  # floor: the value is never negative
        wanted += [ranked.c.i == first, ranked.c.i == first + 1]
    found: dict[Any, dict[int, float]] = defaultdict(dict)
    for k, v, i, n in conn.execute(select(ranked.c.k, ranked.c.v, ranked.c.i, ranked.c.n)
                                   .where(or_(*wanted))):
        if any(i in percentile_ranks(n, p) for p in PERCENTILES):
            found[k if column is not None else None][i] = v / 1_000_000
    return found


def _hospitals(conn: Connection, scope) -> list[tuple[int, str, int]]:
    calls = (select(CASES.c.partner_hospital_id.label("hospital"), func.count().label("calls"))
             .where(scope, CASES.c.partner_hospital_id.is_not(None))
             .group_by(CASES.c.partner_hospital_id).subquery())
    query = (select(calls.c.hospital, HOSPITALS.c.name, calls.c.calls)
             .select_from(calls.outerjoin(HOSPITALS, HOSPITALS.c.id == calls.c.hospital)))
    return [(h, name or f"#{h}", n) for h, name, n in conn.execute(query)]


def _names(conn: Connection) -> tuple[dict[str, tuple[str, str]], dict[int, str]]:
    teams = {code: (zh, en) for code, zh, en in conn.execute(
        select(TeamRow.code, TeamRow.name_zh, TeamRow.name_en))}
    surgeons = {sid: name for sid, name in conn.execute(select(SurgeonRow.id, SurgeonRow.name))}
    return teams, surgeons


# ----------------------------------------------------------------------------- assembling


_OUTCOME_FIELD = {"connected": "connected", "nurse": "nurse", "voicemail": "voicemail",
                  "abandoned": "abandoned", "fallback": "fallback", "in-progress": "in_progress"}


def _assemble(start: date, end: date, team: str | None, counts, reach: ReachRows, hospitals,
              names) -> Figures:
    team_names, surgeon_names = names
    per_team: dict[str | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_day: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, team_code, outcome, n, partner, consultations, referrals, transfers in counts:
        tally = per_team[team_code]
        tally["calls"] += n
        tally["partner_calls"] += partner
        tally["consultations"] += consultations  # the answered calls are added below
        tally["referrals"] += referrals
        tally["transfers"] += transfers
        field = _OUTCOME_FIELD.get(outcome)
        if field is not None:
            tally[field] += n
        if team_code == REFERRAL_TEAM and outcome == "connected":
            tally["referrals"] += n
        daily = per_day[day]
        daily["calls"] += n
        if outcome in ("connected", "abandoned", "voicemail"):
            daily[outcome] += n
    for tally in per_team.values():
        tally["consultations"] += tally["connected"]
    total: dict[str, int] = defaultdict(int)
    for tally in per_team.values():
        for key, value in tally.items():
            total[key] += value

    teams = tuple(
        TeamFigures(code, Tally(**per_team[code]), reach.get(("team", code), Reach()))
        for code in sorted(per_team, key=lambda c: (c is None, -per_team[c]["calls"], c or "")))
    surgeons = tuple(sorted(
        (SurgeonFigures(key, surgeon_names.get(key, f"#{key}"), found)
         for (level, key), found in reach.items() if level == "surgeon" and key is not None),
        key=lambda s: (-s.reach.answered, s.surgeon_id)))
    days = []
    day = start
    while day <= end:
        daily = per_day.get(day, {})
        days.append(DayFigures(day, daily.get("calls", 0), daily.get("connected", 0),
                               daily.get("abandoned", 0), daily.get("voicemail", 0)))
        day += timedelta(days=1)
    hospital_rows = tuple(sorted((HospitalFigures(h, name, n) for h, name, n in hospitals),
                                 key=lambda h: (-h.calls, h.hospital_id)))
    return Figures(
        start=start, end=end, team=team, tally=Tally(**total),
        reach=reach.get(("all", None), Reach()),
        partner_hospitals=len(hospital_rows), days=tuple(days), teams=teams, surgeons=surgeons,
        hospitals=hospital_rows, team_names=team_names)

