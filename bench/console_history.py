"""Benchmark: the console on a large case history (issue 8 item 4; issue 5 speed). Not a test.

    .venv/bin/python bench/console_history.py \
        --db-url postgresql://postgres@127.0.0.1:5432/hotline_bench --cases 1000000 [--fresh] [--drop]
    .venv/bin/python bench/console_history.py --quick     # 100,000 cases, a SQLite file in /tmp

Loads `--cases` realistic cases with `bench/history_gen.py` into the database
(created if missing on PostgreSQL; `--fresh` drops and reloads it; a database
that already holds cases is reused as it is), then times, after two warm-up
runs, `--repeats` times each:

- the figures for a year (`db.figures.load_figures`: everything the figures
  page, its export and the API show), all teams and one team; on PostgreSQL
  also with the queries run one after another instead of side by side;
- the call list's first page with each single filter (`db.calls_query`:
  `list_calls`, one page, plus `count_calls` up to its `COUNT_CAP` -- what the
  Calls page runs), over the same year, if that module exists.

Prints the machine, the versions and one table (median, p95 and spread in
ms) against the goals: figures for a year under 300 ms, the call list with
any one filter under 100 ms at the 95th percentile (both on PostgreSQL).
The history spans `--days` from `--first` (default five years from
2022-01-01: a year holds a fifth of the cases); the year timed is the last
whole year of it unless `--year` says otherwise.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import bench.history_gen as history_gen  # noqa: E402
from db.figures import LOCAL, load_figures  # noqa: E402
from db.models import CaseRow  # noqa: E402
from db.session import make_engine, migrate  # noqa: E402

FIGURES_GOAL_MS = 300
CALL_LIST_GOAL_MS = 100


# ----------------------------------------------------------------------------- the database


def _admin_engine(url: str) -> Engine:
    return make_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def prepare(url: str, *, fresh: bool) -> None:
    """Create the PostgreSQL database if missing (drop it first if `fresh`); SQLite: delete the file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if fresh and parsed.database and parsed.database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(parsed.database + suffix).unlink(missing_ok=True)
        return
    name = parsed.database
    if not name or not name.replace("_", "").isalnum():
        raise SystemExit("give the PostgreSQL database a plain name (letters, digits, _)")
    admin = _admin_engine(url)
    try:
        with admin.connect() as conn:
            if fresh:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def drop(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        prepare(url, fresh=True)
        return
    admin = _admin_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


# ----------------------------------------------------------------------------- timing


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[float], float | None, str]] = []

    def add(self, what: str, rows: str, samples: list[float], goal: float | None, statistic: str) -> None:
        self.rows.append((what, rows, samples, goal, statistic))
        print(f"  {what}: median {statistics.median(samples):.0f} ms, p95 {p95(samples):.0f} ms",
              file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| what | rows in range | median ms | p95 ms | min–max ms | goal | met |",
                 "|---|---|---|---|---|---|---|"]
        for what, rows, samples, goal, statistic in self.rows:
            value = p95(samples) if statistic == "p95" else statistics.median(samples)
            met = "—" if goal is None else ("yes" if value < goal else "**no**")
            goal_text = "—" if goal is None else f"{statistic} < {goal:.0f} ms"
            lines.append(f"| {what} | {rows} | {statistics.median(samples):.0f} | {p95(samples):.0f} | "
                         f"{min(samples):.0f}–{max(samples):.0f} | {goal_text} | {met} |")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the benchmark


def machine(engine: Engine) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            db_version = conn.execute(text("SHOW server_version")).scalar_one()
            db = f"PostgreSQL {db_version}"
        else:
            db = f"SQLite {conn.execute(text('SELECT sqlite_version()')).scalar_one()}"
    import sqlalchemy
    return (f"{os.cpu_count()} CPUs ({cpu}), load average {os.getloadavg()[0]:.1f} at start; "
            f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, {db}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", help="PostgreSQL or SQLite URL (default with --quick: a SQLite file in /tmp)")
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 cases, fewer repeats")
    parser.add_argument("--first", type=date.fromisoformat, default=date(2022, 1, 1))
    parser.add_argument("--days", type=int, default=1826, help="days of history (default five years)")
    parser.add_argument("--year", type=int, help="the year to time (default the last whole one)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--team", default="replant", help="the team of the one-team runs")
    parser.add_argument("--fresh", action="store_true", help="drop and reload the database first")
    parser.add_argument("--drop", action="store_true", help="drop the database (or file) at the end")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases = min(args.cases, 100_000)
        args.db_url = args.db_url or "sqlite:////tmp/hotline-bench-history.db"
    if not args.db_url:
        parser.error("--db-url is required (or --quick)")
    repeats = args.repeats or (7 if args.quick else 20)

    prepare(args.db_url, fresh=args.fresh)
    engine = make_engine(args.db_url, **({} if args.db_url.startswith("sqlite") else {"pool_size": 8}))
    try:
        migrate(engine)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(CaseRow)).scalar_one()
        if stored == 0:
            print(f"generating {args.cases:,} cases over {args.days} days from {args.first} ...",
                  file=sys.stderr, flush=True)
            made = history_gen.generate(engine, args.cases, args.first, args.days, progress=True)
            print(f"  generated in {made.seconds:.0f} s: {made.attempts:,} attempts, {made.notes:,} notes",
                  file=sys.stderr)
            stored = made.cases
        else:
            print(f"reusing the {stored:,} cases already in the database", file=sys.stderr)
        with engine.connect() as conn:
            first_at, last_at = conn.execute(select(func.min(CaseRow.started_at),
                                                    func.max(CaseRow.started_at))).one()
        last_day = last_at.astimezone(LOCAL).date() if isinstance(last_at, datetime) else \
            date.fromisoformat(str(last_at)[:10])
        year = args.year or (last_day.year if last_day.month == 12 and last_day.day == 31 else last_day.year - 1)
        start, end = date(year, 1, 1), date(year, 12, 31)

        about = machine(engine)
        pg = engine.dialect.name == "postgresql"
        figures = load_figures(engine, start, end)
        in_year = figures.tally.calls
        table = Table()
        print(f"timing {repeats} runs each ...", file=sys.stderr, flush=True)
        table.add(f"figures {year}, all teams", f"{in_year:,}",
                  timed(lambda: load_figures(engine, start, end), repeats), FIGURES_GOAL_MS if pg else None,
                  "median")
        team_calls = load_figures(engine, start, end, args.team).tally.calls
        table.add(f"figures {year}, team {args.team}", f"{team_calls:,}",
                  timed(lambda: load_figures(engine, start, end, args.team), repeats),
                  FIGURES_GOAL_MS if pg else None, "median")
        if pg:
            table.add(f"figures {year}, all teams, queries in sequence", f"{in_year:,}",
                      timed(lambda: load_figures(engine, start, end, parallel=False), repeats), None, "median")
        call_list_rows(engine, table, start, end, repeats, pg)
    finally:
        engine.dispose()
    if args.drop:
        drop(args.db_url)

    print(f"\n{stored:,} cases ({args.days} days from {args.first}); {about}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end; {repeats} timed runs each after 2 warm-up runs\n")
    print(table.markdown())
    return 0


def call_list_rows(engine: Engine, table: Table, start: date, end: date, repeats: int, pg: bool) -> None:
    if importlib.util.find_spec("db.calls_query") is None:
        print("db/calls_query.py is not there: the call list is not timed", file=sys.stderr)
        return
    from db import calls_query as cq
    from db.figures import local_bounds

    lo, hi = local_bounds(start, end)
    with engine.connect() as conn:
        c = CaseRow.__table__.c
        in_range = (c.started_at >= lo) & (c.started_at < hi)
        hospital = conn.execute(select(c.partner_hospital_id).where(in_range, c.partner_hospital_id.is_not(None))
                                .group_by(c.partner_hospital_id).order_by(func.count().asc()).limit(1)).scalar()
        caller = conn.execute(select(c.caller_number).where(in_range, c.caller_class == "public")
                              .limit(1)).scalar()
        surgeon = conn.execute(select(c.connected_surgeon_id).where(in_range, c.connected_surgeon_id.is_not(None))
                               .limit(1)).scalar()
    filters = [
        ("no filter", {}),
        ("team", {"team": "facial"}),
        ("outcome", {"outcome": "abandoned"}),
        ("partner hospital (the least calling)", {"hospital_id": hospital}),
        ("caller number", {"caller": caller}),
        ("caller number prefix", {"caller": (caller or "139")[:4], "caller_prefix": True}),
        ("surgeon (rung or connected)", {"surgeon_id": surgeon}),
        ("has recording", {"has_recording": True}),
        ("has no recording", {"has_recording": False}),
    ]
    for name, extra in filters:
        query = cq.CallFilters(lo, hi, **extra)

        def page(query=query) -> None:
            cq.list_calls(engine, query, cq.Order(), limit=cq.PAGE_SIZE)
            cq.count_calls(engine, query, cap=cq.COUNT_CAP)

        found = cq.count_calls(engine, query, cap=cq.COUNT_CAP)
        rows = f"{found.n:,}{'+' if found.more else ''}"
        table.add(f"call list page + count: {name}", rows, timed(page, repeats),
                  CALL_LIST_GOAL_MS if pg else None, "p95")


if __name__ == "__main__":
    raise SystemExit(main())
